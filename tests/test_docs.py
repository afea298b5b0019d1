"""The README and docs/*.md say what zoo does: docs/commands.md holds every command's current
`--help` (`make docs`), the `$ zoo` examples print what the pages show, every option table lists
exactly the options of its command's `--help`, and every local link resolves."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ZOO = Path(sys.executable).with_name("zoo")
# A ```console block right under this comment is not run (say why in the comment), e.g. one
# that needs a trained run or takes minutes.
SKIP_MARKER = "<!-- doctest: skip"


def load_commands_script():
    spec = importlib.util.spec_from_file_location("docs_commands", ROOT / "docs" / "commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


commands = load_commands_script()


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    """{"train": `COLUMNS=80 zoo train --help`, "sweep run": ..., "": `zoo --help`}."""
    return commands.help_texts()


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def prose_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of the page outside fenced code blocks."""
    kept, fenced = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            kept.append((number, line))
    return kept


# ----------------------------------------------------------------------------- the help blocks


def test_commands_md_holds_every_commands_current_help(help_texts):
    page = commands.PAGE.read_text()
    missing = commands.missing(page, help_texts)
    assert not missing, f"docs/commands.md has no help block for: {', '.join(missing)}"
    fresh = commands.refresh(page, help_texts)
    diff = "".join(
        difflib.unified_diff(
            page.splitlines(keepends=True), fresh.splitlines(keepends=True), "committed", "--help"
        )
    )
    assert not diff, f"docs/commands.md differs from `zoo --help`: run `make docs`.\n{diff}"


def test_the_help_fits_80_columns(help_texts):
    for command, text in help_texts.items():
        for line in text.splitlines():
            assert len(line) <= 80, f"`zoo {command} --help` is wider than 80 columns: {line!r}"


# ----------------------------------------------------------------------------- console examples


@dataclass
class Example:
    page: Path
    line: int
    command: str  # without the "$ "
    expected: str

    def __str__(self) -> str:
        return f"{page_name(self.page)}:{self.line}"


def console_examples(page: Path) -> list[Example]:
    """The `$ zoo ...` commands of the page's ```console blocks, each with the lines under it."""
    lines = page.read_text().splitlines()
    examples, index = [], 0
    while index < len(lines):
        if lines[index].strip() != "```console":
            index += 1
            continue
        skipped = index > 0 and lines[index - 1].startswith(SKIP_MARKER)
        index += 1
        current = None
        while lines[index].strip() != "```":
            line = lines[index]
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    index += 1
                    command = command[:-1] + " " + lines[index].strip()
                current = Example(page, index + 1, command, "")
                if command.startswith("zoo ") and not skipped:
                    examples.append(current)
            elif current is not None:
                current.expected += line + "\n"
            index += 1
        index += 1
    return examples


EXAMPLES = [example for page in PAGES for example in console_examples(page)]


def normalise(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A folder holding the committed results/ and recipes/ (no figures, no weights), where the
    examples run, so runs of your own under results/ change no example's output."""
    folder = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "results", "recipes"], cwd=ROOT, capture_output=True, text=True
    )
    if listed.returncode == 0 and listed.stdout.strip():
        names = listed.stdout.split()
    else:  # not a git checkout: the folders as they are
        names = [
            str(path.relative_to(ROOT))
            for top in ("results", "recipes")
            for path in (ROOT / top).rglob("*")
            if path.is_file()
        ]
    for name in names:
        if name.endswith((".png", ".html", ".safetensors")):
            continue
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, folder / name)
    return folder


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_console_example_prints_what_the_page_shows(example, checkout, tmp_path):
    environment = {**os.environ, "COLUMNS": "80", "ZOO_CACHE": str(tmp_path / "cache")}
    environment.pop("FORCE_COLOR", None)
    done = subprocess.run(
        [str(ZOO), *shlex.split(example.command)[1:]],
        cwd=checkout,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=240,
    )
    shown, printed = normalise(example.expected), normalise(done.stdout)
    diff = "\n".join(
        difflib.unified_diff(shown.splitlines(), printed.splitlines(), "page", "zoo", lineterm="")
    )
    assert printed == shown, f"{example}: `{example.command}` prints something else:\n{diff}"


def test_the_pages_have_console_examples():
    """The parser finds the examples (a changed fence would make the test above vacuous)."""
    names = {page_name(example.page) for example in EXAMPLES}
    assert {"README.md", "docs/commands.md"} <= names


# ----------------------------------------------------------------------------- option tables

OPTION_TABLE = "| option | default | meaning |"


@dataclass
class OptionTable:
    page: Path
    line: int
    heading: str
    flags: list[str]  # the flags in its first column: --amp, --no-amp, --lr, ...


def option_tables(page: Path) -> list[OptionTable]:
    tables, heading = [], ""
    lines = prose_lines(page)
    for position, (number, line) in enumerate(lines):
        if line.startswith("#"):
            heading = line
        if line.strip() != OPTION_TABLE:
            continue
        flags = []
        for _, row in lines[position + 2 :]:
            if not row.startswith("|"):
                break
            flags += re.findall(r"--[a-z][a-z0-9-]*", row.split("|")[1])
        tables.append(OptionTable(page, number, heading, flags))
    return tables


TABLES = [table for page in PAGES for table in option_tables(page)]


def table_command(table: OptionTable, commands_known) -> str:
    """The command a table documents: the `zoo COMMAND` in its heading, longest match first."""
    spans = re.findall(r"`zoo ([^`]*)`", table.heading)
    for span in spans:
        words = span.split()
        for length in range(len(words), 0, -1):
            if " ".join(words[:length]) in commands_known:
                return " ".join(words[:length])
    raise AssertionError(
        f"{page_name(table.page)}:{table.line}: the option table's heading names no command "
        f"(`zoo COMMAND`): {table.heading!r}"
    )


def help_options(text: str) -> list[tuple[str, ...]]:
    """Each option of a --help text as its flags: ("--amp", "--no-amp"), ("--lr",), ..."""
    options = []
    for line in text.splitlines():
        match = re.match(r"^  (--[a-z][a-z0-9-]*)(?: / (--[a-z][a-z0-9-]*))?", line)
        if match and match[1] != "--help":
            options.append(tuple(flag for flag in match.groups() if flag))
    return options


@pytest.mark.parametrize("table", TABLES, ids=lambda table: f"{page_name(table.page)}:{table.line}")
def test_option_table_lists_the_options_of_its_command(table, help_texts):
    command = table_command(table, help_texts)
    options = help_options(help_texts[command])
    known = {flag for flags in options for flag in flags}
    where = f"{page_name(table.page)}:{table.line} (zoo {command})"
    unknown = [flag for flag in table.flags if flag not in known]
    assert not unknown, f"{where}: not options of `zoo {command} --help`: {unknown}"
    missing = [flags[0] for flags in options if not any(f in table.flags for f in flags)]
    assert not missing, f"{where}: options of `zoo {command} --help` not in the table: {missing}"


def test_the_option_tables_are_found():
    assert len(TABLES) >= 2, f"the `{OPTION_TABLE}` tables are gone"


# ----------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen, found = {}, set()
    for _, line in prose_lines(page):
        if re.match(r"#{1,6} ", line):
            base = anchor(line)
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def local_links(page: Path) -> list[tuple[int, str]]:
    """(line number, target) of the page's links to files, its own headings included."""
    kept = dict(prose_lines(page))
    lines = page.read_text().splitlines()
    text = "\n".join(kept.get(number, "") for number in range(1, len(lines) + 1))
    # Code spans hold no links; a span or a link may go over a line break.
    text = re.sub(r"`[^`]*`", lambda span: "\n" * span[0].count("\n"), text)
    links = []
    for match in LINK.finditer(text):
        target = match[1]
        if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            links.append((text.count("\n", 0, match.start()) + 1, target))
    return links


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_every_local_link_resolves(page):
    broken = []
    for number, target in local_links(page):
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page_name(page)}:{number}: {target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{page_name(page)}:{number}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_links_are_found():
    assert len(local_links(ROOT / "README.md")) > 10
