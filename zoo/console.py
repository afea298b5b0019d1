"""How `zoo`'s commands print: results on stdout (`out`) as they are, so pipes and scripts get
them whole; phases, warnings and errors on stderr (`err`), each one line. A user's mistake (a
ZooError) is one sentence and exit status 1, never a traceback. Torch-free, like zoo/cli.py."""

from __future__ import annotations

import functools

import typer
from rich.console import Console

from zoo import tables
from zoo.errors import ZooError
from zoo.options import RowFormat

out = Console()
err = Console(stderr=True)


def say(text: str, console: Console = out) -> None:
    """One line as it is: no markup, no highlighting, no wrapping (paths stay whole)."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


say_err = functools.partial(say, console=err)


def warn(text: str) -> None:
    err.print(f"[yellow]Warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def print_rows(rows: list[dict], format: RowFormat, table) -> None:
    """`rows` as the rich table `table(rows)` builds, or as CSV/JSON for scripts."""
    if format is RowFormat.table:
        out.print(table(rows))
    else:
        out.print(tables.rows_text(rows, format.value), end="", highlight=False, markup=False,
                  soft_wrap=True)  # fmt: skip


def user_errors(command):
    """Print a ZooError as one sentence on stderr and exit 1, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ZooError as error:
            err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def report_errors(errors: list) -> None:
    """Each error as one line on stderr; exit 1 when there was any."""
    for error in errors:
        err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(1)
