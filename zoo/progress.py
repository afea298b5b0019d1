"""What a command is doing, phase by phase, on the stderr console zoo passes around.

    with progress.reporting(console):  # a command's entry point: show the phases run inside
        ...
        with progress.phase("loading mini-facade"):  # a spinner and the time so far
            ...
        with progress.phase("val inference", total=91, unit="images") as advance:
            for images, targets in batches:
                ...
                advance(len(images))  # a bar: 48/91 images

On a terminal a phase is a transient rich progress line that disappears when the phase ends
(a phase inside another shows under it). Where stderr is not a terminal (a pipe, a file, CI, a
test runner), redrawn bars would only litter the log, so a phase prints one plain line when it
ends, with its count and time:

    val inference: 91 images, 3.2 s

A phase that fails prints nothing: the error says what happened. Outside `reporting` (a library
call, a test, a process that stays quiet) phases show nothing and cost nothing, so library code
marks its phases without taking a console; the command that calls it decides where they show.
Stdout is never touched: it is for the results.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

Advance = Callable[..., None]  # advance(count=1): that many more items done

REPORTING: ContextVar[Console | None] = ContextVar("zoo_progress_console", default=None)


@contextlib.contextmanager
def reporting(console: Console | None) -> Iterator[None]:
    """Show the phases that run inside on `console` (None: show none, e.g. on ranks other than
    0 of a multi-process run)."""
    token = REPORTING.set(console)
    try:
        yield
    finally:
        REPORTING.reset(token)


@contextlib.contextmanager
def phase(
    description: str, total: int | None = None, unit: str = "", *, log: bool = True
) -> Iterator[Advance]:
    """One phase of the work, shown while it runs; yields `advance(count=1)` to count its items
    (`total` of them when known, which draws a bar). `unit="bytes"` shows sizes and speed.
    `log=False` leaves out the plain line, for a phase whose caller prints its own (an epoch,
    a bench row)."""
    console = REPORTING.get()
    if console is None:
        yield ignore
    elif console.is_interactive:
        with Progress(
            *columns(total, unit), console=console, transient=True, redirect_stdout=False
        ) as bar:
            task = bar.add_task(description, total=total)
            yield lambda count=1: bar.advance(task, count)
    else:
        done, started = 0, time.perf_counter()

        def advance(count: int = 1) -> None:
            nonlocal done
            done += count

        yield advance
        if log:
            console.print(
                f"{description}: {counted(done, unit)}{time.perf_counter() - started:.1f} s",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )


def ignore(count: int = 1) -> None:
    """`advance` outside `reporting`: nothing to show."""


def columns(total: int | None, unit: str) -> tuple:
    """Spinner and description; a bar with the count when `total` is known; the time so far."""
    shown = [SpinnerColumn(), TextColumn("{task.description}")]
    if unit == "bytes":
        shown += [BarColumn(), DownloadColumn(), TransferSpeedColumn()]
    elif total is not None:
        shown += [BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
    return (*shown, TimeElapsedColumn())


def counted(done: int, unit: str) -> str:
    """The plain line's count: "91 images, ", "30.1 MB, ", or nothing without a unit."""
    if not unit:
        return ""
    if unit == "bytes":
        return f"{done / 1e6:,.1f} MB, "
    return f"{done:,} {unit}, "


def show_warnings(console: Console) -> None:
    """Show each ZooWarning as one `Warning: ...` line on `console`; other warnings keep
    Python's format."""
    import warnings

    from zoo.errors import ZooWarning

    python_format = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, ZooWarning):
            console.print(f"[yellow]Warning:[/yellow] {message}", highlight=False, soft_wrap=True)
        else:
            python_format(message, category, *args, **kwargs)

    warnings.showwarning = show
