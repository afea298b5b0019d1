"""Where a model's weights come from, and the facts that travel with published ones.

A model gets its weights from one of four places:

    a run folder        RUN_DIR/best.safetensors (or last), written by `zoo train`; never committed
    published weights   zoo/published/<model>/<dataset>/v<N>/, shipped with zoo (package data)
    a hub folder        config.json + model.safetensors, written by `zoo export --format hub`
    a weights file      `weights=PATH` (`zoo train --weights PATH`), a safetensors state dict

`create_model(name, pretrained=...)` is `registry.create_model` (which only builds) followed by
loading one of the last three, timm's convention: `pretrained=True` is the published weights for
the entry's default dataset, `pretrained="cmp-facade"` another dataset's, `pretrained="folder"` a
hub folder. `load_source` turns what a command line names (a run folder, a published name such
as `unet-small`, a hub folder) into a model in eval mode, for eval, predict, explain and export.

Published weights carry their facts with them, as torchvision's `Weights.meta` and timm's
`pretrained_cfg` do (`Weights`): model, dataset, class names, input size, normalisation, the run
and recipe they came from, test metrics, parameters, GFLOPs, file size, SHA-256 and versions. A
published version folder and a hub folder have the same layout, so one reader serves both, and
every weights file is checked against its SHA-256 before it is loaded.

Publishing a version is a deliberate step (zoo/publish.py); this module only reads. It imports
no torch at import time, so `import zoo` stays light.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from zoo.errors import UnknownNameError, ZooError
from zoo.registry import MODELS
from zoo.registry import create_model as build_model

FORMAT = "zoo-weights/1"
CONFIG_FILE = "config.json"  # the facts (what create_model needs, and the rest)
WEIGHTS_FILE = "model.safetensors"  # the state dict, as the Hugging Face Hub names it
CHANGELOG = "CHANGELOG.md"
PUBLISHED_ENV = "ZOO_PUBLISHED"  # another folder of published weights (tests, a private zoo)
BUDGET_BYTES = 60_000_000  # all published weights files together, in the repository
NAME_PATTERN = re.compile(r"^(?P<model>[^:@]+)(?::(?P<dataset>[^@]+))?(?:@v(?P<version>\d+))?$")


def published_root() -> Path:
    """The folder of published weights: `$ZOO_PUBLISHED`, else zoo/published/ (package data)."""
    if os.environ.get(PUBLISHED_ENV):
        return Path(os.environ[PUBLISHED_ENV]).expanduser()
    return Path(__file__).resolve().parent / "published"


def folder_name(name: str) -> str:
    """A model or dataset name as one folder name: `timm/resnet18` -> `timm--resnet18`."""
    return name.replace("/", "--")


def file_sha256(path: Path) -> str:
    from zoo.data.base import file_digest

    return file_digest(path, "sha256")


@dataclass(frozen=True)
class Weights:
    """One published version of an entry's weights (or an exported hub folder): the file and
    its facts, saved as the folder's config.json."""

    model: str  # registry name: what create_model builds
    dataset: str  # what it was trained and tested on
    version: int  # 1, 2, ...: one per deliberate publish
    task: str
    class_names: tuple[str, ...]
    in_chans: int
    input_size: tuple[int, int, int]  # (C, H, W) of the samples it was trained on
    mean: tuple[float, ...]  # per-channel normalisation of [0, 1] inputs
    std: tuple[float, ...]
    file: str | None  # WEIGHTS_FILE, or None: listed with its recipe and metrics only
    dtype: str  # how the file stores floats: float32, or float16 (loaded into float32)
    file_size: int | None  # bytes
    sha256: str | None  # of the file, checked before every load
    num_parameters: int
    gflops: float  # forward FLOPs of one input at input_size, 2 per multiply-add, in 1e9
    run_id: str  # <dataset>/<model>/<run-id> under results/
    recipe: str  # a `zoo train` command that reproduces the run
    recipe_file: str | None  # recipes/<name>.yaml when the run followed it
    config: dict  # the run's TrainConfig (to_dict), machine paths left out
    metrics: dict  # test metrics of the stored file (metrics.py): scores, per_class, confusion
    evaluation: dict  # how `metrics` were computed: split, device, precision, batch size, ...
    history: list = field(default_factory=list)  # the run's per-epoch rows (for the curves)
    zoo_version: str = ""
    torch_version: str = ""
    published: str = ""  # date, YYYY-MM-DD
    note: str = ""  # what changed in this version
    format: str = FORMAT
    folder: Path | None = field(default=None, compare=False)  # where it was read from (not saved)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def name(self) -> str:
        """What to type for them: `unet-small`, or `unet-small:cmp-facade` for a dataset other
        than the entry's default."""
        default = MODELS.get(self.model).dataset if is_model_name(self.model) else None
        return self.model if self.dataset == default else f"{self.model}:{self.dataset}"

    @property
    def ref(self) -> str:
        """The name pinned to this version: `unet-small@v1`."""
        return f"{self.name}@v{self.version}"

    @property
    def path(self) -> Path | None:
        """The weights file, or None for a version listed without one."""
        return self.folder / self.file if self.file and self.folder else None

    def headline(self) -> tuple[str, float | None]:
        """The task's headline test metric and its value: accuracy, or segmentation's mean AP."""
        key = "accuracy" if self.task == "classification" else "mean_ap"
        return key, self.metrics.get(key)

    def to_dict(self) -> dict:
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "folder"}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in document.items()}

    @classmethod
    def from_dict(cls, values: dict, folder: Path | None = None) -> Weights:
        known = {f.name for f in fields(cls)} - {"folder"}
        values = {k: v for k, v in values.items() if k in known}
        for key in ("class_names", "input_size", "mean", "std"):
            values[key] = tuple(values[key])
        return cls(**values, folder=folder)

    def run_record(self):
        """The record of the run these weights came from, as far as the metadata holds it: its
        recipe, classes, history and the test metrics of this file; no folder (run_dir None)."""
        from zoo.config import TrainConfig
        from zoo.results import RunRecord

        return RunRecord(
            config=TrainConfig.from_dict({**self.config, "model": self.model}),
            task=self.task,
            precision=self.evaluation.get("precision", "fp32"),
            environment={"torch": self.torch_version, "zoo": self.zoo_version},
            status="completed",
            num_parameters=self.num_parameters,
            history=list(self.history),
            checkpoint=f"{self.ref} ({self.dtype})",
            eval_precision=self.evaluation.get("precision"),
            class_names=list(self.class_names),
            test=self.metrics,
        )


# ----------------------------------------------------------------------------- reading


def read_folder(folder: str | Path, *, what: str = "Hub folder") -> Weights:
    """The Weights in a published version folder or a hub folder (its config.json)."""
    import json

    folder = Path(folder).expanduser()
    path = folder / CONFIG_FILE
    fix = "export one with `zoo export RUN_DIR --format hub --out DIR`."
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooError(f"{what} {folder} has no {CONFIG_FILE}; {fix}") from None
    except (OSError, ValueError) as error:
        raise ZooError(f"{what} {folder}'s {CONFIG_FILE} cannot be read ({error}); {fix}") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        found = values.get("format") if isinstance(values, dict) else None
        raise ZooError(
            f"{path} is not a zoo weights config (format {found!r}, not {FORMAT!r}); {fix}"
        )
    try:
        return Weights.from_dict(values, folder)
    except (KeyError, TypeError) as error:
        raise ZooError(f"{path} lacks {error} or holds a wrong value; {fix}") from None


def all_published(root: Path | None = None) -> list[Weights]:
    """Every published version under `root` (default: published_root()), sorted by model,
    dataset and version."""
    root = Path(root) if root is not None else published_root()
    found = [
        read_folder(config.parent, what="Published weights")
        for config in sorted(root.glob(f"*/*/v*/{CONFIG_FILE}"))
    ]
    return sorted(found, key=lambda w: (w.model, w.dataset, w.version))


def list_weights(
    pattern: str = "*", *, all_versions: bool = False, root: Path | None = None
) -> list[Weights]:
    """Published weights whose model matches shell-style `pattern`: the newest version of each
    model and dataset, or every version with `all_versions`."""
    import fnmatch

    chosen = [w for w in all_published(root) if fnmatch.fnmatch(w.model, pattern)]
    if all_versions:
        return chosen
    newest = {}
    for weights in chosen:  # sorted by version: the last one wins
        newest[(weights.model, weights.dataset)] = weights
    return list(newest.values())


def parse_name(text: str) -> tuple[str, str | None, int | None]:
    """`MODEL[:DATASET][@vN]` -> (model, dataset or None, version or None)."""
    match = NAME_PATTERN.match(text.strip())
    if not match:
        raise ZooError(
            f"{text!r} is not a published-weights name; write MODEL, MODEL:DATASET or "
            "MODEL:DATASET@vN (`zoo weights` lists them)."
        )
    version = match["version"]
    return match["model"], match["dataset"], int(version) if version else None


def get_weights(name: str, dataset: str | None = None, *, root: Path | None = None) -> Weights:
    """The published weights `name` (`unet-small`, `unet-small:cmp-facade`, `unet-small@v1`):
    the newest version for the entry's default dataset unless the name or `dataset` says
    otherwise. A ZooError names the published weights there are."""
    model, named_dataset, version = parse_name(name)
    dataset = dataset or named_dataset
    published = all_published(root)
    of_model = [w for w in published if w.model == model]
    if not of_model:
        if not is_model_name(model):
            names = sorted({w.name for w in published} | {w.model for w in published})
            # the published names first; else the registry's, whose weights may come later
            close = difflib.get_close_matches(model, names, n=3, cutoff=0.5)
            close = close or difflib.get_close_matches(model, MODELS.names(), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"Unknown published weights {name!r}.{hint} Run `zoo weights` to see them all."
            )
        files = sorted({w.model for w in published if w.file})
        listed = sorted({w.model for w in published} - set(files))
        have = ", ".join(files) or "none yet"
        have += f"; listed without a file: {', '.join(listed)}" if listed else ""
        raise ZooError(
            f"There are no published weights for {model} (entries that have them: {have}); "
            f"train it with `zoo train {model}`, or see `zoo weights`."
        )
    if dataset is None:
        dataset = MODELS.get(model).dataset
    of_dataset = [w for w in of_model if w.dataset == dataset]
    if not of_dataset:
        datasets = sorted({w.dataset for w in of_model})
        close = difflib.get_close_matches(dataset, datasets, n=1, cutoff=0.5)
        hint = f"; did you mean {model}:{close[0]}?" if close else "."
        raise ZooError(
            f"There are no published {model} weights for {dataset}: {model} has them for "
            f"{', '.join(datasets)}{hint}"
        )
    if version is None:
        return of_dataset[-1]
    for weights in of_dataset:
        if weights.version == version:
            return weights
    versions = ", ".join(f"v{w.version}" for w in of_dataset)
    raise ZooError(f"{model} on {dataset} has no published v{version}; it has {versions}.")


def is_model_name(text: str) -> bool:
    """A registered name, or one a prefix builds on demand (`timm/...`, `smp/...`)."""
    MODELS.load()
    return text in MODELS.entries or text.partition("/")[0] in MODELS.prefixes


def looks_like_folder(text: str | Path) -> bool:
    """A path rather than a name: a Path, an existing folder, or text that starts like a path
    or has a path separator that is not a registry prefix's (`timm/...`, `smp/...`)."""
    if isinstance(text, Path) or Path(text).expanduser().is_dir():
        return True
    if str(text).startswith((".", "~", "/")):
        return True
    return "/" in str(text) and not is_model_name(str(text).partition(":")[0].partition("@")[0])


def resolve_pretrained(name: str, pretrained: bool | str | Path, root: Path | None = None):
    """The Weights `create_model(name, pretrained=...)` asks for: True -> the published ones
    for the default dataset; "cmp-facade" (or "cmp-facade@v1") -> that dataset's; a folder ->
    the hub folder there, which must hold weights for `name`."""
    if pretrained is True:
        return get_weights(name, root=root)
    if looks_like_folder(pretrained):
        weights = read_folder(pretrained)
        if weights.model != name:
            raise ZooError(
                f"Hub folder {pretrained} holds weights for {weights.model}, not {name}; call "
                f"create_model({weights.model!r}, pretrained=...) or pick a {name} folder."
            )
        return weights
    dataset, _, version = str(pretrained).partition("@")
    return get_weights(f"{name}:{dataset}{'@' + version if version else ''}", root=root)


# ----------------------------------------------------------------------------- loading


def verified_file(weights: Weights) -> Path:
    """The weights file after checking its SHA-256; a CheckpointError naming the file and both
    hashes when it was truncated or edited."""
    from zoo.checkpoint import CheckpointError

    path = weights.path
    if path is None:
        why = (
            "its run's checkpoints were not kept"
            if "source" in weights.evaluation  # publish.list_without_checkpoint
            else f"it does not fit the repository's {BUDGET_BYTES // 1_000_000} MB"
        )
        raise ZooError(
            f"{weights.name} v{weights.version} is listed without a weights file ({why}); train "
            f"it to get weights: {weights.recipe}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"Weights file {path} is missing; reinstall zoo (or restore the file from the "
            "repository)."
        )
    actual = file_sha256(path)
    if actual != weights.sha256:
        raise CheckpointError(
            f"Weights file {path} has SHA-256 {actual} but its {CONFIG_FILE} says "
            f"{weights.sha256}, so it was truncated or edited; restore it (reinstall zoo, or "
            "export the folder again)."
        )
    return path


def load_into(model, weights: Weights) -> None:
    """Load the (verified) weights file into `model`; float16 files load into float32."""
    from zoo.checkpoint import load_weights

    fix = "reinstall zoo, or export the folder again."
    load_weights(model, verified_file(weights), weights.model, what="Weights file", fix=fix)


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    pretrained: bool | str | Path = False,
    imagenet: bool = False,
    weights: str | Path | None = None,
    **kwargs,
):
    """Build model `name` (random weights, or ImageNet's with `imagenet`), then load weights:

    - `pretrained=True`: zoo's published weights for the entry's default dataset, after
      checking the file's SHA-256; `pretrained="cmp-facade"` another dataset's (`"@v1"` pins a
      version); `pretrained="path/to/folder"` a folder `zoo export --format hub` wrote. The
      classes and channels are the weights' own.
    - `weights=PATH`: a safetensors state dict, loaded strictly.

    Nothing ever falls back to random weights: a missing or damaged file is a ZooError.
    """
    if not pretrained:
        model = build_model(name, num_classes, in_chans, imagenet=imagenet, **kwargs)
        if weights is not None:
            from zoo.checkpoint import load_weights

            load_weights(model, weights, name)
        return model
    if weights is not None or imagenet:
        raise ZooError(
            "pretrained= loads zoo's published weights; drop weights= and imagenet= with it."
        )
    found = resolve_pretrained(name, pretrained)
    for asked, own, what in ((num_classes, found.num_classes, "num_classes"),
                             (in_chans, found.in_chans, "in_chans")):  # fmt: skip
        if asked is not None and asked != own:
            raise ZooError(
                f"{found.name}'s weights have {what}={own}, not {asked}; drop {what}= (or "
                "train the model for yours)."
            )
    model = build_model(name, found.num_classes, found.in_chans, **kwargs)
    load_into(model, found)
    return model


# ----------------------------------------------------------------------------- what a command names


@dataclass
class Loaded:
    """A model in eval mode with what the commands need around it."""

    model: object  # torch.nn.Module
    info: object  # the dataset's DatasetInfo
    record: object  # the run's RunRecord; for published weights rebuilt from them (no run_dir)
    weights: Weights | None = None  # the published or hub weights, when it is them


def load_run_model(record, checkpoint: str, device, *, channels_last: bool | None = None):
    """(model holding the run's `checkpoint` weights, in eval mode on `device`, dataset info).

    `record` is a results.RunRecord; `channels_last` defaults to the run's setting."""
    from zoo.checkpoint import BEST, LAST, CheckpointError, load_weights
    from zoo.data.base import get_dataset_info, run_data_options
    from zoo.runtime import place_model

    path = record.run_dir / checkpoint
    if not path.exists():
        other = LAST if checkpoint == BEST else BEST
        there = (
            f"; or use its {other} (--checkpoint {other.split('.')[0]})"
            if (record.run_dir / other).exists()
            else ""
        )
        raise CheckpointError(
            f"Checkpoint {path} does not exist: run checkpoints are never committed to the "
            f"repository, so pass the model name ({record.model}) instead of the run folder to "
            "use its published weights (`zoo weights` lists them), or train it again "
            f"(`zoo train --config {record.run_dir / 'config.json'}`){there}."
        )
    info = get_dataset_info(record.dataset, **run_data_options(record.config))
    model = build_model(record.model, num_classes=info.num_classes, in_chans=info.in_chans)
    layout = record.config.channels_last if channels_last is None else channels_last
    place_model(model, device, layout)
    fix = "train the run again, or use its other checkpoint (--checkpoint best or last)."
    load_weights(model, path, record.model, what="Checkpoint", fix=fix)
    return model.eval(), info


def load_weights_model(weights: Weights, device, *, channels_last: bool = False) -> Loaded:
    """Published or hub `weights` in a model in eval mode on `device`."""
    from zoo.data.base import get_dataset_info
    from zoo.runtime import place_model

    info = get_dataset_info(weights.dataset)
    side = weights.input_size[-1]
    if info.image_size != (side, side):  # trained with --img-size: predict at that size too
        info = get_dataset_info(weights.dataset, img_size=side)
    model = build_model(weights.model, weights.num_classes, weights.in_chans)
    load_into(model, weights)
    place_model(model, device, channels_last)
    return Loaded(model.eval(), info, weights.run_record(), weights)


def source_weights(source: str | Path) -> Weights | None:
    """The Weights a command line names (a published name or a hub folder); None for a run
    folder (a folder with a run record's metrics.json, or a path that is not a hub folder)."""
    from zoo.results import METRICS

    if not looks_like_folder(source):
        return get_weights(str(source))
    folder = Path(source).expanduser()
    if (folder / CONFIG_FILE).exists() and not (folder / METRICS).exists():
        return read_folder(folder)
    return None


def load_source(
    source: str | Path, *, checkpoint: str | None = None, device=None, channels_last=None
) -> Loaded:
    """What a command line names, as a model in eval mode: a run folder (its `checkpoint`,
    default best), a hub folder, or published weights by name (`unet-small`, `unet:cmp-facade`,
    `unet-small@v1`). `channels_last` defaults to the run's setting, NCHW for weights."""
    import torch

    from zoo.checkpoint import BEST
    from zoo.results import read_record

    device = device or torch.device("cpu")
    weights = source_weights(source)
    if weights is None:
        record = read_record(Path(source).expanduser())
        model, info = load_run_model(
            record, checkpoint or BEST, device, channels_last=channels_last
        )
        return Loaded(model, info, record)
    if checkpoint is not None:
        raise ZooError(
            f"--checkpoint picks a run folder's checkpoint, and {source} is published weights "
            "(one file); drop --checkpoint."
        )
    return load_weights_model(weights, device, channels_last=bool(channels_last))
