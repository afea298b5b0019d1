"""A training run: the run folder around the loop. What `zoo train` calls, one trial of a sweep.

    train_run(config)                       resume_run(run_dir)
        check the recipe, the output folder     read the record, check the asked changes
        and the data, build the seeded model    build the same seeded model
        new run record (config.json,            the record says running again
        metrics.json: running)
                     \\                        /
            fit(callbacks: [resume from the training state,] console, writer)
            -> best checkpoint on val and test -> figures -> metrics.json: completed

Everything a user can get wrong is checked before a file is written. The loop (zoo/train.py)
touches no file; the callbacks and this module write the record, on rank 0 only, which holds the
run folder's lock (results.RunLock) from start to end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from zoo import results
from zoo.callbacks import ConsoleProgress, ResumeFrom, RunWriter
from zoo.checkpoint import BEST, LAST, STATE, load_weights, read_state_progress
from zoo.config import TRACKING_FIELDS, TrainConfig, default_eval_batch, parse_seeds, to_flags
from zoo.data.base import run_data_options
from zoo.data.splits import Splits, load_dataset
from zoo.distributed import ONE_PROCESS, Ranks, launch
from zoo.errors import ZooError
from zoo.evaluate import score_run
from zoo.loggers import make_loggers
from zoo.progress import phase, reporting
from zoo.registry import create_model, get_model_entry
from zoo.runtime import (
    Precision,
    check_compile,
    compile_failures_explained,
    compile_warning,
    place_model,
    resolve_device,
    resolve_precision,
)
from zoo.train import Callback, Loop, fit

# The fields `--resume` may be given with other values than the run's: where the data is, how
# many processes decode it, and where the run is also logged. `epochs` may grow (to train
# longer); every other field is the recipe and must stay.
RESUME_FREE_FIELDS = ("data_dir", "data_workers", *TRACKING_FIELDS)


@dataclass
class Setup:
    """What a run needs before its loop starts: all of it checked, nothing written yet."""

    config: TrainConfig  # resolved: the model's defaults filled in
    task: str
    device: torch.device
    precision: Precision
    data: Splits
    model: torch.nn.Module  # built after torch.manual_seed(config.seed), on `device`


def warn(console: Console, message: str) -> None:
    console.print(f"[yellow]Warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def check_recipe(
    config: TrainConfig, data: Splits, task: str, device: torch.device, ranks: Ranks
) -> None:
    """What can only be checked once the data and device are known; one sentence each, before
    any work."""
    if data.info.task != task:
        own = {"classification": "imagefolder:PATH", "segmentation": "segfolder:PATH"}[task]
        raise ZooError(
            f"{config.model} is a {task} model but {config.dataset} is a {data.info.task} "
            f"dataset; pick a {task} dataset (`zoo datasets`), or {own} for a folder of your own."
        )
    if len(data.train) == 0:
        raise ZooError(
            f"{config.dataset} leaves no training images once --val-fraction "
            f"{config.val_fraction} of them is held out for validation; pass a smaller "
            "--val-fraction."
        )
    side = min(data.train.images.shape[-2:])
    if config.crop_size is not None and config.crop_size > side:
        raise ZooError(
            f"--crop-size {config.crop_size} is larger than {config.dataset}'s {side}-pixel "
            f"training images; pass --crop-size {side} or less."
        )
    if config.sync_bn and device.type != "cuda":
        raise ZooError(
            "--sync-bn synchronises BatchNorm across GPU processes (PyTorch's SyncBatchNorm has "
            "no CPU version); drop it on the CPU."
        )
    if config.batch_size % ranks.world_size:
        raise ZooError(
            f"--batch-size {config.batch_size} does not split evenly over {ranks.world_size} "
            f"processes; pass a multiple of {ranks.world_size}."
        )


def prepare(config: TrainConfig, task: str, console: Console, ranks: Ranks) -> Setup:
    """Device, precision, data and the seeded model of a resolved `config`."""
    device = resolve_device(config.device)
    if config.compile:
        check_compile(device)
    if device.type == "cuda" and ranks.distributed:
        device = torch.device("cuda", ranks.local_rank)
    precision = resolve_precision(device, config.amp, config.amp_dtype)
    if precision.warning and ranks.is_main:
        warn(console, precision.warning)
    slower = compile_warning(config.model, device) if config.compile else None
    if slower and ranks.is_main:
        warn(console, slower)
    with reporting(console if ranks.is_main else None):
        data = load_dataset(
            config.dataset,
            config.data_dir,
            val_fraction=config.val_fraction,
            split_seed=config.split_seed,
            limit_train=config.limit_train,
            skip_bad=config.skip_bad_samples,
            options=run_data_options(config),
            workers=config.data_workers,
        )
        check_recipe(config, data, task, device, ranks)
        if data.info.crop_pct is not None and config.img_size is None:  # recorded, for eval
            config = dataclasses.replace(config, img_size=data.info.image_size[0])
        if config.eval_batch_size is None:  # a folder's side is known now
            side = data.info.image_size[0]
            config = dataclasses.replace(config, eval_batch_size=default_eval_batch(task, side))
        if device.type == "cuda":
            data = data.to(device)
        torch.manual_seed(config.seed)
        with phase(f"building {config.model}"):
            model = create_model(
                config.model,
                num_classes=data.info.num_classes,
                in_chans=data.info.in_chans,
                imagenet=config.imagenet,
            )
            if config.weights is not None:
                load_weights(model, config.weights, config.model)
            place_model(model, device, config.channels_last)
    return Setup(config, task, device, precision, data, model)


def train_run(
    config: TrainConfig,
    *,
    callbacks: list[Callback] = (),
    console: Console | None = None,
    tags: dict[str, str] | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> results.RunRecord:
    """Train `config.model`, keep the best (by the task's validation score, see
    results.TASK_METRICS) and last checkpoints, evaluate the best one on val and test, and
    write the run record and figures. `config` is not changed; the record holds the resolved
    one (the model's default dataset and batch sizes filled in).

    Ctrl-C and a diverging loss do not raise: the record's status says what happened, and the
    folder on disk says the same, with the checkpoints of the last good state kept.
    """
    console = console or Console(stderr=True)
    entry = get_model_entry(config.model)
    config = config.resolve(entry.task, entry.dataset)
    if ranks.is_main:
        results.check_writable(config.out)
    setup = prepare(config, entry.task, console, ranks)
    info = setup.data.info
    record = results.RunRecord(
        config=setup.config,
        task=entry.task,
        precision=setup.precision.label,
        environment=results.environment(setup.device),
        num_parameters=sum(p.numel() for p in setup.model.parameters()),
        class_names=list(info.class_names),
        input={
            "in_chans": info.in_chans,
            "image_size": list(info.image_size),
            "mean": list(info.mean),
            "std": list(info.std),
            "normalisation": info.normalisation,
            "data_mode": setup.data.mode,
        },
        skipped_samples=list(setup.data.skipped),
        tags=dict(tags or {}),
    )
    if ranks.distributed:
        record.distributed = {
            "world_size": ranks.world_size,
            "batch_size_per_process": config.batch_size // ranks.world_size,
            "backend": ranks.backend,
        }
    if ranks.is_main:
        record.run_dir = results.new_run_dir(config.out, config.dataset, config.model)
    return run(record, setup, list(callbacks), console, ranks)


def resume_run(
    run_dir: str | Path,
    *,
    changes: dict | None = None,
    callbacks: list[Callback] = (),
    console: Console | None = None,
    ranks: Ranks = ONE_PROCESS,
) -> results.RunRecord:
    """Go on with the run in `run_dir` from its last saved training state, in the same folder.

    `changes` are the options given with `--resume`: they must equal the run's recipe, except
    `epochs`, which may grow (the schedule is stretched to the new length), and RESUME_FREE_FIELDS.
    Resumed on the same machine and software, the run ends with the weights and metrics an
    uninterrupted run would have (tests/test_resume.py checks it bit for bit).
    """
    console = console or Console(stderr=True)
    record = results.read_record(run_dir)
    config = resumed_config(record, changes or {})
    state = record.run_dir / STATE
    if not state.exists():
        why = (
            f"its record says {record.epochs_completed} epochs completed, but the file is not "
            "there (deleted, left behind when the folder was copied, or never written by an older "
            "zoo)"
            if record.epochs_completed
            else "no epoch completed, or it was written by an older zoo"
        )
        raise ZooError(
            f"{record.run_dir} has no training state ({STATE}): {why}; start a new run instead."
        )
    done = read_state_progress(state)["epoch"]
    if done >= config.epochs and record.status == "completed":
        raise ZooError(
            f"{record.run_dir} already trained its {config.epochs} epochs; pass --epochs "
            f"{config.epochs + 5} (or any number above {config.epochs}) to train it longer."
        )
    if ranks.is_main:
        console.print(
            f"Resuming {record.run_dir} ({record.status}) from the end of epoch {done} of "
            f"{config.epochs}.",
            highlight=False,
            soft_wrap=True,
        )
    setup = prepare(config, record.task, console, ranks)
    record.config, record.status, record.message = setup.config, "running", ""
    record.checkpoint = record.val = record.test = None  # evaluated again at the end
    record.resumed = [*record.resumed, done]
    return run(record, setup, [ResumeFrom(state), *callbacks], console, ranks)


def train_or_resume(
    model: str | None, resume: Path | None, options: dict, given: dict, console: Console
) -> tuple[results.RunRecord, bool]:
    """What `zoo train` runs in this process (one of a torchrun job's, or the only one): a new
    run of `model` with `options`, or the run folder `resume` with the `given` changes. Returns
    the record and whether this process is rank 0 (the one that reports)."""
    ranks = Ranks.from_environment(resolve_device(options["device"]).type)
    try:
        if resume is not None:
            changes = given | ({"model": model} if model is not None else {})
            record = resume_run(resume, changes=changes, console=console, ranks=ranks)
        else:
            config = TrainConfig(model=model, **options)
            record = train_run(config, console=console, ranks=ranks)
    finally:
        ranks.shutdown()
    return record, ranks.is_main


def train_seeds(
    model: str | None,
    resume: Path | None,
    options: dict,
    given: dict,
    *,
    seeds: str | None,
    nproc: int | None,
    console: Console,
    report: Callable[[results.RunRecord, bool], int],
) -> int:
    """`zoo train`'s runs: one, or one per seed of `seeds` ("0,1,2"), each in this process or
    as a torchrun job of `nproc` processes. `report(record, is_main)` shows a run done in this
    process and returns its exit status; the worst status is returned for the shell."""
    if seeds is not None and ("seed" in given or resume is not None):
        raise ZooError("--seeds runs one run per seed: drop --seed and --resume with it.")
    codes = []
    for seed in [None] if seeds is None else parse_seeds(seeds):
        if seed is not None:
            options, given = {**options, "seed": seed}, {**given, "seed": seed}
        if nproc is not None and nproc > 1:
            again = [model] * bool(model) + ["--resume", str(resume)] * bool(resume)
            codes.append(launch(nproc, ["train", *again, *to_flags(given)]))
        else:
            codes.append(report(*train_or_resume(model, resume, options, given, console)))
    return max(codes, key=lambda code: (code != 0, code))


def resumed_config(record: results.RunRecord, changes: dict) -> TrainConfig:
    """The run's recipe with the allowed `changes`; a sentence naming any other difference."""
    config = record.config
    asked = TrainConfig.from_dict({**config.to_dict(), **changes})
    differing = [
        name for name in config.differences(asked) if name not in ("epochs", *RESUME_FREE_FIELDS)
    ]
    if differing:
        given = ", ".join(
            f"--{name.replace('_', '-')} {getattr(asked, name)!s} (the run has "
            f"{getattr(config, name)!s})"
            for name in differing
        )
        raise ZooError(
            f"--resume goes on with the run's own recipe, but {given} differ; drop them, or "
            "start a new run with `zoo train` for another recipe."
        )
    if asked.epochs < config.epochs:
        raise ZooError(
            f"--epochs {asked.epochs} is fewer than the run's {config.epochs}; --resume can "
            "only train longer (evaluate an earlier checkpoint with `zoo eval` instead)."
        )
    free = {name: getattr(asked, name) for name in RESUME_FREE_FIELDS}
    return dataclasses.replace(config, epochs=asked.epochs, **free)


def run(
    record: results.RunRecord,
    setup: Setup,
    callbacks: list[Callback],
    console: Console,
    ranks: Ranks,
) -> results.RunRecord:
    """The loop and the end of a run, with the run folder locked and written on rank 0, and
    mirrored into the recipe's loggers (zoo/loggers.py), which see the final record last."""
    loggers = make_loggers(record) if ranks.is_main else []
    with contextlib.ExitStack() as stack:
        stack.enter_context(sigterm_as_ctrl_c())
        stack.enter_context(reporting(console if ranks.is_main else None))
        if setup.config.compile:
            stack.enter_context(compile_failures_explained(setup.config.model))
        if ranks.is_main:
            stack.enter_context(results.RunLock(record.run_dir))
            results.write_config(record)  # a resumed run's epochs may have grown
            results.write_metrics(record)
            announce(record, setup, console, ranks)
            callbacks = [*callbacks, ConsoleProgress(console), RunWriter(record), *loggers]
        loop = fit(
            setup.config, setup.model, setup.data, device=setup.device,
            precision=setup.precision, callbacks=callbacks, ranks=ranks,
        )  # fmt: skip
        try:
            return finish(record, loop, setup, ranks)
        finally:
            for logger in loggers:
                logger.close(record)


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (`kill`, a batch scheduler's stop) ends a run as Ctrl-C does: the record says
    "interrupted" and the last epoch's checkpoints stay, instead of a record left "running"."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def announce(record: results.RunRecord, setup: Setup, console: Console, ranks: Ranks) -> None:
    config, data = setup.config, setup.data
    if data.skipped:
        warn(
            console,
            f"left out {len(data.skipped)} bad samples (listed in "
            f"{record.run_dir / results.METRICS}), e.g. {data.skipped[0]}",
        )
    processes = f", {ranks.world_size} processes" if ranks.distributed else ""
    console.print(
        f"Training [bold]{config.model}[/bold] on {config.dataset} ({len(data.train)} train / "
        f"{len(data.val)} val / {len(data.test)} test) on {record.environment['device_name']} "
        f"({setup.device}), {setup.precision.label}{processes} -> {record.run_dir}",
        highlight=False,
        soft_wrap=True,
    )


def finish(record: results.RunRecord, loop: Loop, setup: Setup, ranks: Ranks) -> results.RunRecord:
    """After the loop: evaluate a completed run's best checkpoint and draw its figures (rank
    0), or say in the record what stopped it and how to evaluate what was kept."""
    from zoo import plots

    record.status, record.message = loop.status, status_message(loop, record)
    if not ranks.is_main:
        return record
    run_dir = record.run_dir
    if loop.status == "completed":
        try:
            model = loop.trainer.model
            load_weights(model, run_dir / BEST, record.model, what="Checkpoint")
            test_predictions = score_run(
                record, model, setup.data, device=setup.device, precision=setup.precision,
                checkpoint=BEST,
            )  # fmt: skip
            test_split = setup.data.test.to(torch.device("cpu"))  # a no-op unless on a GPU
            plots.save_run_figures(record, model, test_split, test_predictions)
            results.write_metrics(record)
            return record
        except KeyboardInterrupt:
            record.status = "interrupted"
            record.message = "Interrupted (Ctrl-C or SIGTERM) during the final evaluation."
    if (run_dir / BEST).exists():
        record.message += f" Run `zoo eval {run_dir}` to evaluate the best checkpoint so far."
    elif (run_dir / LAST).exists():
        record.message += (
            f" Run `zoo eval {run_dir} --checkpoint last` to evaluate the saved weights."
        )
    if (run_dir / STATE).exists() and loop.status == "interrupted":
        record.message += f" `zoo train --resume {run_dir}` goes on from the last saved epoch."
    results.write_metrics(record)
    return record


def status_message(loop: Loop, record: results.RunRecord) -> str:
    """What happened, in a sentence or two, for a run that did not simply complete."""
    last = record.run_dir / LAST if record.run_dir else LAST
    if loop.status == "interrupted" and loop.interrupted_at:
        return (
            f"Interrupted by {loop.interrupted_by} at {loop.interrupted_at}; weights saved to "
            f"{last}."
        )
    if loop.status == "interrupted":
        return "Interrupted by Ctrl-C; the last complete epoch's weights are kept."
    if loop.status == "diverged":
        kept = (
            f"the last good checkpoint {last} is kept"
            if loop.history
            else "no epoch completed, so no checkpoint was written"
        )
        return f"Training stopped: {loop.reason}; {kept}. Try a lower --lr."
    return loop.reason  # completed: "", or why a callback stopped it early
