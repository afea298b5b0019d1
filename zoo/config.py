"""The training recipe: one frozen dataclass, one line per field.

`zoo train` has one option per field, with the field's name and help (`config_options` builds
them from this class, and the options of bench, sweep and compare from theirs), so the two
cannot drift apart. Constructing a config only checks values; the
model's defaults (dataset, batch sizes) are filled in by `resolve`, which returns a new config.

The command-line spelling of a recipe lives here once: `to_flags` writes values as `zoo train`
flags (for relaunched processes, compare's recipe column and the sweep's best command), and
`parse_value` reads one flag's text back as its field's type (for the sweep's ranges).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path

from zoo.errors import ZooError
from zoo.registry import get_model_entry


class Task(str, Enum):
    classification = "classification"
    segmentation = "segmentation"


class Optimizer(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Schedule(str, Enum):
    cosine = "cosine"
    onecycle = "onecycle"
    none = "none"


class DataMode(str, Enum):
    auto = "auto"
    memory = "memory"
    stream = "stream"


class AmpDtype(str, Enum):
    float16 = "float16"
    bfloat16 = "bfloat16"


# Batch sizes when left unset, by the model's task: 28x28 classification batches are cheap,
# 256x256 segmentation batches are not (unet-small: ~1 s per 8 images on a 2-core CPU).
TASK_DEFAULTS = {
    "classification": {"batch_size": 128, "eval_batch_size": 1024},
    "segmentation": {"batch_size": 8, "eval_batch_size": 16},
}


def default_eval_batch(task: str, side: int | None) -> int:
    """Images per evaluation pass when --eval-batch-size is not given: TASK_DEFAULTS' 1024 for
    classification up to 28x28, and for larger images as many as hold the same pixels, at
    least 32 (224 px: 32; at 1024 a 224-px baseline-cnn pass took over 10 GB); segmentation 16
    up to 256x256, and above it as many as hold the same pixels, at least 1."""
    base = TASK_DEFAULTS[task]["eval_batch_size"]
    if task == "segmentation" and side is not None and side > 256:
        return max(1, base * 256 * 256 // (side * side))
    if task != "classification" or side is None or side <= 28:
        return base
    return max(32, base * 28 * 28 // (side * side))


# Old run records -> today's names. `pretrained` meant ImageNet weights; now that zoo's own
# published weights are `zoo.create_model(name, pretrained=True)`, the recipe says `imagenet`.
RENAMED_FIELDS = {"skip_bad": "skip_bad_samples", "pretrained": "imagenet"}
# Where a run is also reported, not how it trains: left out of recipe comparisons and may change
# on --resume.
TRACKING_FIELDS = ("logger", "log_weights")


# `--logger` names: zoo.loggers.LOGGERS has a class for each (None for csv, the run folder).
LOGGER_NAMES = ("csv", "tensorboard", "mlflow")


def option(default, help: str, **limits):
    """A field with a default and the help text of its command-line option; `limits` go to the
    option as they are (`min=1`; `choices=AnEnum` for a field that holds the enum's value)."""
    return field(default=default, metadata={"help": help, **limits})


def plain_choices(options) -> None:
    """In a frozen dataclass of options, each `choices` field's value becomes its enum's plain
    string (the enum or its string given; JSON and f-strings then read the same), or a ZooError
    naming the choices."""
    for each in fields(options):
        kind, value = each.metadata.get("choices"), getattr(options, each.name)
        if kind is None or value is None:
            continue
        try:
            object.__setattr__(options, each.name, kind(value).value)
        except ValueError:
            valid = ", ".join(member.value for member in kind)
            raise ZooError(f"Unknown {flag(each.name)} {value!r}; choose one of {valid}.") from None


@dataclass(frozen=True)
class TrainConfig:
    model: str = field(metadata={"help": "Registry name, e.g. baseline-cnn (see `zoo list`)."})
    dataset: str | None = option(None, "Dataset name; default: the model's (see `zoo datasets`).")
    epochs: int = option(15, "Passes over the training split.")
    batch_size: int | None = option(None, "Images per optimizer step; default 128, segm. 8.")
    lr: float = option(1e-3, "Peak learning rate.")
    weight_decay: float = option(0.0, "Weight decay: L2 for adam and sgd, decoupled for adamw.")
    optimizer: Optimizer = option(Optimizer.adam, "sgd uses Nesterov momentum 0.9.")
    schedule: Schedule = option(Schedule.cosine, "Learning-rate schedule, stepped every batch.")
    seed: int = option(0, "Seed of model init, shuffling and augmentation.")
    device: str = option("auto", "auto (CUDA when visible), cpu, cuda or cuda:N.")
    amp: bool = option(False, "Mixed precision (CUDA; CPU only with native bf16).")
    amp_dtype: AmpDtype = option(AmpDtype.float16, "Autocast dtype; float16 adds a GradScaler.")
    channels_last: bool = option(True, "NHWC memory format for the model and its inputs.")
    compile: bool = option(False, "torch.compile the model for training.")
    augment: bool = option(
        False,
        "Augment training batches: random crop + flip (classification; imagefolder: random "
        "resized crop + flip); flip, random scale/crop and brightness/contrast on photo and mask "
        "together (segmentation).",
    )
    augment_scale: float = option(0.5, "Segmentation --augment: smallest crop, share of the area.")
    augment_color: float = option(0.2, "Segmentation --augment: brightness/contrast limit (0=off).")
    img_size: int | None = option(
        None,
        "Side of the square samples: imagefolder: default the images' median shorter side, 8 to "
        "64; segmentation: the photos and masks are resized to it, default 256.",
    )
    crop_pct: float | None = option(
        None,
        "imagefolder: resize the shorter side to img_size / crop_pct, then centre-crop (timm's "
        "crop_pct); default 0.875; 1 keeps images already img_size square as they are.",
    )
    crop_size: int | None = option(
        None, "Segmentation: train on random CROP_SIZE x CROP_SIZE crops at the images' own scale."
    )
    val_fraction: float = option(0.1, "Share of the training set held out for validation.")
    split_seed: int = option(0, "Seed of the validation split only, so all runs share it.")
    limit_train: int | None = option(None, "Train on the first N training images only.")
    eval_batch_size: int | None = option(
        None, "Images per evaluation pass; default 1024 at 28 px (fewer when larger), segm. 16."
    )
    label_smoothing: float = option(0.0, "Cross-entropy label smoothing of the training loss.")
    skip_bad_samples: bool = option(
        False, "Leave out unusable image/mask files (listed in the run record) instead of stopping."
    )
    data_mode: DataMode = option(
        DataMode.auto,
        "imagefolder and segmentation: decode every image into memory once, or stream the "
        "files (decoded in worker processes each epoch); auto streams when the decoded images "
        "would take more than half the available memory.",
    )
    data_workers: int | None = option(
        None, "--data-mode stream: decoding processes; default: the CPU cores less one, at most 8."
    )
    sync_bn: bool = option(False, "Multi-process runs: synchronise BatchNorm statistics.")
    data_dir: str | None = option(None, "Data root; default: $ZOO_DATA, else ~/.cache/zoo/data.")
    out: str = option("results", "Where run folders go: OUT/<dataset>/<model>/<run-id>/.")
    imagenet: bool = option(False, "timm/smp: start from ImageNet weights in the local cache.")
    weights: str | None = option(None, "Start from this safetensors state dict (any model).")
    logger: tuple[str, ...] = option(
        ("csv",),
        "Where the run is also logged, repeatable: csv (the run folder only), tensorboard, mlflow "
        "(pip install zoo[tracking]).",
    )
    log_weights: bool = option(False, "--logger mlflow: upload the run's weights as artifacts.")

    def __post_init__(self) -> None:
        # Enum fields also accept their plain string values (as JSON and the Python API give them).
        for name, kind in (
            ("optimizer", Optimizer),
            ("schedule", Schedule),
            ("amp_dtype", AmpDtype),
            ("data_mode", DataMode),
        ):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, kind(value))
            except ValueError:
                choices = ", ".join(member.value for member in kind)
                raise ZooError(f"Unknown {name} {value!r}; choose one of {choices}.") from None
        if isinstance(self.logger, str):  # a sweep's text, a recipe file's single name
            object.__setattr__(self, "logger", tuple(self.logger.split(",")))
        object.__setattr__(self, "logger", tuple(name.strip() for name in self.logger))
        self.validate()

    def validate(self) -> None:
        """Reject a bad value before any work, each with one sentence naming the fix."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}."),
            (
                self.batch_size is None or self.batch_size >= 1,
                f"--batch-size must be at least 1, got {self.batch_size}.",
            ),
            (
                self.eval_batch_size is None or self.eval_batch_size >= 1,
                f"--eval-batch-size must be at least 1, got {self.eval_batch_size}.",
            ),
            (self.lr > 0, f"--lr must be greater than 0, got {self.lr}."),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}."),
            (
                0 < self.val_fraction < 1,
                f"--val-fraction must be in (0, 1), got {self.val_fraction}.",
            ),
            (
                self.limit_train is None or self.limit_train >= 1,
                f"--limit-train must be at least 1, got {self.limit_train}.",
            ),
            (
                0 < self.augment_scale <= 1,
                f"--augment-scale must be in (0, 1], got {self.augment_scale}.",
            ),
            (
                0 <= self.augment_color < 1,
                f"--augment-color must be in [0, 1), got {self.augment_color}.",
            ),
            (
                self.img_size is None or self.img_size >= 4,
                f"--img-size must be at least 4, got {self.img_size}.",
            ),
            (
                self.crop_pct is None or 0 < self.crop_pct <= 1,
                f"--crop-pct must be in (0, 1], got {self.crop_pct}.",
            ),
            (
                self.crop_size is None or self.crop_size >= 1,
                f"--crop-size must be at least 1, got {self.crop_size}.",
            ),
            (
                self.data_workers is None or self.data_workers >= 0,
                f"--data-workers must be 0 or more, got {self.data_workers}.",
            ),
            (
                0 <= self.label_smoothing < 1,
                f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ZooError(message)
        for name in self.logger:
            if name not in LOGGER_NAMES:
                close = difflib.get_close_matches(name, LOGGER_NAMES, n=2)
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                raise ZooError(
                    f"Unknown --logger {name!r}; {hint}choose from {', '.join(LOGGER_NAMES)} "
                    "(repeat --logger for several)."
                )

    def resolve(self, task: str, default_dataset: str) -> TrainConfig:
        """This recipe with the model's defaults filled in (a new config; this one is unchanged)."""
        if self.crop_size is not None and task != "segmentation":
            raise ZooError(
                f"--crop-size is for segmentation models and {self.model} classifies; drop it."
            )
        dataset = self.dataset or default_dataset
        # A folder's side is known only once it is read: run.prepare fills the batch in then.
        side_unknown = self.img_size is None and dataset.startswith("imagefolder:")
        return dataclasses.replace(
            self,
            dataset=dataset,
            batch_size=self.batch_size or TASK_DEFAULTS[task]["batch_size"],
            eval_batch_size=self.eval_batch_size
            or (None if side_unknown else default_eval_batch(task, self.img_size)),
        )

    def to_dict(self) -> dict:
        """Plain JSON values (enums as their strings, tuples as lists)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            name: value.value
            if isinstance(value, Enum)
            else list(value)
            if isinstance(value, tuple)
            else value
            for name, value in values.items()
        }

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from `to_dict` output or an older run record (renamed keys are mapped, keys
        this version does not know are ignored)."""
        values = {RENAMED_FIELDS.get(key, key): value for key, value in values.items()}
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of the fields whose values differ."""
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


def flag(name: str) -> str:
    """The `zoo train` option of field `name`: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def field_types() -> dict[str, type]:
    """TrainConfig field -> its value type (int, float, bool, str or an enum), None unwrapped
    (a repeatable field's, tuple[str, ...], is str: its values comma-separated)."""
    types = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        args = [a for a in typing.get_args(hint) if a not in (type(None), Ellipsis)]
        types[name] = args[0] if args else hint
    return types


def parse_value(name: str, kind: type, text: str):
    """One command-line value of field `name`, as its type (enums as their strings); a ZooError
    naming the option and what it takes otherwise."""
    text = text.strip()
    try:
        if kind is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if issubclass(kind, Enum):
            return kind(text).value
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        if kind is bool:
            valid = "true or false"
        elif issubclass(kind, Enum):
            valid = ", ".join(member.value for member in kind)
        else:
            valid = f"a{'n' if kind is int else ''} {kind.__name__}"
        raise ZooError(f"{flag(name)} got {text!r}; give {valid}.") from None


def to_flags(
    values: dict, *, against: dict | None = None, skip: tuple[str, ...] = (), digits: int = 0
) -> list[str]:
    """TrainConfig values as `zoo train` flags, in the order given: booleans as --x / --no-x,
    enums as their values, None left out. With `against` (e.g. the defaults' `to_dict()`), only
    the values that differ from it. `digits` > 0 rounds floats to that many significant digits
    for reading; 0 keeps them exact, for a command that must run the same recipe."""
    argv = []
    for name, value in values.items():
        if name in skip or value is None or (against is not None and value == against.get(name)):
            continue
        if isinstance(value, bool):
            argv.append(flag(name) if value else "--no-" + flag(name)[2:])
            continue
        if isinstance(value, tuple | list):  # a repeatable option
            argv += [part for item in value for part in (flag(name), str(item))]
            continue
        if isinstance(value, Enum):
            value = value.value
        text = f"{value:.{digits}g}" if digits and isinstance(value, float) else str(value)
        argv += [flag(name), text]
    return argv


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1,2` -> [0, 1, 2]: distinct integers, or a ZooError saying what to type."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ZooError(f"--seeds takes comma-separated integers (0,1,2), got {text!r}.") from None
    if not values or len(set(values)) != len(values):
        raise ZooError(f"--seeds needs distinct seeds, e.g. 0,1,2; got {text!r}.")
    return values


def train_arguments(
    model: str | None,
    options: dict,
    given: dict,
    *,
    recipe_file: Path | None = None,
    resume: Path | None = None,
    print_config: bool = False,
) -> tuple[str | None, dict, dict]:
    """`zoo train`'s model, options (every field but `model`) and `given` options (those typed,
    which a relaunched process or `--resume` gets), with a `--config` recipe file's values
    under the typed ones; a ZooError for arguments that exclude or need each other, and for an
    unknown model name (with its close matches)."""
    if recipe_file is not None:
        if resume is not None:
            raise ZooError("--resume goes on with the run's own recipe: drop --config.")
        recipe = read_recipe(recipe_file)
        model = model or recipe.get("model")
        given = {**{k: v for k, v in recipe.items() if k != "model"}, **given}
        options = {**options, **given}
    if model is None and resume is None:
        raise ZooError("Name the model to train (e.g. `zoo train baseline-cnn`), or pass --resume.")
    if model is None and print_config:
        raise ZooError("--print-config prints a new run's recipe: name the model, not --resume.")
    if model is not None:
        get_model_entry(model)  # a misspelt name: its close matches, before any work
    return model, options, given


def new_run_recipe(model: str, options: dict) -> TrainConfig:
    """The recipe a new run of `model` with these field values trains with: the model's
    default dataset and batch sizes filled in (what `--print-config` prints)."""
    entry = get_model_entry(model)
    return TrainConfig(model=model, **options).resolve(entry.task, entry.dataset)


def recipe_yaml(config: TrainConfig) -> str:
    """The recipe as `--print-config` prints it and `--config` reads it back."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)


RECORD_SCHEMA_VERSIONS = (1, 2)  # the run records' config.json that `read_recipe` reads


def read_recipe(path) -> dict:
    """The TrainConfig values in a recipe file: a YAML or JSON mapping of field names (as
    `--print-config` writes), or a run record's config.json (its `config`). Every key and value
    is checked here, so a bad file fails before any work with one sentence naming it."""
    import json

    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ZooError(f"Cannot read the recipe {path}: {error.strerror}.") from None
    try:  # JSON is YAML, but JSON's own errors are clearer for a .json file
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        where = getattr(error, "problem_mark", None) or getattr(error, "lineno", None)
        line = where.line + 1 if hasattr(where, "line") else where
        raise ZooError(
            f"The recipe {path} does not parse (line {line}); write it as YAML or JSON "
            "`field: value` lines, as `zoo train MODEL --print-config` prints them."
        ) from None
    if isinstance(values, dict) and isinstance(values.get("config"), dict):  # a run record
        version = values.get("schema_version", 1)  # version 1 records did not say
        if version not in RECORD_SCHEMA_VERSIONS:
            raise ZooError(
                f"{path} is a run record of schema version {version}, and this zoo reads "
                f"versions {' and '.join(map(str, RECORD_SCHEMA_VERSIONS))}; use the zoo "
                "version that wrote it, or copy its recipe into a YAML file."
            )
        values = {RENAMED_FIELDS.get(k, k): v for k, v in values["config"].items()}
    if not isinstance(values, dict):
        raise ZooError(f"The recipe {path} must be a mapping of `field: value` lines.")
    return {name: checked_value(path, name, value) for name, value in values.items()}


def checked_value(path, name: str, value):
    """`value` of field `name` from a recipe file, as TrainConfig takes it."""
    import difflib

    types = field_types()
    if name not in types:
        close = difflib.get_close_matches(name, list(types), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ZooError(f"The recipe {path} has an unknown field {name!r}.{hint}")
    kind = types[name]
    if value is None and name in NULLABLE_FIELDS:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if issubclass(kind, Enum) and value in [member.value for member in kind]:
        return value
    if type(value) is kind:
        return value
    if name in REPEATABLE_FIELDS and isinstance(value, list) and all(type(v) is str for v in value):
        return value
    raise ZooError(
        f"The recipe {path} gives {name} = {value!r}; {flag(name)} takes "
        f"{describe(kind)}{' or null' if name in NULLABLE_FIELDS else ''}."
    )


def describe(kind: type) -> str:
    if issubclass(kind, Enum):
        return "one of " + ", ".join(member.value for member in kind)
    return {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")


NULLABLE_FIELDS = tuple(
    name
    for name, hint in typing.get_type_hints(TrainConfig).items()
    if type(None) in typing.get_args(hint)
)
REPEATABLE_FIELDS = tuple(
    name
    for name, hint in typing.get_type_hints(TrainConfig).items()
    if typing.get_origin(hint) is tuple
)


def config_options(
    command=None, *, config=TrainConfig, into: str | None = None, searchable: bool = False
):
    """Give a Typer command one option per field of the dataclass `config` (TrainConfig: all
    but `model`), named as the field, with its type, default and help (so `zoo train --lr` is
    `TrainConfig.lr`); a field's other metadata (`min`, `choices`: an enum) goes to the option.
    The command receives them as keyword arguments of the same names, or with `into` as one
    keyword argument of that name holding `config(**them)`.

    `searchable=True` (zoo sweep) makes each option text that may also hold a range or choices,
    None when not given."""
    import functools
    import inspect

    import typer

    if command is None:
        return functools.partial(config_options, config=config, into=into, searchable=searchable)
    hints = typing.get_type_hints(config)
    own_hints = typing.get_type_hints(command, include_extras=True)  # Annotated[...] kept
    parameters = [
        parameter.replace(annotation=own_hints.get(parameter.name, parameter.annotation))
        for parameter in inspect.signature(command).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD and parameter.name != into
    ]
    for each in fields(config):
        if config is TrainConfig and each.name == "model":  # `zoo train MODEL`: an argument
            continue
        kind, default, help = hints[each.name], each.default, each.metadata["help"]
        limits = {key: value for key, value in each.metadata.items() if key != "help"}
        if typing.get_origin(kind) is tuple:  # repeatable: --logger tensorboard --logger mlflow
            kind, default = list[str], list(default)
            limits.setdefault("metavar", "<name>")
        if choices := limits.pop("choices", None):
            kind = choices if default is not None else choices | None
            default = choices(default) if default is not None else None
        if searchable:
            kind, default = str | None, None
            help += " A value, a range low:high[:log], or choices a,b,c."
        option = typer.Option(help=help, **limits)
        parameters.append(
            inspect.Parameter(
                each.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=typing.Annotated[kind, option],
            )
        )

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if into is not None:
            kwargs[into] = config(**{each.name: kwargs.pop(each.name) for each in fields(config)})
        return command(*args, **kwargs)

    wrapper.__signature__ = inspect.Signature(parameters)
    return wrapper
