"""How long `zoo` takes to answer before any work: a misspelt name, `--help`, `zoo list`.

Runs each command `--repeats` times as a fresh process, alternating them, next to two references
measured the same way (a bare interpreter, and `import torch`, which these answers must not pay
for), and prints a Markdown table of medians: wall seconds, and the process's CPU seconds, which
a machine shared with other jobs inflates much less than wall time.

Python's bytecode cache is on, as for a user (`PYTHONDONTWRITEBYTECODE` is removed from the
children's environment, and one untimed round writes the cache first): without it every zoo
module is compiled again on each run, which costs about 0.4 s of CPU here.

    .venv/bin/python benchmarks/cli_startup.py --repeats 9
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from zoo.results import cpu_model

ZOO = [sys.executable, "-m", "zoo"]
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "zoo train basline-cnn": [*ZOO, "train", "basline-cnn"],
    "zoo --help": [*ZOO, "--help"],
    "zoo list": [*ZOO, "list"],
}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `argv`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["COLUMNS"] = "80"

    for argv in COMMANDS.values():  # untimed: writes the bytecode cache, warms the page cache
        timed(argv, env)
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for repeat in range(args.repeats):
        print(f"round {repeat + 1}/{args.repeats}", file=sys.stderr)
        for name, argv in COMMANDS.items():
            wall, cpu = timed(argv, env)
            walls[name].append(wall)
            cpus[name].append(cpu)

    print(f"{cpu_model()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, medians of {args.repeats} runs\n")  # fmt: skip
    print("| command | wall s | CPU s |")
    print("|---|---:|---:|")
    for name in COMMANDS:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"| `{name}` | {wall:.2f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
