"""Where the time of a `zoo` command goes, phase by phase, in two versions of zoo side by side.

Runs the same command (default: issue 20's `zoo train unet-small --epochs 1 --limit-train 16`)
once with an earlier zoo source tree (`--before`: a folder, or a git revision unpacked with
`git archive`) and once with this checkout, alternating `--repeats` times, and prints a Markdown
table of seconds per phase (medians): wall time, and the process's CPU time, which a machine
shared with other jobs inflates much less.

The phases are timed by wrapping zoo functions as their modules are imported, so both trees are
measured the same way, need no progress code, and keep their imports as lazy as they are. Each
phase is charged its own time only (not that of a phase it calls); "startup" is everything before
the first phase (interpreter, imports, option parsing), "other" what no phase covers.

    ZOO_DATA=/path/to/data .venv/bin/python benchmarks/phases.py --before HEAD
    .venv/bin/python benchmarks/phases.py --before /tmp/zoo-old --repeats 3 -- eval RUN_DIR
"""

from __future__ import annotations

import argparse
import functools
import importlib.abc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# phase -> the functions it times ("module:qualified name"); a name a tree lacks is skipped.
PHASES = {
    "data: load the splits": ["zoo.data.splits:load_dataset"],
    "model: build, or load the checkpoint": [
        "zoo.registry:create_model",
        "zoo.checkpoint:load_run_model",
        "zoo.weights:load_run_model",
    ],
    "train: the epochs' batches": ["zoo.train:train_one_epoch"],
    "train: per-epoch validation": ["zoo.evaluate:validation_counts"],
    "train: checkpoints and record": ["zoo.callbacks:RunWriter.on_epoch_end"],
    "final: val + test inference": ["zoo.evaluate:predict"],
    "final: metrics (exact AP, IoU)": ["zoo.evaluate:metrics_of"],
    "final: figures": ["zoo.plots:save_run_figures"],
}
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- in the child


class Clock:
    """Wall and CPU seconds per phase, each phase charged only while it is the innermost."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {}
        self.stack: list[list] = []  # [phase, wall, cpu] of the phase running since then
        self.first: tuple[float, float] | None = None

    def wrap(self, phase: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self.switch(push=phase)
            try:
                return function(*args, **kwargs)
            finally:
                self.switch()

        return timed

    def switch(self, push: str | None = None) -> None:
        now = (time.perf_counter(), time.process_time())
        self.first = self.first or now
        if self.stack:
            phase, wall, cpu = self.stack[-1]
            spent = self.seconds.setdefault(phase, [0.0, 0.0])
            spent[0] += now[0] - wall
            spent[1] += now[1] - cpu
        if push is None:
            self.stack.pop()
            if self.stack:
                self.stack[-1][1:] = now
        else:
            self.stack.append([push, *now])


class WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps the PHASES functions of a zoo module right after it runs, before anything can
    import them by name."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.targets: dict[str, list[tuple[str, str]]] = {}
        for phase, names in PHASES.items():
            for name in names:
                module, attribute = name.split(":")
                self.targets.setdefault(module, []).append((phase, attribute))

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.targets:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            for phase, attribute in self.targets[fullname]:
                owner, _, name = attribute.rpartition(".")
                holder = getattr(module, owner) if owner else module
                if hasattr(holder, name):
                    setattr(holder, name, self.clock.wrap(phase, getattr(holder, name)))

        spec.loader.exec_module = exec_module
        return spec


def child(result_file: str, command: list[str]) -> None:
    """Run `zoo COMMAND` in this process with its phases timed; write the seconds as JSON."""
    clock = Clock()
    sys.meta_path.insert(0, WrapOnImport(clock))
    from zoo.cli import app

    try:
        app(command, prog_name="zoo")
    except SystemExit as exit:
        if exit.code:
            raise
    now = (time.perf_counter(), time.process_time())
    first = clock.first or now
    started = float(os.environ["PHASES_STARTED"])  # the parent's time.time() at the launch
    startup = [time.time() - started - (now[0] - first[0]), first[1]]
    seconds = {"startup": startup, **clock.seconds, "cpu": now[1]}
    Path(result_file).write_text(json.dumps(seconds))


# ----------------------------------------------------------------------------- the parent


def measure(tree: Path, command: list[str]) -> dict[str, list[float]]:
    """{phase: [wall, cpu]} of one run of `zoo COMMAND` with the zoo in `tree`."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "phases.json"
        env = {**os.environ, "PYTHONPATH": str(tree), "PHASES_STARTED": repr(time.time())}
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(result), "--", *command],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if proc.returncode or not result.exists():
            sys.exit(f"`zoo {' '.join(command)}` failed with {tree}:\n{proc.stderr[-3000:]}")
        seconds = json.loads(result.read_text())
    total = [wall, seconds.pop("cpu")]
    covered = [sum(value[i] for value in seconds.values()) for i in (0, 1)]
    return {**seconds, "other": [total[0] - covered[0], total[1] - covered[1]], "total": total}


def unpack(revision: str, into: Path) -> Path:
    """The zoo tree of a git revision, unpacked (read-only git: `git archive`)."""
    archive = subprocess.run(
        ["git", "archive", revision, "zoo"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def table(runs: dict[str, list[dict]]) -> str:
    """Markdown: per phase, the median wall and CPU seconds of each version."""
    names = ["startup", *PHASES, "other", "total"]
    versions = list(runs)
    header = ["phase"] + [f"{v} wall s" for v in versions] + [f"{v} CPU s" for v in versions]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for name in names:
        cells = []
        for column in (0, 1):
            for version in versions:
                value = statistics.median(
                    run.get(name, [0.0, 0.0])[column] for run in runs[version]
                )
                cells.append(f"{value:.1f}")
        if any(cell not in ("", "0.0") for cell in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU, its cores, the load average now (other jobs) and the thread setting."""
    info = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip()
        for line in (info.read_text().splitlines() if info.exists() else [])
        if line.startswith("model name")
    ]
    cpu = names[0] if names else platform.processor() or platform.machine()
    threads = os.environ.get("OMP_NUM_THREADS", "not set")
    return (
        f"{cpu}, {os.cpu_count()} cores, 1-minute load {os.getloadavg()[0]:.1f}, "
        f"OMP_NUM_THREADS {threads}"
    )


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2], sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="A zoo source tree, or a git revision.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each version.")
    parser.add_argument("command", nargs="*", help="zoo's arguments (after --).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        command = args.command or [
            "train", "unet-small", "--epochs", "1", "--limit-train", "16",
            "--out", str(Path(scratch) / "runs"),
        ]  # fmt: skip
        before = Path(args.before)
        if not before.is_dir():
            before = unpack(args.before, Path(scratch))
        print(f"zoo {' '.join(command)}\n{machine()}\n", flush=True)
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.repeats):
            for version, tree in (("before", before), ("after", ROOT)):
                runs[version].append(measure(tree, command))
                print(f"{version}: {runs[version][-1]['total'][0]:.1f} s", flush=True)
        print(f"\n{table(runs)}\n\n{machine()}")


if __name__ == "__main__":
    main()
