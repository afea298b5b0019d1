"""`make mutation`: mutmut over zoo's core, one target at a time against the tests that cover it,
and a mutation score per target (docs/testing.md: why mutmut, how to read the survivors).

    python tests/mutation.py                    every target below
    python tests/mutation.py metrics splits     some of them
    python tests/mutation.py --min-score 0.85 sweep-objective   CI's: exit 1 below 85%

Each target runs in build/mutation/<target>/, where zoo/ and tests/ are links to this checkout
and pyproject.toml is this one plus the target's [tool.mutmut] table. mutmut mutates the copies
it makes under that folder's mutants/, never the checkout, so it can run while others work in
the tree. The scores go to build/mutation/scores.txt; in a target's folder, `mutmut results`
lists its surviving mutants and `mutmut show NAME` shows one.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "mutation"
LINKED = ("zoo", "tests")  # mutmut copies these into mutants/
READ_BY_TESTS = ("results", "recipes", "benchmarks")  # relative paths some tests read


@dataclass(frozen=True)
class Target:
    source: str  # the file mutmut mutates
    functions: tuple[str, ...]  # the functions whose mutants count: mutmut's keys, globs
    tests: tuple[str, ...]  # the tests that cover them (pytest node ids)

    @property
    def module(self) -> str:
        return self.source.removesuffix(".py").replace("/", ".")

    def counts(self, mutant: str) -> bool:
        key = mutant.removeprefix(f"{self.module}.").split("__mutmut_")[0]
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.functions)


# Keys are mutmut's: x_<function>, or xǁ<Class>ǁ<method> for a method.
TARGETS = {
    "metrics": Target(
        "zoo/metrics.py",
        ("*",),
        ("tests/test_metrics.py", "tests/test_segmentation_metrics.py"),
    ),
    "bench-summary": Target(
        "zoo/bench.py",
        ("x_summarize", "x_percentile"),
        (
            "tests/test_bench_stats.py",
            "tests/test_bench.py::test_throughput_is_sustained_and_latency_per_iteration",
        ),
    ),
    "checkpoint": Target(
        "zoo/checkpoint.py",
        ("*",),
        # its own tests, and those that save and load a real trainer's state (the rest of
        # test_engine.py and test_resume.py train runs: a minute a mutant, for no more coverage)
        (
            "tests/test_checkpoint.py",
            "tests/test_engine.py::test_a_training_state_restores_everything_a_run_needs",
            "tests/test_engine.py::test_a_training_state_that_is_no_state_is_refused",
            "tests/test_resume.py::test_a_loaded_training_state_has_its_parameters_memory_format",
        ),
    ),
    "compare-statistics": Target(
        "zoo/compare.py",
        ("xǁRowǁvalues", "xǁRowǁmean", "xǁRowǁstd", "xǁRowǁper_class", "xǁRowǁversus_baseline"),
        # the tests that check these statistics' values (the rest of test_compare.py renders
        # them, and one trains: minutes, for no more coverage of these functions)
        tuple(
            f"tests/test_compare.py::test_{name}"
            for name in (
                "runs_differing_in_seed_are_one_row_with_mean_std_and_n",
                "baseline_rows_show_the_difference_and_welchs_p_value",
                "the_outputs_carry_per_class_scores_with_class_names",
                "a_difference_exceeds_the_seed_spread_only_above_the_larger_spread",
                "the_spread_of_a_single_run_row_is_the_other_rows",
                "mean_and_std_are_over_the_runs_that_have_the_score",
                "versus_baseline_needs_another_row_with_scores_on_both_sides",
                "per_class_is_the_mean_over_the_runs_that_have_the_class",
                "welchs_p_value_needs_two_runs_a_side_and_no_more",
            )
        ),
    ),
    "splits": Target("zoo/data/splits.py", ("*",), ("tests/test_data.py", "tests/test_splits.py")),
    "sweep-objective": Target(
        "zoo/sweep.py",
        ("x_objective", "x_make_pruner", "x_warmup_epochs", "x_make_pruning_callback", "x_counted"),
        # the tests that check these functions' results with a stand-in for the training (the
        # rest of test_sweep.py parses spaces, or trains real trials in worker processes and
        # database servers: a minute a mutant, for no more coverage of these functions)
        tuple(
            f"tests/test_sweep.py::test_{name}"
            for name in (
                "no_trial_is_pruned_in_the_first_third_of_the_shortest_one",
                "a_trials_value_is_its_best_epochs_not_its_last",
                "a_metric_no_epoch_reports_is_refused_before_any_trial",
                "the_median_pruner_waits_for_5_completed_trials_and_a_third_of_the_epochs",
                "a_trial_trains_its_values_tagged_into_the_studys_folder",
                "a_trial_that_did_not_complete_is_interrupted_pruned_or_failed",
                "the_pruning_callback_reports_each_epoch_and_stops_a_pruned_trial",
                "trials_count_when_completed_pruned_or_failed_not_interrupted_or_killed",
            )
        ),
    ),
    "optimizer-schedule": Target(
        "zoo/train.py",
        ("x_build_optimizer", "x_build_scheduler"),
        # the tests that step an optimizer and a schedule built by these functions on known
        # gradients, or beside torch's unfused loop (test_train.py, test_engine.py and
        # test_resume.py reach them by training)
        tuple(
            f"tests/test_train_options.py::test_{name}"
            for name in (
                "sgd_is_nesterov_with_momentum_0_9",
                "the_optimizer_is_fused_and_steps_as_the_unfused_one",
                "adamw_decays_the_weights_apart_from_the_gradient",
                "adam_takes_a_normalised_step",
                "cosine_falls_from_the_peak_to_zero_with_no_warm_up",
                "onecycle_warms_up_for_30_percent_then_anneals",
                "none_keeps_the_learning_rate",
                "a_schedule_over_zero_steps_is_refused",
            )
        ),
    ),
}

# mutmut's exit codes of a mutant's test run (mutmut/stats.py); any other is "suspicious".
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", None: "not checked"}  # fmt: skip
DETECTED = ("killed", "timeout", "caught by type check")
NOT_SCORED = ("skipped", "not checked")


def toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(name: str, target: Target) -> Path:
    """A fresh folder for the target: links to the checkout and its pyproject.toml."""
    folder = BUILD / name
    shutil.rmtree(folder, ignore_errors=True)  # no stale copies of an older checkout
    (folder / "mutants").mkdir(parents=True)
    for path in LINKED:
        (folder / path).symlink_to(ROOT / path)
    for path in READ_BY_TESTS:  # the tests run in mutants/
        (folder / "mutants" / path).symlink_to(ROOT / path)
    project = (ROOT / "pyproject.toml").read_text()
    assert "[tool.mutmut]" not in project, "tests/mutation.py writes [tool.mutmut] itself"
    (folder / "pyproject.toml").write_text(
        project
        + "\n[tool.mutmut]\n"
        + 'source_paths = ["zoo/"]\n'
        + f"only_mutate = {toml_list([target.source])}\n"
        + f"pytest_add_cli_args_test_selection = {toml_list(target.tests)}\n"
        # the same order every run; mutmut has its own per-mutant time limit
        + 'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider"]\n'
        + 'process_isolation = "forkserver"\n'  # torch is not fork-safe once it has run
    )
    return folder


def mutant_order(mutant: str) -> tuple[str, int]:
    """By function, then by number: mutmut_7 before mutmut_18."""
    function, number = mutant.rsplit("__mutmut_", 1)
    return function, int(number)


def score(name: str, target: Target, folder: Path) -> dict:
    """The share of the target's mutants that a test detected; a mutant no test reaches counts
    as undetected."""
    meta = json.loads((folder / "mutants" / f"{target.source}.meta").read_text())
    statuses = {
        mutant: STATUS.get(code, "suspicious")
        for mutant, code in meta["exit_code_by_key"].items()
        if target.counts(mutant)
    }
    scored = [m for m, status in statuses.items() if status not in NOT_SCORED]
    detected = [m for m in scored if statuses[m] in DETECTED]
    return {
        "target": name,
        "mutants": len(scored),
        "detected": len(detected),
        "score": len(detected) / len(scored) if scored else None,
        "undetected": sorted(set(scored) - set(detected), key=mutant_order),
    }


def run(name: str, jobs: int | None) -> dict:
    target = TARGETS[name]
    folder = prepare(name, target)
    names = [f"{target.module}.{f}__mutmut_*" for f in target.functions if f != "*"]
    command = [str(Path(sys.executable).parent / "mutmut"), "run", *names]
    if jobs:
        command += ["--max-children", str(jobs)]
    print(f"== {name}: mutmut over {target.source} against {' '.join(target.tests)}", flush=True)
    subprocess.run(command, cwd=folder, check=True)
    return score(name, target, folder)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Mutation scores of zoo's core (mutmut).")
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    parser.add_argument("--jobs", type=int, help="mutants tested at once (mutmut: the CPUs)")
    parser.add_argument(
        "--min-score", type=float, help="exit 1 when a target detects a smaller share (0-1)"
    )
    args = parser.parse_args(argv)
    unknown = [name for name in args.targets if name not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}")
    results = [run(name, args.jobs) for name in args.targets or TARGETS]
    lines = [f"{'target':<20} {'mutants':>7} {'detected':>8} {'score':>6}"]
    for result in results:
        value = "-" if result["score"] is None else f"{result['score']:.0%}"
        lines.append(
            f"{result['target']:<20} {result['mutants']:>7} {result['detected']:>8} {value:>6}"
        )
    for result in results:
        if result["undetected"]:
            lines += ["", f"{result['target']}: not detected", *result["undetected"]]
    text = "\n".join(lines) + "\n"
    (BUILD / "scores.txt").write_text(text)
    print(text, end="")
    low = [r for r in results if args.min_score and (r["score"] or 0) < args.min_score]
    for result in low:
        print(
            f"{result['target']}: {result['detected']} of {result['mutants']} mutants detected, "
            f"below --min-score {args.min_score:.0%}; kill the survivors above with a test, or "
            "list them in docs/testing.md as equivalent.",
            file=sys.stderr,
        )
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
