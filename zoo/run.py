"""A training run: the run folder around the loop. What `zoo train` calls, one trial of a sweep.

    train_run(config)
        check the recipe, the output folder and the data -> build the seeded model
        -> run record (config.json, metrics.json: running) -> fit(callbacks: console, writer)
        -> best checkpoint on val and test -> figures -> metrics.json: completed

Everything a user can get wrong is checked before the run folder exists. The loop (zoo/train.py)
touches no file; the RunWriter callback and this module write the record, on rank 0 only.
"""

from __future__ import annotations

import torch
from rich.console import Console

from zoo import results
from zoo.callbacks import ConsoleProgress, RunWriter
from zoo.checkpoint import BEST, LAST, load_weights
from zoo.config import TrainConfig
from zoo.data.splits import Splits, load_dataset
from zoo.distributed import ONE_PROCESS, Ranks
from zoo.errors import ZooError
from zoo.evaluate import score_run
from zoo.registry import create_model, get_model_entry
from zoo.runtime import Precision, place_model, resolve_device, resolve_precision
from zoo.train import Callback, Loop, fit


def warn(console: Console, message: str) -> None:
    console.print(f"[yellow]Warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def check_recipe(config: TrainConfig, data: Splits, task: str, ranks: Ranks) -> None:
    """What can only be checked once the data is known; one sentence each, before any work."""
    if data.info.task != task:
        raise ZooError(
            f"{config.model} is a {task} model but {config.dataset} is a {data.info.task} "
            f"dataset; pick a {task} dataset (`zoo datasets`)."
        )
    side = min(data.train.images.shape[-2:])
    if config.crop_size is not None and config.crop_size > side:
        raise ZooError(
            f"--crop-size {config.crop_size} is larger than {config.dataset}'s {side}-pixel "
            f"training images; pass --crop-size {side} or less."
        )
    if config.batch_size % ranks.world_size:
        raise ZooError(
            f"--batch-size {config.batch_size} does not split evenly over {ranks.world_size} "
            f"processes; pass a multiple of {ranks.world_size}."
        )


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
    device = resolve_device(config.device)
    if device.type == "cuda" and ranks.distributed:
        device = torch.device("cuda", ranks.local_rank)
    precision = resolve_precision(device, config.amp, config.amp_dtype)
    if precision.warning and ranks.is_main:
        warn(console, precision.warning)
    data = load_dataset(
        config.dataset,
        config.data_dir,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        limit_train=config.limit_train,
        skip_bad=config.skip_bad_samples,
    )
    check_recipe(config, data, entry.task, ranks)
    if device.type == "cuda":
        data = data.to(device)
    torch.manual_seed(config.seed)
    model = create_model(
        config.model,
        num_classes=data.info.num_classes,
        in_chans=data.info.in_chans,
        pretrained=config.pretrained,
        weights=config.weights,
    )
    place_model(model, device, config.channels_last)

    record = results.RunRecord(
        config=config,
        task=entry.task,
        precision=precision.label,
        environment=results.environment(device),
        num_parameters=sum(p.numel() for p in model.parameters()),
        class_names=list(data.info.class_names),
        skipped_samples=list(data.skipped),
        tags=dict(tags or {}),
    )
    if ranks.distributed:
        record.distributed = {
            "world_size": ranks.world_size,
            "batch_size_per_process": config.batch_size // ranks.world_size,
            "backend": ranks.backend,
        }
    around = list(callbacks)
    if ranks.is_main:
        record.run_dir = results.new_run_dir(config.out, config.dataset, config.model)
        results.write_config(record)
        results.write_metrics(record)
        if data.skipped:
            warn(
                console,
                f"left out {len(data.skipped)} bad samples (listed in "
                f"{record.run_dir / results.METRICS}), e.g. {data.skipped[0]}",
            )
        console.print(
            f"Training [bold]{config.model}[/bold] on {config.dataset} ({len(data.train)} train "
            f"/ {len(data.val)} val / {len(data.test)} test) on "
            f"{record.environment['device_name']} ({device}), {precision.label}"
            + (f", {ranks.world_size} processes" if ranks.distributed else "")
            + f" -> {record.run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        around = [ConsoleProgress(console), RunWriter(record), *around]

    loop = fit(
        config, model, data, device=device, precision=precision, callbacks=around, ranks=ranks
    )
    return finish(record, loop, data, device=device, precision=precision, ranks=ranks)


def finish(
    record: results.RunRecord,
    loop: Loop,
    data: Splits,
    *,
    device: torch.device,
    precision: Precision,
    ranks: Ranks,
) -> results.RunRecord:
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
                record, model, data, device=device, precision=precision, checkpoint=BEST
            )
            plots.save_run_figures(
                record, model, data.test.to(torch.device("cpu")), test_predictions
            )
            results.write_metrics(record)
            return record
        except KeyboardInterrupt:
            record.status = "interrupted"
            record.message = "Interrupted by Ctrl-C during the final evaluation."
    if (run_dir / BEST).exists():
        record.message += f" Run `zoo eval {run_dir}` to evaluate the best checkpoint so far."
    elif (run_dir / LAST).exists():
        record.message += (
            f" Run `zoo eval {run_dir} --checkpoint last` to evaluate the saved weights."
        )
    results.write_metrics(record)
    return record


def status_message(loop: Loop, record: results.RunRecord) -> str:
    """What happened, in a sentence or two, for a run that did not simply complete."""
    last = record.run_dir / LAST if record.run_dir else LAST
    if loop.status == "interrupted" and loop.interrupted_at:
        return f"Interrupted by Ctrl-C at {loop.interrupted_at}; weights saved to {last}."
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
