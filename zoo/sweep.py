"""Hyperparameter sweeps with Optuna: each trial is a normal `train_run`, pruned through the loop's
callbacks, in a study that any number of processes or machines can share.

    parse_space       `--lr 1e-4:1e-2:log --batch-size 64,128 --epochs 10` -> searched + fixed
    open_study        an Optuna study in an RDB storage (SQLite file by default), checked
    run_sweep         N trials in this process (or --workers N processes), Ctrl-C-safe
    report_study      the trials table, the best trial as a `zoo train` command, Optuna's figures

Everything a user can get wrong (an unknown or empty range, values a recipe cannot take, a
storage that cannot be reached, a study of another model) is refused before any trial runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import multiprocessing
import os
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from zoo.config import (
    TRACKING_FIELDS,
    TrainConfig,
    field_types,
    flag,
    option,
    parse_value,
    plain_choices,
    to_flags,
)
from zoo.errors import ZooError, first_line


class Sampler(str, Enum):
    tpe = "tpe"
    random = "random"
    grid = "grid"


class Pruner(str, Enum):
    median = "median"
    none = "none"


SAMPLERS = tuple(member.value for member in Sampler)
PRUNERS = tuple(member.value for member in Pruner)
NOT_SEARCHABLE = ("model", "out", "data_dir", "device", "weights", *TRACKING_FIELDS)  # fixed
STUDIES_FOLDER = "sweeps"  # <results>/sweeps/<study>/: study.db, figures/, trials/


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field: a float/int range (optionally log) or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple | None = None

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def text(self) -> str:
        """The command-line spelling of this range."""
        if self.choices is not None:
            return ",".join(str(choice).lower() for choice in self.choices)
        return f"{self.low:g}:{self.high:g}" + (":log" if self.log else "")


@dataclass(frozen=True)
class Search:
    """How `zoo sweep` searches: its own options (the recipe's are TrainConfig's)."""

    trials: int = option(20, "Finished trials the study should have.")
    space: Path | None = option(None, "JSON/YAML file: option -> range or choices.")
    sampler: str = option("tpe", "grid searches choices only.", choices=Sampler)
    pruner: str = option("median", "Pruning rule.", choices=Pruner)
    metric: str | None = option(
        None, "Validation column to optimise; default: the task's (val_accuracy)."
    )
    study: str | None = option(None, "Study name; an existing one is joined. Default MODEL-DATA.")
    storage: str | None = option(
        None, "SQLAlchemy URL; default: sqlite file under OUT/sweeps/STUDY/."
    )
    workers: int = option(1, "Worker processes on this machine.")

    def __post_init__(self) -> None:
        plain_choices(self)

    def spec(self, model: str, options: dict) -> SweepSpec:
        """The sweep of `model` over `options` (values, ranges, choices), parsed and checked."""
        return make_spec(
            model, options, space_file=self.space, trials=self.trials, sampler=self.sampler,
            pruner=self.pruner, metric=self.metric, study=self.study, storage=self.storage,
        )  # fmt: skip


@dataclass(frozen=True)
class SweepSpec:
    """A sweep, fully parsed and checked: plain values, so it can go to worker processes."""

    base: TrainConfig  # the recipe with the fixed options set and the model's defaults filled
    params: tuple[Param, ...]
    study: str
    storage: str  # an SQLAlchemy URL
    trials: int  # the study's total number of trials to reach
    sampler: str
    pruner: str
    metric: str  # a history column (val_accuracy, val_mean_iou, val_loss, ...)
    direction: str  # maximize | minimize
    seed: int = 0  # of the sampler

    @property
    def folder(self) -> Path:
        return study_folder(self.base.out, self.study)

    def describe(self) -> str:
        """What `zoo sweep` says it is about to do."""
        return (
            f"Sweep {self.study} ({self.storage}): {self.trials} trials of {self.base.model} on "
            f"{self.base.dataset}, {self.sampler} sampler, {self.pruner} pruning, "
            f"{self.direction} {self.metric}; searching "
            + ", ".join(f"{p.name} {p.text()}" for p in self.params)
        )

    def user_attrs(self) -> dict:
        """What a study remembers of the sweep that created it, checked when it is joined."""
        return {
            "model": self.base.model,
            "dataset": self.base.dataset,
            "metric": self.metric,
            "space": {param.name: param.text() for param in self.params},
            "recipe": self.base.to_dict(),  # the fixed options, for `zoo sweep show`'s command
        }


def study_folder(out: str | Path, study: str) -> Path:
    return Path(out) / STUDIES_FOLDER / study.replace("/", "--")


def parse_option(name: str, spec: str | list) -> Param | object:
    """`spec` of field `name` -> a fixed value, or a Param: `low:high[:log]` (numbers) or
    `a,b,c` (choices); a list (from a space file) is a list of choices."""
    types = field_types()
    if name in NOT_SEARCHABLE and name in types:
        return parse_value(name, types[name], str(spec))  # fixed for every trial
    if name not in types:
        known = [n for n in types if n not in NOT_SEARCHABLE]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ZooError(
            f"{name!r} is not a searchable zoo train option.{hint} Searchable: {', '.join(known)}."
        )
    kind = types[name]
    if isinstance(spec, list):
        spec = ",".join(str(v) for v in spec)
    spec = str(spec)
    if ":" in spec and kind in (int, float):
        parts = spec.split(":")
        log = len(parts) == 3 and parts[2] == "log"
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ZooError(f"{flag(name)} {spec!r}: write a range as low:high or low:high:log.")
        low, high = (parse_value(name, kind, part) for part in parts[:2])
        if not low < high:
            raise ZooError(f"{flag(name)} {spec}: the range is empty; low must be below high.")
        if log and low <= 0:
            raise ZooError(f"{flag(name)} {spec}: a log range needs low > 0.")
        return Param(name, low, high, log=log, integer=kind is int)
    if "," in spec:
        choices = tuple(parse_value(name, kind, part) for part in spec.split(",") if part.strip())
        if not choices:
            raise ZooError(f"{flag(name)} {spec!r}: the list of choices is empty.")
        return Param(name, choices=tuple(dict.fromkeys(choices)))
    if not spec.strip():
        raise ZooError(f"{flag(name)} is empty; give a value, a range or choices.")
    return parse_value(name, kind, spec)


def parse_space(options: dict[str, str | list]) -> tuple[tuple[Param, ...], dict]:
    """Command-line (or space-file) options -> (searched Params, fixed values)."""
    params, fixed = [], {}
    for name, spec in options.items():
        parsed = parse_option(name, spec)
        if isinstance(parsed, Param):
            params.append(parsed)
        else:
            fixed[name] = parsed
    return tuple(params), fixed


def read_space_file(path: Path) -> dict:
    """A JSON or YAML mapping of option -> "low:high[:log]", "a,b" or a list of choices."""
    import yaml

    try:
        text = Path(path).read_text()
        space = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
    except OSError as error:
        raise ZooError(f"--space {path} cannot be read ({error.strerror}).") from None
    except (ValueError, yaml.YAMLError) as error:
        raise ZooError(f"--space {path} is not valid JSON/YAML ({error}).") from None
    if not isinstance(space, dict):
        raise ZooError(f"--space {path} must map option names to ranges, e.g. lr: 1e-4:1e-2:log")
    return {str(k).replace("-", "_"): v for k, v in space.items()}


def check_values(base: TrainConfig, params: tuple[Param, ...]) -> None:
    """Every end of every range and every choice must make a valid recipe: one sentence else."""
    for param in params:
        values = param.choices if param.choices is not None else (param.low, param.high)
        for value in values:
            try:
                dataclasses.replace(base, **{param.name: value})
            except ZooError as error:
                raise ZooError(
                    f"{flag(param.name)} {param.text()} reaches {value}, which a recipe cannot "
                    f"take: {error}"
                ) from None


def make_spec(
    model: str,
    options: dict,
    *,
    space_file: Path | None = None,
    trials: int,
    sampler: str = "tpe",
    pruner: str = "median",
    metric: str | None = None,
    study: str | None = None,
    storage: str | None = None,
) -> SweepSpec:
    """Parse and check everything about a sweep, before any trial runs."""
    from zoo.registry import get_model_entry
    from zoo.results import HISTORY_COLUMNS, TASK_METRICS

    if trials < 1:
        raise ZooError(f"--trials must be at least 1, got {trials}.")
    if sampler not in SAMPLERS or pruner not in PRUNERS:
        raise ZooError(f"--sampler is one of {SAMPLERS} and --pruner one of {PRUNERS}.")
    entry = get_model_entry(model)
    searched = dict(read_space_file(space_file)) if space_file else {}
    params, fixed = parse_space({**searched, **options})
    base = TrainConfig(model=model, **fixed).resolve(entry.task, entry.dataset)
    check_values(base, params)
    if not params:
        raise ZooError("Nothing to search: give at least one range (--lr 1e-4:1e-2:log) or list.")
    if sampler == "grid" and any(p.choices is None for p in params):
        raise ZooError("--sampler grid searches lists of choices only (e.g. --lr 1e-3,3e-3).")
    metric = metric or TASK_METRICS[entry.task].selection
    columns = (
        [c for c in HISTORY_COLUMNS if c.startswith("val_")]
        + ["val_mean_ap"]
        + (["val_mean_iou"] if entry.task == "segmentation" else [])
    )
    if metric not in columns:
        raise ZooError(f"--metric {metric!r} is not a validation column; use one of {columns}.")
    study = study or f"{model}-{base.dataset}".replace("/", "--")
    storage = storage or f"sqlite:///{study_folder(base.out, study) / 'study.db'}"
    direction = "minimize" if metric.endswith("loss") else "maximize"
    return SweepSpec(base, params, study, storage, trials, sampler, pruner, metric, direction)


# ----------------------------------------------------------------------------- the study


# A running trial records a heartbeat; one silent for longer than the grace period (its worker
# was killed, its machine lost) is failed by the next trial that starts, instead of staying
# "running" in the study forever.
HEARTBEAT_SECONDS, GRACE_SECONDS = 60, 300


def make_storage(url: str):
    """An Optuna RDB storage; ZooError naming the URL when it cannot be reached."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # several local workers share one file
    else:
        engine = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # "heartbeat_interval is an experimental feature"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
            )
    except Exception as error:  # SQLAlchemy and the drivers raise many kinds
        raise ZooError(
            f"Cannot reach the study storage {url} ({first_line(error)}); check the URL, that the "
            "database server runs and accepts this user, and that its driver is installed."
        ) from None


def make_sampler(spec: SweepSpec, seed: int):
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        grid = {param.name: list(param.choices) for param in spec.params}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: SweepSpec):
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    # Prune below the median of the earlier trials at the same epoch, once 5 trials completed,
    # and not in the first third of the shortest trial: early scores say little about recipes
    # whose schedule is longer or whose augmentation slows the start.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup_epochs(spec))


def warmup_epochs(spec: SweepSpec) -> int:
    """The first epoch at which a trial may be pruned: a third of the shortest trial, plus one."""
    epochs = next((p for p in spec.params if p.name == "epochs"), None)
    if epochs is None:
        shortest = spec.base.epochs
    else:
        shortest = min(epochs.choices) if epochs.choices else int(epochs.low)
    return shortest // 3 + 1


def open_study(spec: SweepSpec, worker: int = 0):
    """Create the study, or join it when it exists: it must be one of the same model, dataset,
    metric and search space. Each process samples with its own seed (the sweep's, offset by the
    trials already in the study and by the worker's number), so neither a re-run nor a second
    worker draws the same values again."""
    import optuna

    # zoo says what happened to each trial itself; Optuna's warnings come with tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(spec.storage)
    study = optuna.create_study(
        study_name=spec.study,
        storage=storage,
        pruner=make_pruner(spec),
        direction=spec.direction,
        load_if_exists=True,
    )
    study.sampler = make_sampler(spec, spec.seed + len(study.trials) + 7919 * worker)
    attrs = spec.user_attrs()
    if not study.user_attrs:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return study
    for key in ("model", "dataset", "metric", "space"):
        if study.user_attrs.get(key) != attrs[key]:
            raise ZooError(
                f"Study {spec.study!r} in {spec.storage} was made for {key} "
                f"{study.user_attrs.get(key)!r}, not {attrs[key]!r}; pass another --study name "
                "(or the same options to go on with it)."
            )
    return study


def counted(study) -> int:
    """Trials that count toward --trials: completed, pruned or failed ones. Not those stopped by
    Ctrl-C, nor those whose worker was killed (failed by the heartbeat check, with no status of
    their own): a re-run does those again."""
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(
        trial.user_attrs.get("status") not in (None, "interrupted", "killed")
        for trial in study.get_trials(deepcopy=False, states=finished)
    )


# ----------------------------------------------------------------------------- the trials


class TrialFailed(ZooError):
    """A trial whose training diverged or could not run: recorded as failed, the sweep goes on."""


def make_pruning_callback(trial, spec: SweepSpec):
    """A loop callback that reports the metric each epoch and stops a trial Optuna prunes."""
    from zoo.train import Callback

    class PruneTrial(Callback):
        def on_epoch_end(self, loop, row):
            value = row[spec.metric]
            trial.report(value, loop.epoch)
            if trial.should_prune():
                loop.request_stop(
                    "pruned",
                    f"Pruned by the sweep ({spec.pruner} rule) after epoch {loop.epoch}: "
                    f"{spec.metric} {value:.4f}.",
                )

    return PruneTrial()


def objective(spec: SweepSpec, console):
    """Optuna's objective: one `train_run` with the trial's values; the best epoch's metric."""
    import optuna

    from zoo import loggers
    from zoo.progress import phase, reporting
    from zoo.run import train_run

    def run_trial(trial: optuna.Trial) -> float:
        values = {param.name: param.suggest(trial) for param in spec.params}
        config = dataclasses.replace(spec.base, **values, out=str(spec.folder / "trials"))
        tags = {"study": spec.study, "trial": str(trial.number)}
        parent = loggers.sweep_run_id(spec.folder) if "mlflow" in spec.base.logger else None
        if parent is not None:
            tags["mlflow_parent_run_id"] = parent
        chosen = ", ".join(
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
            for name, value in values.items()
        )
        with reporting(console), phase(f"trial {trial.number} ({chosen})"):
            record = train_run(
                config, callbacks=[make_pruning_callback(trial, spec)], console=console, tags=tags
            )
        trial.set_user_attr("run_dir", str(record.run_dir))
        trial.set_user_attr("status", record.status)
        if record.status == "interrupted":
            raise KeyboardInterrupt
        if record.status == "pruned":
            raise optuna.TrialPruned(record.message)
        if record.status != "completed":
            if console is not None:
                console.print(
                    f"[yellow]Trial {trial.number} failed ({record.status}); the sweep goes "
                    f"on.[/yellow] {record.message}",
                    highlight=False,
                    soft_wrap=True,
                )
            raise TrialFailed(f"trial {trial.number} {record.status}: {record.message}")
        scores = [row[spec.metric] for row in record.history]
        return max(scores) if spec.direction == "maximize" else min(scores)

    return run_trial


def run_trials(spec: SweepSpec, count: int, console=None, worker: int = 0) -> bool:
    """Run `count` trials of the study in this process; True when Ctrl-C stopped them (the
    running trial is recorded as failed and not counted; finished ones are saved already)."""
    study = open_study(spec, worker)

    def enough(study, trial) -> None:
        # Other processes (other machines) may work on the study too: stop once it has enough,
        # counted as `counted` does (Optuna's MaxTrialsCallback would count the interrupted and
        # killed trials, which are done again, and stop short).
        if counted(study) >= spec.trials:
            study.stop()

    try:
        study.optimize(
            objective(spec, console), n_trials=count, catch=(TrialFailed,), callbacks=[enough]
        )
    except KeyboardInterrupt:
        return True
    return False


def worker(spec: SweepSpec, count: int, threads: int, number: int) -> None:
    """Worker `number`: its share of the trials, with its share of the CPU threads."""
    import sys

    import torch
    from rich.console import Console

    torch.set_num_threads(threads)
    sys.exit(130 if run_trials(spec, count, Console(stderr=True, quiet=True), number) else 0)


def run_sweep(spec: SweepSpec, workers: int = 1, console=None) -> bool:
    """Bring the study to `spec.trials` counted trials with `workers` processes here; True when
    Ctrl-C stopped it. Re-running the same sweep goes on with the trials still to do."""
    todo = spec.trials - counted(open_study(spec))
    if todo <= 0:
        return False
    if "mlflow" not in spec.base.logger:
        return run_trial_processes(spec, todo, workers, console)
    from zoo import loggers

    space = {param.name: param.text() for param in spec.params}
    parent = loggers.sweep_run(spec.folder, spec.study, spec.base.out, space)  # trials: children
    interrupted = True
    try:
        interrupted = run_trial_processes(spec, todo, workers, console)
        return interrupted
    finally:
        if parent is not None:
            loggers.end_sweep_run(parent, spec.base.out, interrupted)


def run_trial_processes(spec: SweepSpec, todo: int, workers: int, console) -> bool:
    """`todo` trials in this process, or shared among `workers` processes; True on Ctrl-C."""
    if workers <= 1:
        return run_trials(spec, todo, console)
    shares = [todo // workers + (i < todo % workers) for i in range(workers)]
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as torch prefers
    processes = [
        context.Process(target=worker, args=(spec, share, threads, number))
        for number, share in enumerate(shares)
        if share
    ]
    interrupted = False
    for process in processes:
        process.start()
    for process in processes:
        while process.is_alive():
            try:
                process.join()
            except KeyboardInterrupt:  # the workers got the Ctrl-C too: wait for them to save
                interrupted = True
    return interrupted or any(process.exitcode == 130 for process in processes)


# ----------------------------------------------------------------------------- reporting


def load_study(name: str, storage: str):
    """An existing study; a ZooError when there is none (a missing SQLite file is not made)."""
    import optuna

    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise ZooError(
            f"There is no study {name!r}: {storage.removeprefix('sqlite:///')} does not exist; "
            "check the study's name and --out (or --storage)."
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=name, storage=make_storage(storage))
    except KeyError:
        raise ZooError(
            f"There is no study {name!r} in {storage}; check the study's name and --storage."
        ) from None


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, value, epochs, the searched values."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "value": trial.value,
                "epochs": len(trial.intermediate_values),
                **trial.params,
            }
        )
    return rows


def train_command(study, trial) -> str:
    """A trial as a ready `zoo train ...` command: the sweep's fixed options and the trial's
    values, where they differ from `zoo train`'s defaults."""
    from zoo.registry import get_model_entry

    base = TrainConfig.from_dict(study.user_attrs["recipe"])
    config = dataclasses.replace(base, **trial.params).to_dict()
    entry = get_model_entry(base.model)
    defaults = TrainConfig(model=base.model).resolve(entry.task, entry.dataset).to_dict()
    flags = to_flags(
        config, against=defaults, skip=("model", "out", "data_dir", *TRACKING_FIELDS), digits=6
    )
    return " ".join(["zoo", "train", base.model, *flags])


def write_figures(study, folder: Path) -> list[Path]:
    """Optuna's optimization history, parameter importances and slices as PNGs in `folder`."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.ticker import NullFormatter
    from optuna.visualization import matplotlib as plots

    from zoo.plots import save_figure

    figures = {
        "optimization_history.png": plots.plot_optimization_history,
        "param_importances.png": plots.plot_param_importances,
        "slice.png": plots.plot_slice,
        "intermediate_values.png": plots.plot_intermediate_values,
    }
    written = []
    completed = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    for filename, plot in figures.items():
        if filename == "param_importances.png" and (
            len(completed) < 2 or len(study.best_trial.params) < 2
        ):
            continue  # importances need two parameters and two finished trials
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna's "experimental" warnings
            axes = plot(study)
        panels = list(axes.flat) if hasattr(axes, "flat") else [axes]
        for ax in panels:  # log axes: decades only, the 2x10^-3 labels between them overlap
            if ax.get_xscale() == "log":
                ax.xaxis.set_minor_formatter(NullFormatter())
        figure = panels[0].get_figure()
        figure.set_size_inches(max(7.0, 3.6 * len(panels) + 1.5), 4.5)
        save_figure(figure, folder / filename)
        written.append(folder / filename)
    return written


def best_value(study) -> float | None:
    completed = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    return study.best_value if completed else None


@dataclass
class StudyReport:
    """What `zoo sweep show` prints: the trials' table, then lines (the best trial as a `zoo
    train` command, the figures written)."""

    title: str
    rows: list[dict]
    lines: list[str]


def report_study(name: str, storage: str | None, out: str | Path) -> StudyReport:
    """The study `name` (default storage: its SQLite file under `out`), its figures written."""
    storage = storage or f"sqlite:///{study_folder(out, name) / 'study.db'}"
    found = load_study(name, storage)
    metric = found.user_attrs.get("metric")
    title = f"study {name}: {metric} ({found.direction.name})"
    if best_value(found) is None:
        return StudyReport(title, trial_rows(found), ["No trial has completed yet."])
    best = found.best_trial
    figures = write_figures(found, study_folder(out, name) / "figures")
    lines = [f"Best: trial {best.number}, {metric} {best.value:.4f}", train_command(found, best)]
    return StudyReport(title, trial_rows(found), lines + [f"Figure: {path}" for path in figures])
