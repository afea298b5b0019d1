"""Publishing a run's weights, and scoring published weights again.

Publishing is a deliberate step that adds a version and never replaces one (retraining changes
nothing published). `publish(run_dir, note=...)`, which `zoo weights publish RUN_DIR --note TEXT`
calls:

1. reads the run record: the run must have completed, and its best checkpoint must be there
   (a run whose checkpoints were not kept can only be listed, `with_file=False`, with the test
   metrics its own evaluation recorded: `list_without_checkpoint`);
2. picks the storage dtype: float16 when the float16 copy's test metrics are all within
   FP16_TOLERANCE of float32's (`--dtype auto`, the default, or `float16`), else float32;
   a version listed without a file (`with_file=False`) describes the run's own float32 weights;
3. scores the stored copy on the test split on the CPU in fp32, NCHW: the published metrics,
   which `zoo eval NAME` (`rescore`) reproduces exactly on the same torch version;
4. checks the repository's budget for weights files (weights.BUDGET_BYTES), or lists the version
   with its recipe and metrics only (`with_file=False`: "train to get weights");
5. writes <root>/<model>/<dataset>/v<N>/{config.json, model.safetensors} into a temporary
   folder renamed into place (an existing version is never overwritten), then adds the version
   and its note to <root>/CHANGELOG.md.

Everything that can be refused is refused before the first file is written.

`evaluate_source` is `zoo eval`: a run folder evaluated again, or published weights scored
again (`rescore`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from zoo import results, weights
from zoo.checkpoint import BEST, atomic_save
from zoo.config import TRACKING_FIELDS, TrainConfig, read_recipe, to_flags
from zoo.data.base import DatasetInfo, get_dataset_info
from zoo.errors import ZooError
from zoo.registry import get_model_entry
from zoo.runtime import place_model, resolve_device, resolve_precision
from zoo.weights import Weights

FP16_TOLERANCE = 0.001  # largest change of any test score that float16 storage may cause
DTYPES = ("auto", "float32", "float16")
# Where a run ran and was reported, not how it was trained.
MACHINE_FIELDS = ("data_dir", "out", "device", *TRACKING_FIELDS)
RECIPES = Path(__file__).resolve().parent.parent / "recipes"  # in a source checkout


# ----------------------------------------------------------------------------- the facts


def run_id_of(record: results.RunRecord) -> str:
    """<dataset>/<model>/<run-id>, as the run sits under results/."""
    return "/".join(Path(record.run_dir).resolve().parts[-3:])


def recipe_of(config: TrainConfig, task: str) -> tuple[str, str | None]:
    """(a `zoo train` command that reproduces `config`, the recipes/ file it follows or None;
    the file matches whatever the seed, which the command gives)."""
    entry = get_model_entry(config.model)
    defaults = TrainConfig(model=config.model).resolve(task, entry.dataset).to_dict()
    flags = to_flags(config.to_dict(), against=defaults, skip=("model", *MACHINE_FIELDS))
    command = shlex.join(["zoo", "train", config.model, *flags])
    for path in sorted(RECIPES.glob("*.yaml")) if RECIPES.is_dir() else []:
        try:
            values = read_recipe(path)
            recipe = TrainConfig(**{"model": config.model, **values}).resolve(task, entry.dataset)
        except (ZooError, TypeError):
            continue
        skip = ("model", "seed", *MACHINE_FIELDS)  # a recipe file trains any seed (--seed N)
        if recipe.model == config.model and to_flags(
            recipe.to_dict(), against=defaults, skip=skip
        ) == to_flags(config.to_dict(), against=defaults, skip=skip):
            return command, f"recipes/{path.name}"
    return command, None


def count_gflops(model: torch.nn.Module, info: DatasetInfo) -> float:
    """Forward FLOPs of one input at the dataset's size, in 1e9 (2 per multiply-add, as zoo
    bench counts them)."""
    from zoo.bench import count_flops

    device = next(model.parameters()).device
    sample = torch.zeros(1, info.in_chans, *info.image_size, device=device)
    with torch.no_grad():
        return count_flops(model.eval(), sample) / 1e9


def stored_tensors(model: torch.nn.Module, dtype: str) -> dict[str, torch.Tensor]:
    """The state dict as the file stores it: floating tensors in `dtype`, the rest as they are."""
    from zoo.checkpoint import state_tensors

    target = getattr(torch, dtype)
    return {
        key: value.to(target) if value.is_floating_point() else value
        for key, value in state_tensors(model).items()
    }


def describe(
    record: results.RunRecord,
    model: torch.nn.Module,
    info: DatasetInfo,
    *,
    dtype: str,
    metrics: dict,
    evaluation: dict,
    note: str = "",
    version: int = 1,
) -> Weights:
    """The facts of `model` (holding `record`'s weights) before its file is written: file, size
    and SHA-256 are filled in by whoever writes it."""
    from zoo.version import __version__

    command, recipe_file = recipe_of(record.config, record.task)
    machine_free = {**record.config.to_dict(), "data_dir": None, "out": "results", "device": "auto"}
    return Weights(
        model=record.model,
        dataset=record.dataset,
        version=version,
        task=record.task,
        class_names=tuple(info.class_names),
        in_chans=info.in_chans,
        input_size=(info.in_chans, *info.image_size),
        mean=tuple(info.mean),
        std=tuple(info.std),
        file=None,
        dtype=dtype,
        file_size=None,
        sha256=None,
        num_parameters=sum(p.numel() for p in model.parameters()),
        gflops=round(count_gflops(model, info), 6),
        run_id=run_id_of(record),
        recipe=command,
        recipe_file=recipe_file,
        config=machine_free,
        metrics=metrics,
        evaluation=evaluation,
        history=list(record.history),
        zoo_version=__version__,
        torch_version=torch.__version__,
        published=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        note=note,
    )


# ----------------------------------------------------------------------------- scoring


@dataclass
class TestSplit:
    """The test split a score needs, loaded once."""

    data: object  # zoo.data.splits.Splits
    dataset: str


def load_test(config: TrainConfig, data_dir: str | None) -> TestSplit:
    from zoo.data.splits import load_dataset

    data = load_dataset(
        config.dataset, data_dir or config.data_dir, val_fraction=config.val_fraction,
        split_seed=config.split_seed, skip_bad=config.skip_bad_samples,
    )  # fmt: skip
    return TestSplit(data, config.dataset)


def score(
    model: torch.nn.Module, split: TestSplit, *, batch_size: int, device: torch.device
) -> tuple[dict, dict]:
    """(test metrics of `model` in fp32, NCHW, how they were computed)."""
    from zoo.evaluate import evaluate

    precision = resolve_precision(device, False, "float16")  # fp32
    place_model(model, device, False)
    test = split.data.test.to(device) if device.type == "cuda" else split.data.test
    metrics, _ = evaluate(
        model, test, split.data.info, device=device, precision=precision,
        batch_size=batch_size, channels_last=False,
    )  # fmt: skip
    evaluation = {
        "split": "test",
        "device": device.type,
        "precision": precision.label,
        "batch_size": batch_size,
        "channels_last": False,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if device.type == "cpu":  # kernels differ by CPU model and instruction set: scores by ~1e-7
        evaluation["cpu"] = cpu_identity()
    return metrics, evaluation


def score_differences(first: dict, second: dict, task: str) -> dict[str, float]:
    """|first - second| of every test score and per-class score of the task (None = 0)."""
    metrics = results.TASK_METRICS[task]
    pairs = {name: (first.get(name), second.get(name)) for name in metrics.scores}
    for cls, values in first.get("per_class", {}).items():
        for name in metrics.per_class:
            other = second.get("per_class", {}).get(cls, {})
            pairs[f"{cls} {name}"] = (values.get(name), other.get(name))
    return {
        name: abs(a - b) if a is not None and b is not None else (0.0 if a == b else float("inf"))
        for name, (a, b) in pairs.items()
    }


# ----------------------------------------------------------------------------- publishing


def publish(
    run_dir: str | Path,
    note: str,
    *,
    dtype: str = "auto",
    with_file: bool = True,
    data_dir: str | None = None,
    root: Path | None = None,
    device: torch.device | None = None,
    on_progress=None,
) -> Weights:
    """Publish the run's best checkpoint as the next version of its model and dataset (see the
    module's docstring); returns the published Weights. `root` defaults to
    weights.published_root()."""
    say = on_progress or (lambda text: None)
    root = Path(root) if root is not None else weights.published_root()
    device = device or torch.device("cpu")
    if not note.strip():
        raise ZooError('--note says what changed in this version (e.g. "first version"); pass one.')
    if dtype not in DTYPES:
        raise ZooError(f"Unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    if dtype == "float16" and not with_file:
        raise ZooError("--dtype float16 says how to store a weights file and --no-file stores "
                       "none; drop one of them.")  # fmt: skip
    record = results.read_record(run_dir)
    if record.status != "completed" or not record.test:
        raise ZooError(
            f"{record.run_dir} is {record.status}, not a completed and evaluated run; publish "
            "a run that `zoo train` completed (or run `zoo eval` on it first)."
        )
    existing = weights.list_weights(all_versions=True, root=root)
    versions = [w for w in existing if (w.model, w.dataset) == (record.model, record.dataset)]
    run_id = run_id_of(record)
    for earlier in versions:
        if earlier.run_id == run_id and (bool(earlier.file) or not with_file):
            raise ZooError(
                f"{run_id} is already published as {earlier.ref}; publish a new version only "
                "for new weights (another run), with a note of what changed."
            )
    version = max((w.version for w in versions), default=0) + 1
    if not (record.run_dir / BEST).exists():
        if with_file:
            raise ZooError(
                f"{record.run_dir / BEST} does not exist (run checkpoints stay on the machine "
                "that trained them); publish from that machine, or list the run without a file "
                "(--no-file)."
            )
        return list_without_checkpoint(record, root, note=note.strip(), version=version)
    model, info = weights.load_run_model(record, BEST, device, channels_last=False)

    say(f"Scoring {record.run_dir / BEST} on the {record.dataset} test split (cpu, fp32)...")
    split = load_test(record.config, data_dir)
    batch_size = record.config.eval_batch_size
    fp32_metrics, evaluation = score(model, split, batch_size=batch_size, device=device)
    chosen, metrics = "float32", fp32_metrics
    if with_file and dtype in ("auto", "float16"):
        half = copy_with(model, record, stored_tensors(model, "float16"))
        half_metrics, _ = score(half, split, batch_size=batch_size, device=device)
        worst_name, worst = max(
            score_differences(fp32_metrics, half_metrics, record.task).items(), key=lambda i: i[1]
        )
        if worst <= FP16_TOLERANCE:
            chosen, metrics = "float16", half_metrics
        elif dtype == "float16":
            raise ZooError(
                f"float16 storage changes {record.model}'s test {worst_name} by {worst:.4f}, more "
                f"than {FP16_TOLERANCE}; publish it with --dtype float32."
            )
        say(f"float16 copy: largest test score change {worst:.2g} ({worst_name}) -> {chosen}.")

    facts = describe(
        record, model, info, dtype=chosen, metrics=metrics, evaluation=evaluation,
        note=note.strip(), version=version,
    )  # fmt: skip
    tensors = stored_tensors(model, chosen)
    if with_file:
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        check_budget(root, size, facts)
    return write_version(root, facts, tensors if with_file else None)


def list_without_checkpoint(
    record: results.RunRecord, root: Path, *, note: str, version: int
) -> Weights:
    """A version listed from a run whose checkpoints stayed on the machine that trained it: its
    recipe, and the test metrics the run's own evaluation recorded (in its precision, on its
    machine), which nothing can score again."""
    from zoo.data.base import run_data_options
    from zoo.registry import create_model

    info = get_dataset_info(record.dataset, **run_data_options(record.config))
    model = create_model(record.model, num_classes=info.num_classes, in_chans=info.in_chans)
    environment = record.environment
    evaluation = {
        "split": "test",
        "source": "the run's own evaluation (its checkpoint was not kept)",
        "device": environment.get("device", "?"),
        "precision": record.eval_precision or record.precision,
        "batch_size": record.config.eval_batch_size,
        "torch": environment.get("torch", "?"),
        "cpu": environment.get("cpu"),
    }
    facts = describe(
        record, model, info, dtype="float32", metrics=record.test, evaluation=evaluation,
        note=note, version=version,
    )  # fmt: skip
    return write_version(root, facts, None)


def published_line(found: Weights) -> str:
    """What `zoo weights publish` says it did."""
    key, score = found.headline()
    stored = (
        f"{found.dtype}, {found.file_size / 1e6:.1f} MB, sha256 {found.sha256[:12]}..."
        if found.file
        else "listed without a weights file"
    )
    what = f"{found.ref} ({found.dataset}): test {key} {score:.4f}"
    return f"Published {what}, {stored} -> {found.folder}"


def copy_with(model: torch.nn.Module, record, tensors: dict) -> torch.nn.Module:
    """A copy of `model` holding `tensors` (float16 ones loaded into float32 parameters)."""
    from zoo.registry import create_model

    info = get_dataset_info(record.dataset)
    copy = create_model(record.model, num_classes=info.num_classes, in_chans=info.in_chans)
    copy.load_state_dict(tensors)
    return copy.eval()


def budget_used(root: Path) -> int:
    """Bytes of every published weights file under `root`."""
    return sum(path.stat().st_size for path in Path(root).glob("*/*/v*/*.safetensors"))


def check_budget(root: Path, size: int, facts: Weights) -> None:
    used = budget_used(root)
    if used + size > weights.BUDGET_BYTES:
        raise ZooError(
            f"Publishing {facts.model} on {facts.dataset} ({size / 1e6:.1f} MB in {facts.dtype}) "
            f"would bring the published weights to {(used + size) / 1e6:.1f} MB, over the "
            f"{weights.BUDGET_BYTES / 1e6:.0f} MB budget; pass --no-file to list it with its "
            "recipe and metrics only."
        )


def write_version(root: Path, facts: Weights, tensors: dict | None) -> Weights:
    """<root>/<model>/<dataset>/v<N>/ (config.json and the weights file), written to a
    temporary folder and renamed into place, then the changelog entry."""
    parent = root / weights.folder_name(facts.model) / weights.folder_name(facts.dataset)
    final = parent / f"v{facts.version}"
    if final.exists():
        raise ZooError(f"{final} already exists; published versions are never overwritten.")
    tmp = parent / f".v{facts.version}.tmp-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        if tensors is not None:
            path = tmp / weights.WEIGHTS_FILE
            metadata = {"format": weights.FORMAT, "model": facts.model, "dataset": facts.dataset,
                        "version": str(facts.version), "dtype": facts.dtype}  # fmt: skip
            atomic_save(path, tensors, metadata)
            facts = dataclasses.replace(
                facts, file=weights.WEIGHTS_FILE, file_size=path.stat().st_size,
                sha256=weights.file_sha256(path),
            )  # fmt: skip
        results.write_json(tmp / weights.CONFIG_FILE, facts.to_dict())
        os.rename(tmp, final)  # fails, rather than replaces, if a version appeared meanwhile
    except OSError as error:
        raise results.WriteError(final, error) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        add_changelog_entry(root, facts)
    except ZooError:
        shutil.rmtree(final, ignore_errors=True)  # no version without its changelog entry
        raise
    return dataclasses.replace(facts, folder=final)


CHANGELOG_HEAD = """# Published weights

Every published version of zoo's weights, newest first. A version is added by
`zoo weights publish RUN_DIR --note TEXT` and is never replaced: retraining changes nothing here.
"""


def changelog_entry(facts: Weights) -> str:
    key, value = facts.headline()
    label = results.METRIC_LABELS.get(key, key)
    extra = (
        f", mIoU {facts.metrics['mean_iou']:.4f}"
        if facts.metrics.get("mean_iou") is not None
        else ""
    )
    stored = (
        f"{facts.dtype}, {facts.file_size / 1e6:.1f} MB, SHA-256 `{facts.sha256}`"
        if facts.file
        else "listed without a weights file (train to get weights)"
    )
    return (
        f"## {facts.name} v{facts.version} ({facts.dataset}, {facts.published})\n\n"
        f"{facts.note}\n\n"
        f"- run `{facts.run_id}`: test {label} {value:.4f}{extra}\n"
        f"- {stored}\n"
        f"- recipe: `{facts.recipe}`\n"
    )


def add_changelog_entry(root: Path, facts: Weights) -> None:
    path = root / weights.CHANGELOG
    text = path.read_text() if path.exists() else CHANGELOG_HEAD
    head, sep, rest = text.partition("\n## ")
    updated = f"{head.rstrip()}\n\n{changelog_entry(facts)}" + (f"\n## {rest}" if sep else "")
    results.atomic_write_bytes(path, updated.encode())


# ----------------------------------------------------------------------------- scoring again


# Largest |published - rescored| of any score accepted from another machine or torch build.
RESCORE_TOLERANCE = 1e-5


@dataclass
class Rescored:
    """`zoo eval NAME`: the published weights scored again, beside what was published."""

    weights: Weights
    metrics: dict  # this evaluation's test metrics
    evaluation: dict  # how (device, precision, batch size, torch)
    differences: dict[str, float]  # |published - now| per score

    @property
    def exact(self) -> bool:
        return all(value == 0 for value in self.differences.values())

    @property
    def reproduced(self) -> bool:
        """Every score within RESCORE_TOLERANCE of the published one. Not bit-identity: another
        CPU, torch build or GPU sums in another order and a few pixels or images flip. Even a
        CPU of the same model and the same torch moved linknet's window IoU by 8e-7 on CI."""
        return all(value <= RESCORE_TOLERANCE for value in self.differences.values())

    def verdict(self) -> str:
        """One sentence: did scoring the published weights again give the published metrics?"""
        key, published = self.weights.headline()
        what = f"test {key} {self.metrics.get(key):.4f}, published {published:.4f}"
        if self.exact:
            return f"Reproduced exactly: {what} (every score of {len(self.differences)} equal)."
        worst = max(self.differences.values(), default=0.0)
        then, now = self.weights.evaluation, self.evaluation
        where = (
            f"published on torch {then.get('torch')} ({then.get('cpu') or then.get('device')}, "
            f"batch {then.get('batch_size')}), this is torch {now['torch']} "
            f"({now.get('cpu') or now['device']}, batch {now['batch_size']})"
        )
        if self.reproduced:
            return (
                f"Reproduced within {RESCORE_TOLERANCE:g}: {what}, largest difference "
                f"{worst:.2g}; {where}."
            )
        return f"Not the published scores: {what}, largest difference {worst:.2g}; {where}."


def cpu_identity() -> str:
    """'AMD EPYC (AuthenticAMD family 25 model 1, AVX2)': the CPU model (a VM may shorten its
    name) and the instruction set torch's CPU kernels use."""
    from zoo.peaks import cpu_identity as family_and_model

    isa = torch.backends.cpu.get_cpu_capability()
    return f"{results.cpu_model()} ({family_and_model() or 'unknown model'}, {isa})"


@contextlib.contextmanager
def cpu_threads(count: int):
    """torch's intra-op CPU threads set to `count` inside the block, then put back."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rescore(
    name: str | Weights, *, device: torch.device | None = None, data_dir: str | None = None
) -> Rescored:
    """Score the published weights `name` (or a Weights, e.g. a hub folder's) on their test
    split again, as they were scored when published (CPU, fp32, NCHW, the same batch size),
    unless `device` says otherwise."""
    found = name if isinstance(name, Weights) else weights.get_weights(name)
    device = device or torch.device(found.evaluation.get("device", "cpu"))
    loaded = weights.load_weights_model(found, device)
    config = loaded.record.config
    split = load_test(config, data_dir)
    batch_size = found.evaluation.get("batch_size") or config.eval_batch_size
    # CPU kernels sum in an order that depends on the thread count (scores then move by ~1e-10),
    # so the published count is used again: bit-identical scores on the machine that published.
    threads = found.evaluation.get("threads") if device.type == "cpu" else None
    with cpu_threads(threads or torch.get_num_threads()):
        metrics, evaluation = score(loaded.model, split, batch_size=batch_size, device=device)
    return Rescored(
        found, metrics, evaluation, score_differences(found.metrics, metrics, found.task)
    )


def evaluate_source(
    source: str,
    *,
    checkpoint: str | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    console=None,
    on_note: Callable[[str], None] | None = None,
) -> results.RunRecord | Rescored:
    """`zoo eval SOURCE`: a run folder's checkpoint (default the best) evaluated on val and test
    again, its record rewritten; or published weights scored on their test split again
    (`rescore`), beside the published metrics. `device` defaults to the run's setting, and
    for published weights to the CPU they were scored on. `on_note(text)` says what is being
    scored before the (long) scoring."""
    from zoo.evaluate import evaluate_run

    resolved = resolve_device(device) if device else None
    found = weights.source_weights(source)
    if found is None:
        return evaluate_run(
            source, checkpoint=checkpoint or BEST, device=resolved, data_dir=data_dir,
            console=console,
        )  # fmt: skip
    if checkpoint is not None:
        raise ZooError(
            f"--checkpoint picks a run folder's checkpoint, and {source} is published weights "
            "(one file); drop --checkpoint."
        )
    if found.file is None:
        weights.verified_file(found)  # listed without a file: says so, and how to train it
    if on_note is not None:
        on_note(f"Scoring {found.ref} on the {found.dataset} test split...")
    return rescore(found, device=resolved, data_dir=data_dir)
