"""Write every command's `zoo ... --help` into docs/commands.md (`make docs`).

docs/commands.md is written by hand around blocks that this script owns, one per command and
subcommand:

    <!-- zoo help sweep run -->
    ```text
    (what `COLUMNS=80 zoo sweep run --help` prints)
    ```
    <!-- /zoo help -->

`python docs/commands.py` rewrites each block from the installed zoo. `--check` writes nothing
and exits 1 when a block is stale, or when a command has no block (tests/test_docs.py runs the
same check, so the page cannot drift from the CLI).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

PAGE = Path(__file__).with_name("commands.md")
WIDTH = "80"
BLOCK = re.compile(r"<!-- zoo help(?P<command>[^>]*?) -->\n.*?<!-- /zoo help -->", re.DOTALL)

# Run in one fresh process with COLUMNS=80: the help of every command and subcommand, as `zoo`
# prints it (the console script calls the same `app` with prog_name "zoo"). One process instead
# of one per command: the import of zoo.cli is most of the time.
HELP_SCRIPT = """
import json, sys
import typer
from zoo.cli import app

def walk(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, [*path, name])

for path in walk(typer.main.get_command(app), []):
    sys.stdout.write("\\0" + json.dumps(path) + "\\n")
    sys.stdout.flush()
    try:
        app([*path, "--help"], prog_name="zoo")
    except SystemExit:
        pass
    sys.stdout.flush()
"""


def help_texts() -> dict[str, str]:
    """{"": `zoo --help`, "train": `zoo train --help`, "sweep run": ..., ...} at 80 columns."""
    environment = {**os.environ, "COLUMNS": WIDTH}
    done = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    texts = {}
    for part in done.stdout.split("\0")[1:]:
        path, text = part.split("\n", 1)
        texts[" ".join(json.loads(path))] = text
    return texts


def marker(command: str) -> str:
    return f"<!-- zoo help {command} -->" if command else "<!-- zoo help -->"


def block(command: str, text: str) -> str:
    return f"{marker(command)}\n```text\n{text.rstrip()}\n```\n<!-- /zoo help -->"


def refresh(page: str, texts: dict[str, str]) -> str:
    """`page` with every help block replaced by the current help of its command."""

    def replace(match: re.Match) -> str:
        command = match["command"].strip()
        if command not in texts:
            raise SystemExit(f"{PAGE}: `zoo {command}` is not a command (a block names it).")
        return block(command, texts[command])

    return BLOCK.sub(replace, page)


def missing(page: str, texts: dict[str, str]) -> list[str]:
    """The commands that have no help block on the page."""
    documented = {match["command"].strip() for match in BLOCK.finditer(page)}
    return [command for command in texts if command not in documented]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    texts = help_texts()
    page = PAGE.read_text()
    new = refresh(page, texts)
    for command in missing(page, texts):
        print(f"`zoo {command}` has no help block in {PAGE}: add {marker(command)}.")
    if check:
        if new != page:
            print(f"{PAGE} differs from `zoo --help`: run `make docs`.")
        return int(new != page or bool(missing(page, texts)))
    if new != page:
        PAGE.write_text(new)
        print(f"{PAGE}: updated")
    else:
        print(f"{PAGE}: up to date")
    return int(bool(missing(page, texts)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
