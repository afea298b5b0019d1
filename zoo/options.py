"""The arguments and options of `zoo`'s commands that zoo/cli.py names rather than spells out:
the choices (Enums), the ones several commands share, then per command those whose declaration
runs over several lines. Also the group that lets a default subcommand go unnamed, and the small
conversions from parsed options to what the modules take. Torch-free, like zoo/cli.py."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from zoo.config import Task
from zoo.errors import ZooError


def choices(name: str, *values: str) -> type[Enum]:
    """An Enum of an option's choices, each member named and valued as typed."""
    return Enum(name, {value: value for value in values}, type=str)


Checkpoint = choices("Checkpoint", "best", "last")
RowFormat = choices("RowFormat", "table", "csv", "json")
# "all" and zoo.explain.METHODS (a test keeps them equal)
ExplainMethod = choices("ExplainMethod", "all", "saliency", "integrated-gradients", "gradcam",
                        "activation-max", "confused")  # fmt: skip
CompareFormat = choices("CompareFormat", "table", "markdown", "csv", "html")
StorageDtype = choices("StorageDtype", "auto", "float32", "float16")
ExportFormat = choices("ExportFormat", "onnx", "pt2", "hub")

# Shared by several commands
SourceArgument = Annotated[
    str,
    typer.Argument(
        help="A run folder written by `zoo train`, or a model name with published weights "
        "(e.g. fcn, unet:cmp-facade; see `zoo weights`)."
    ),
]
CheckpointOption = Annotated[
    Checkpoint | None, typer.Option(help="A run folder's best or last checkpoint; default best.")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Data root; default: $ZOO_DATA, else ~/.cache/zoo/data.")
]
TaskOption = Annotated[Task | None, typer.Option(help="Only this task.")]
FormatOption = Annotated[RowFormat, typer.Option(help="table, or csv/json for scripts.")]
PatternArgument = Annotated[
    str, typer.Argument(help="Shell-style filter, e.g. 'unet*'; plain words match anywhere.")
]
StorageOption = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL; default: sqlite file under OUT/sweeps/STUDY/.")
]


# zoo train (its recipe options come from TrainConfig)
TrainModelArgument = Annotated[
    str | None, typer.Argument(help="Registry name, e.g. baseline-cnn (see `zoo list`).")
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        help="Go on with this run folder from its last saved epoch, with its own recipe "
        "(--epochs may grow)."
    ),
]
NprocOption = Annotated[
    int | None,
    typer.Option(help="Train with N processes on this machine (torchrun; gloo on CPU)."),
]
SeedsOption = Annotated[
    str | None,
    typer.Option(help="Comma-separated seeds: the same recipe once per seed (e.g. 0,1,2)."),
]
RecipeFileOption = Annotated[
    Path | None,
    typer.Option(help="Recipe file (YAML/JSON, or a run's config.json); options override."),
]
PrintConfigOption = Annotated[
    bool, typer.Option("--print-config", help="Print the resolved recipe as YAML; no run.")
]

# zoo eval
EvalDeviceOption = Annotated[
    str | None,
    typer.Option(help="Default: the run's device setting; published weights: the CPU."),
]

# zoo predict
PredictOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", help="Where masks go; default RUN_DIR/predictions (published: predictions/)."
    ),
]

# zoo summary
InputSizeOption = Annotated[
    int | None, typer.Option(help="Square input side; default: the dataset's.")
]

# zoo sweep show
SweepOutOption = Annotated[
    Path, typer.Option("--out", help="The results folder the sweep wrote to.")
]

# zoo compare
CompareFormatOption = Annotated[CompareFormat, typer.Option(help="Output format.")]
ResultsDirArgument = Annotated[
    Path, typer.Argument(help="A folder of run records and bench files.")
]
CompareOutOption = Annotated[
    Path | None, typer.Option("--out", help="Write here instead of stdout (html: required).")
]
PerRunOption = Annotated[
    bool, typer.Option(help="One row per run (folder, seed, commit) instead of per recipe.")
]
PerClassOption = Annotated[
    str,
    typer.Option(help="Markdown: the per-class tables, all, none or a list (e.g. ap,iou)."),
]
BenchRowsOption = Annotated[
    bool,
    typer.Option(
        "--bench",
        help="The bench rows instead: per device, each model's images/s in every precision "
        "measured and the speed-up over fp32.",
    ),
]
RefreshOption = Annotated[
    list[Path] | None,
    typer.Option(help="Regenerate the `<!-- zoo compare ARGS -->` tables in this file."),
]

# zoo explain
MethodOption = Annotated[ExplainMethod, typer.Option(help="What to draw.")]
ExplainImagesArgument = Annotated[
    list[Path] | None,
    typer.Argument(help="Images to explain; default: the test examples of the run's figures."),
]
LayerOption = Annotated[
    str | None,
    typer.Option(help="Conv layer for Grad-CAM and channel images; default: the last conv."),
]
TargetOption = Annotated[
    str | None,
    typer.Option(
        help="Class (name or index) to explain; default: the predicted one (segmentation: "
        "the class with the lowest test AP)."
    ),
]
ExplainOutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Where figures go; default RUN_DIR/figures/explain (published: explain/MODEL).",
    ),
]
StepsOption = Annotated[int, typer.Option(min=1, help="Gradient-ascent steps of activation-max.")]

# zoo bench
BenchModelsArgument = Annotated[
    list[str] | None, typer.Argument(help="Registry names; or --all.", show_default=False)
]
BenchOutOption = Annotated[
    Path, typer.Option("--out", help="Bench files' folder (rows merge into existing files).")
]

# zoo weights list
AllVersionsOption = Annotated[
    bool, typer.Option("--all-versions", help="Every version, not only the newest.")
]

# zoo weights publish
DtypeOption = Annotated[
    StorageDtype,
    typer.Option(
        help="auto: float16 when its test scores are within 0.001 of float32's, else float32."
    ),
]
FileOption = Annotated[
    bool,
    typer.Option(
        help="--no-file lists the version with its recipe and metrics only (a run whose "
        "checkpoints were not kept: the test metrics its own evaluation recorded)."
    ),
]
PublishToOption = Annotated[
    Path | None, typer.Option(help="Published-weights folder; default zoo/published/.")
]

# zoo export
ExportFormatOption = Annotated[
    ExportFormat,
    typer.Option(help="onnx, pt2 (torch.export: C++, mobile) or hub (Hugging Face folder)."),
]
PushOption = Annotated[
    str | None,
    typer.Option(help="With --format hub: upload the folder to this Hub repo (needs a token)."),
]


class DefaultCommandGroup(typer.core.TyperGroup):
    """A group whose `default` subcommand may go unnamed: `zoo sweep MODEL ...` is `zoo sweep
    run MODEL ...` and `zoo weights [PATTERN]` is `zoo weights list ...`, while a named
    subcommand (`zoo sweep show STUDY`) is itself."""

    default = ""

    def parse_args(self, context, args):
        if (args or not self.no_args_is_help) and (
            not args or args[0] not in (*self.commands, "--help", "-h")
        ):
            args = [self.default, *args]
        return super().parse_args(context, args)


class SweepGroup(DefaultCommandGroup):
    default = "run"


class WeightsGroup(DefaultCommandGroup):
    default = "list"


def checkpoint_file(checkpoint: Checkpoint | None) -> str | None:
    return f"{checkpoint.value}.safetensors" if checkpoint else None


def text_or_none(path: Path | None) -> str | None:
    return str(path) if path else None


def anywhere(pattern: str) -> str:
    """A plain word matches anywhere in a name; a pattern with * ? [ is used as it is."""
    return pattern if any(char in pattern for char in "*?[") else f"*{pattern}*"


def given_options(context: typer.Context, options: dict) -> dict:
    """The options typed on the command line (not left at their defaults)."""
    return {
        name: value
        for name, value in options.items()
        if context.get_parameter_source(name).name == "COMMANDLINE"
    }


def parse_command(app: typer.Typer, name: str, args: list[str]) -> dict:
    """`zoo NAME ARGS` parsed by that command's own options: its parameters by name, or a
    ZooError naming what does not parse."""
    group = typer.main.get_command(app)
    command = group.get_command(typer.Context(group), name)
    try:
        return command.make_context(f"zoo {name}", list(args)).params
    except typer.BadParameter.__base__ as error:  # click's UsageError, whichever click Typer uses
        raise ZooError(f"`zoo {name} {' '.join(args)}`: {error.format_message()}") from None
