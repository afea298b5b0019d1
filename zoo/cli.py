"""The `zoo` command line: thin Typer commands that parse options and call zoo's functions."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from zoo.errors import ZooError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="zoo: train, evaluate and compare small-image vision models.",
)
out = Console()
err = Console(stderr=True)
DATA_DIR_HELP = "Data root; default: $ZOO_DATA, else ~/.cache/zoo/data."


class Optimizer(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Schedule(str, Enum):
    cosine = "cosine"
    onecycle = "onecycle"
    none = "none"


class AmpDtype(str, Enum):
    float16 = "float16"
    bfloat16 = "bfloat16"


class TaskName(str, Enum):
    classification = "classification"
    segmentation = "segmentation"


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


@app.command()
@user_errors
def train(
    model: Annotated[
        str, typer.Argument(help="Registry name, e.g. baseline-cnn (see `zoo list`).")
    ],
    dataset: Annotated[str | None, typer.Option(help="Dataset name; default: the model's.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 15,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per optimizer step; default 128, segmentation 8.")
    ] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay.")] = 0.0,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimizer.")] = Optimizer.adam,
    schedule: Annotated[
        Schedule, typer.Option(help="Learning-rate schedule, per step.")
    ] = Schedule.cosine,
    seed: Annotated[int, typer.Option(help="Seed for init, shuffling and augmentation.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[
        bool, typer.Option(help="Mixed precision (CUDA, or CPU with native bf16).")
    ] = False,
    amp_dtype: Annotated[AmpDtype, typer.Option(help="Autocast dtype.")] = AmpDtype.float16,
    channels_last: Annotated[bool, typer.Option(help="NHWC memory format.")] = True,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    augment: Annotated[
        bool,
        typer.Option(
            help="Augment training batches: random crop + flip (classification); flip, random "
            "scale/crop and brightness/contrast on photo and mask together (segmentation)."
        ),
    ] = False,
    augment_scale: Annotated[
        float,
        typer.Option(help="Segmentation --augment: smallest random crop, as a share of the area."),
    ] = 0.5,
    augment_color: Annotated[
        float, typer.Option(help="Segmentation --augment: brightness/contrast limit (0 = off).")
    ] = 0.2,
    crop_size: Annotated[
        int | None,
        typer.Option(
            help="Segmentation: train on random CROP_SIZE x CROP_SIZE crops at the images' own "
            "scale (after --augment); evaluation always sees whole images."
        ),
    ] = None,
    limit_train: Annotated[
        int | None, typer.Option(help="Train on N images of the (shuffled) training split only.")
    ] = None,
    val_fraction: Annotated[float, typer.Option(help="Share of train held out for val.")] = 0.1,
    split_seed: Annotated[int, typer.Option(help="Seed of the val split (not of training).")] = 0,
    eval_batch_size: Annotated[
        int | None, typer.Option(help="Images per evaluation batch; default 1024, segm. 16.")
    ] = None,
    label_smoothing: Annotated[float, typer.Option(help="Cross-entropy label smoothing.")] = 0.0,
    skip_bad_samples: Annotated[
        bool,
        typer.Option(
            "--skip-bad-samples",
            help="Leave out unusable image/mask files (listed in the run record) instead of "
            "stopping.",
        ),
    ] = False,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where run folders go.")] = Path("results"),
    pretrained: Annotated[
        bool, typer.Option(help="Start from timm/smp ImageNet weights in the local hub cache.")
    ] = False,
    weights: Annotated[
        Path | None, typer.Option(help="Start from this safetensors state dict (any model).")
    ] = None,
):
    """Train MODEL and write its run record: config, history, metrics, figures, checkpoints."""
    from zoo.config import TrainConfig
    from zoo.train import fit

    config = TrainConfig(
        model=model,
        dataset=dataset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer.value,
        schedule=schedule.value,
        seed=seed,
        device=device,
        amp=amp,
        amp_dtype=amp_dtype.value,
        channels_last=channels_last,
        compile=compile,
        augment=augment,
        augment_scale=augment_scale,
        augment_color=augment_color,
        crop_size=crop_size,
        limit_train=limit_train,
        val_fraction=val_fraction,
        split_seed=split_seed,
        eval_batch_size=eval_batch_size,
        label_smoothing=label_smoothing,
        skip_bad=skip_bad_samples,
        data_dir=str(data_dir) if data_dir else None,
        out=str(out_dir),
        pretrained=pretrained,
        weights=str(weights) if weights else None,
    )
    result = fit(config, console=err)
    if result.status != "completed":
        err.print(f"[red]{result.message}[/red]", highlight=False, soft_wrap=True)
        raise typer.Exit(130 if result.status == "interrupted" else 1)
    print_metrics(result.metrics)
    out.print(f"Run record: {result.run_dir}")


@app.command("eval")
@user_errors
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zoo train`.")],
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    device: Annotated[str | None, typer.Option(help="Default: the run's device setting.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
):
    """Evaluate a run's checkpoint on val and test; rewrite metrics.json and the figures."""
    from zoo.train import evaluate_run, resolve_device

    if checkpoint not in ("best", "last"):
        raise ZooError(f"--checkpoint must be best or last, got {checkpoint!r}.")
    record = evaluate_run(
        run_dir,
        checkpoint=f"{checkpoint}.safetensors",
        device=resolve_device(device) if device else None,
        data_dir=str(data_dir) if data_dir else None,
        console=err,
    )
    print_metrics(record)


@app.command()
@user_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zoo train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files to predict.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where masks go; default RUN_DIR/predictions.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    top_k: Annotated[int, typer.Option(help="Classes shown per image (classification).")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
):
    """Predict IMAGES with a run's checkpoint: top-k classes, or a colour-coded mask + overlay."""
    from zoo.predict import predict_files
    from zoo.train import resolve_device

    if checkpoint not in ("best", "last"):
        raise ZooError(f"--checkpoint must be best or last, got {checkpoint!r}.")
    predictions, errors = predict_files(
        run_dir,
        images,
        out_dir=out_dir,
        checkpoint=f"{checkpoint}.safetensors",
        device=resolve_device(device),
        top_k=top_k,
    )
    for prediction in predictions:
        if prediction.mask is not None:
            out.print(f"{prediction.image}: {prediction.mask}, {prediction.overlay}")
        else:
            top = ", ".join(f"{name} {p:.3f}" for name, p in prediction.top_classes)
            out.print(f"{prediction.image}: {top}", highlight=False)
    for error in errors:
        err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(1)


@app.command("list")
@user_errors
def list_(
    pattern: Annotated[
        str, typer.Argument(help="Shell-style filter, e.g. 'unet*'; plain words match anywhere.")
    ] = "*",
    task: Annotated[TaskName | None, typer.Option(help="Only this task.")] = None,
):
    """List the registered models."""
    import torch

    from zoo.registry import create_model, get_model_entry, list_models

    if not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    table = Table()
    for column in ("name", "task", "default dataset"):  # never cut a name short
        table.add_column(column, no_wrap=True)
    table.add_column("parameters", no_wrap=True, justify="right")
    table.add_column("description")
    for name in list_models(pattern, task.value if task else None):
        entry = get_model_entry(name)
        with torch.device("meta"):  # shapes only: no memory, no init time
            count = sum(p.numel() for p in create_model(name).parameters())
        table.add_row(name, entry.task, entry.dataset, f"{count:,}", entry.description)
    out.print(table)


@app.command()
@user_errors
def datasets():
    """List the registered datasets."""
    from zoo.data import get_dataset_info, list_datasets

    table = Table("name", "task", "classes", "input", "description")
    for name in list_datasets():
        info = get_dataset_info(name)
        size = f"{info.in_chans}x{info.image_size[0]}x{info.image_size[1]}"
        table.add_row(name, info.task, str(info.num_classes), size, info.description)
    out.print(table)


@app.command()
@user_errors
def summary(
    model: Annotated[str, typer.Argument(help="Registry name (see `zoo list`).")],
    batch_size: Annotated[int, typer.Option(help="Batch size of the summary's input.")] = 1,
    input_size: Annotated[
        int | None, typer.Option(help="Square input side; default: the dataset's.")
    ] = None,
    depth: Annotated[int, typer.Option(help="Nesting depth of the layer table.")] = 3,
):
    """Layer table with output shapes, parameter counts and memory sizes (torchinfo)."""
    import torchinfo

    from zoo.data import get_dataset_info
    from zoo.registry import create_model, get_model_entry

    info = get_dataset_info(get_model_entry(model).dataset)
    height, width = (input_size, input_size) if input_size else info.image_size
    stats = torchinfo.summary(
        create_model(model),
        input_size=(batch_size, info.in_chans, height, width),
        col_names=("output_size", "num_params"),
        depth=depth,
        verbose=0,
    )
    out.print(str(stats), highlight=False)


def format_score(value: float | None, digits: int = 3) -> str:
    """A score for a table; None is a score undefined on that split (e.g. AP of an absent class)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


# What the metrics table shows per task: per-class (key, column label) pairs, then the overall keys.
TABLE_COLUMNS = {
    "classification": ((("accuracy", "acc"), ("ap", "AP")), ("accuracy", "mean_ap")),
    "segmentation": (
        (("ap", "AP"), ("iou", "IoU"), ("accuracy", "acc")),
        ("mean_ap", "mean_iou", "pixel_accuracy"),
    ),
}


def print_metrics(record: dict) -> None:
    """Per-class table (val and test) plus the overall figures of a run, with the task's columns."""
    per_class, overall = TABLE_COLUMNS[record.get("task", "classification")]
    splits = ("val", "test")
    table = Table(title=f"{record['model']} on {record['dataset']} ({record.get('checkpoint')})")
    table.add_column("class")
    for split in splits:
        for _, label in per_class:
            table.add_column(f"{split} {label}", justify="right")
    for name in record["class_names"]:
        scores = [record[s]["per_class"][name][key] for s in splits for key, _ in per_class]
        table.add_row(name, *map(format_score, scores))
    table.add_section()
    table.add_row(
        "[bold]overall", *(format_score(record[s][k], 4) for s in splits for k in overall)
    )
    out.print(table)
    if record["test"].get("ap_method", "exact") != "exact":
        out.print(f"AP computed from {record['test']['ap_method']}, not exactly.")
    if record.get("skipped_samples"):
        out.print(f"{len(record['skipped_samples'])} bad samples were left out (see metrics.json).")
