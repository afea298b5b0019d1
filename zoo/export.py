"""`zoo export`: a run's checkpoint or published weights as ONNX, a torch.export program, or a
Hugging Face Hub folder.

onnx  torch.onnx.export, the torch.export-based exporter (opset OPSET), with a dynamic batch
      and, for segmentation, dynamic height and width. The file is checked with onnxruntime
      against PyTorch (computed in float64, see `torch_reference`) at an input size other than
      the export's; the largest absolute difference is reported, and above ONNX_TOLERANCE the
      export fails and leaves nothing behind. The
      input is `images` (float32, normalised with the metadata's mean/std), the output `logits`;
      the model's facts (classes, normalisation, input size) are in its metadata_props["zoo"].
pt2   torch.export.save of the same ExportedProgram: what ExecuTorch (phones) and AOTInductor
      (C++, `aoti_compile_and_package`) start from, and what `torch.export.load` runs in Python.
      TorchScript, the older route, is deprecated in torch 2.14 (`torch.jit.trace` and
      `torch.jit.save` warn so). The archive holds the weights as raw tensors and the program as
      JSON; the example inputs, the one part torch would pickle, are left out.
hub   config.json (the facts, and what create_model needs) + model.safetensors + README.md (a
      model card built with huggingface_hub: model-index metrics, the recipe, per-class table)
      + curves.png: a folder the Hub takes as it is, which
      `zoo.create_model(name, pretrained="folder")` loads back. `push` uploads it.

Every file is written to a temporary name and renamed into place once it is complete and
checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zoo import results, weights
from zoo.errors import ZooError, first_line

FORMATS = ("onnx", "pt2", "hub")
OPSET = 18
ONNX_TOLERANCE = 1e-4  # largest |onnxruntime (fp32) - torch (float64 reference)| on the logits
CHECK_BATCH = 3  # the checks run a batch of 3; the export traced a batch of 2


@dataclass
class Exported:
    files: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # what to tell the user
    max_abs_difference: float | None = None  # onnx, pt2: against PyTorch at the check size


def check_out(out: Path) -> list[Path]:
    """Prove that `out` can be written, before any work; a ZooError naming it otherwise. Returns
    the folders created for it (deepest first), which `remove_empty` takes back on a failure."""
    created = [path for path in (out, *out.parents) if not path.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".zoo-probe-"):
            pass
    except OSError as error:
        remove_empty(created)
        reason = error.strerror or type(error).__name__
        raise ZooError(
            f"Cannot write the export to {out} ({reason}); pass --out with a folder you can "
            "write to."
        ) from None
    return created


def remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def sample_inputs(info, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(the traced input: a batch of 2 at the dataset's size, the check input: a batch of 3,
    for segmentation also at another height and width, not a multiple of 32)."""
    generator = torch.Generator().manual_seed(0)
    height, width = info.image_size
    traced = torch.randn(2, info.in_chans, height, width, generator=generator)
    if task == "segmentation":
        height, width = max(8, height * 3 // 4 + 5), max(8, width // 2 + 9)
    checked = torch.randn(CHECK_BATCH, info.in_chans, height, width, generator=generator)
    return traced, checked


def export_program(model: torch.nn.Module, sample: torch.Tensor, task: str, name: str):
    """torch.export of the model with a dynamic batch (and height and width for segmentation)."""
    dims = {0: torch.export.Dim.DYNAMIC}
    if task == "segmentation":
        dims.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    try:
        return torch.export.export(model, (sample,), dynamic_shapes=(dims,))
    except Exception as error:  # torch.export raises many kinds; each names what failed
        raise export_error(name, "torch.export", error) from None


def export_error(name: str, step: str, error: BaseException) -> ZooError:
    """One sentence naming the operator that failed, found in the error or its causes."""
    texts, seen = [], error
    while seen is not None:
        texts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    text = "\n".join(texts)
    match = re.search(r"op='([\w.]+)'|torch\.ops\.([\w.]+?)\.default|(aten::\w+)", text)
    operator = next((g for g in match.groups() if g), None) if match else None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    where = f"at operator {operator}" if operator else f"({first[:160]})"
    return ZooError(
        f"{step} of {name} failed {where}; this model cannot be exported to that format as it "
        "is (try --format hub, or replace that operation in the model)."
    )


def onnx_input_names(proto, task: str) -> None:
    """Name the symbolic dimensions of the graph's inputs and outputs batch, height, width."""
    names = {0: "batch", 2: "height", 3: "width"} if task == "segmentation" else {0: "batch"}
    symbols = {}
    for dim_index, dim in enumerate(proto.graph.input[0].type.tensor_type.shape.dim):
        if dim.dim_param and dim_index in names:
            symbols[dim.dim_param] = names[dim_index]
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]


def facts_json(found: weights.Weights) -> str:
    """What an ONNX or pt2 user needs beside the file: classes, input size, normalisation."""
    keys = ("model", "dataset", "version", "task", "class_names", "input_size", "mean", "std",
            "dtype", "run_id", "recipe", "zoo_version", "torch_version")  # fmt: skip
    return json.dumps({key: found.to_dict()[key] for key in keys})


def file_for(out: Path, model: str, suffix: str) -> Path:
    return out / f"{weights.folder_name(model)}{suffix}"


def torch_reference(model, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(PyTorch's output in float64, in float32). The ONNX check measures against the float64
    one, so that it sees the export's error and not PyTorch's own float32 rounding, which in a
    deep net reaches 1e-4 by itself (smp/unet-resnet34: 1.0e-4 from float64, onnxruntime 5e-5)."""
    import copy

    with torch.no_grad():
        float32 = model(inputs)
        try:
            reference = copy.deepcopy(model).double()(inputs.double())
        except RuntimeError:  # an operation without a float64 kernel: float32 it is
            reference = float32.double()
    return reference, float32


def export_onnx(model, info, path: Path, name: str, facts: str = "{}") -> Exported:
    """`model` (eval mode, fp32) as ONNX at `path`, checked with onnxruntime; `facts` (JSON) go
    into its metadata_props["zoo"]. `name` is what error messages call the model."""
    import onnx
    import onnxruntime

    task = info.task
    traced, checked = sample_inputs(info, task)
    program = export_program(model, traced, task, name)
    try:
        onnx_program = torch.onnx.export(
            program, (traced,), dynamo=True, opset_version=OPSET, input_names=["images"],
            output_names=["logits"], verbose=False, external_data=False,
        )  # fmt: skip
    except Exception as error:
        raise export_error(name, "ONNX export", error) from None
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        onnx_program.model.metadata_props["zoo"] = facts
        proto = onnx_program.model_proto
        onnx_input_names(proto, task)
        onnx.save(proto, tmp)
        size = "x".join(map(str, checked.shape))
        try:
            session = onnxruntime.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
            (output,) = session.run(None, {"images": checked.numpy()})
        except Exception as error:  # onnxruntime's own exception types, one per status
            found = re.search(r"running (\w+) node", str(error))
            operator = found[1] if found else type(error).__name__
            raise ZooError(
                f"The ONNX export of {name} fails in onnxruntime at operator {operator} at "
                f"input {size}, another size than it was traced at (an operation whose shape "
                "the exporter fixed); nothing was written (export --format pt2 or hub instead)."
            ) from None
        reference, float32 = torch_reference(model, checked)
        difference = float((torch.from_numpy(output).double() - reference).abs().max())
        rounding = float((float32.double() - reference).abs().max())
        if not difference <= ONNX_TOLERANCE:  # NaN fails too
            raise ZooError(
                f"The ONNX export of {name} differs from PyTorch by {difference:.3g} (more than "
                f"{ONNX_TOLERANCE:g}) at input {size}; nothing was written (export --format pt2 "
                "or hub instead)."
            )
        os.replace(tmp, path)
    except OSError as error:
        raise results.WriteError(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    line = (
        f"{path}: ONNX opset {OPSET}, dynamic "
        f"{'batch, height and width' if task == 'segmentation' else 'batch'}; "
        f"onnxruntime vs PyTorch at {size}: max abs difference {difference:.3g} (PyTorch's "
        f"own float32 output: {rounding:.3g})"
    )
    return Exported([path], [line], difference)


def export_pt2(model, info, path: Path, name: str, facts: str = "{}") -> Exported:
    """`model` as a torch.export program at `path` (extra file zoo.json: `facts`), loaded back
    and checked against the model."""
    traced, checked = sample_inputs(info, info.task)
    program = export_program(model, traced, info.task, name)
    program.example_inputs = None  # torch would pickle them; users pass their own
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.export.save(program, tmp, extra_files={"zoo.json": facts})
        if pickled := pickled_members(tmp):
            raise ZooError(
                f"torch.export would store {', '.join(pickled)} of {name} as a pickle, which zoo "
                "never writes; nothing was written (export --format onnx or hub instead)."
            )
        reloaded = torch.export.load(tmp).module()
        with torch.no_grad():
            difference = float((reloaded(checked) - model(checked)).abs().max())
        if not difference <= ONNX_TOLERANCE:
            raise ZooError(
                f"The torch.export program of {name} differs from the model by {difference:.3g} "
                "after loading it back; nothing was written."
            )
        os.replace(tmp, path)
    except OSError as error:
        raise results.WriteError(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)
    size = "x".join(map(str, checked.shape))
    line = (
        f"{path}: torch.export program (torch {torch.__version__}); loaded back and run at "
        f"{size}: max abs difference {difference:.3g}"
    )
    return Exported([path], [line], difference)


def pickled_members(path: Path) -> list[str]:
    """The members of a .pt2 archive that torch stored as pickles: weights or constants its
    configs mark `use_pickle`, and non-empty example inputs."""
    found = []
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if member.endswith("_config.json") and "/data/" in member:
                config = json.loads(archive.read(member)).get("config", {})
                found += [key for key, entry in config.items() if entry.get("use_pickle")]
            elif "/sample_inputs/" in member and archive.getinfo(member).file_size:
                found.append("the example inputs")
    return found


# ----------------------------------------------------------------------------- hub folder


def model_card(found: weights.Weights, has_curves: bool) -> str:
    """README.md of a hub folder: huggingface_hub's ModelCard with model-index metrics."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from zoo.results import METRIC_LABELS, TASK_METRICS

    task = TASK_METRICS[found.task]
    hub_task = "image-segmentation" if found.task == "segmentation" else "image-classification"
    evaluated = [key for key in task.scores if found.metrics.get(key) is not None]
    card_data = ModelCardData(
        model_name=f"zoo {found.model} ({found.dataset})",
        library_name="zoo",
        pipeline_tag=hub_task,
        tags=["zoo", found.task, found.dataset],
        metrics=evaluated,
        eval_results=[
            EvalResult(
                task_type=hub_task,
                dataset_type=found.dataset,
                dataset_name=found.dataset,
                dataset_split=found.evaluation.get("split", "test"),
                metric_type=key,
                metric_name=METRIC_LABELS.get(key, key),
                metric_value=round(found.metrics[key], 4),
            )  # fmt: skip
            for key in evaluated
        ],
    )
    header = "| class | " + " | ".join(f"test {METRIC_LABELS[k]}" for k in task.per_class) + " |"
    rows = [header, "| --- |" + " ---: |" * len(task.per_class)]
    for name in found.class_names:
        values = found.metrics.get("per_class", {}).get(name, {})
        cells = [f"{values[k]:.3f}" if values.get(k) is not None else "n/a" for k in task.per_class]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    overall = ", ".join(f"{METRIC_LABELS[k]} {found.metrics[k]:.4f}" for k in evaluated)
    source = (
        f"The weights of zoo's published {found.ref}"
        if found.folder and weights.published_root() in found.folder.parents
        else f"The best checkpoint of the run `{found.run_id}`"
    )
    body = f"""# {found.model} on {found.dataset}

{source}, a {found.task} model of zoo with {found.num_parameters:,}
parameters ({found.gflops:.3g} GFLOPs per {found.input_size[1]}x{found.input_size[2]} input),
stored in {found.dtype}.

## Use

```python
import zoo

model = zoo.create_model("{found.model}", pretrained="path/to/this/folder").eval()
```

Inputs are {found.in_chans}-channel {found.input_size[1]}x{found.input_size[2]} images scaled to
[0, 1], then normalised with mean {list(found.mean)} and std {list(found.std)}. Classes:
{", ".join(found.class_names)}.

## Recipe

```bash
{found.recipe}
```

zoo {found.zoo_version}, torch {found.torch_version}.

## Test metrics

{overall} on the {found.dataset} {found.evaluation.get("split", "test")} split
({found.evaluation.get("device", "?")}, {found.evaluation.get("precision", "?")}).

{chr(10).join(rows)}
"""
    if has_curves:
        body += "\n## Training curves\n\n![training curves](curves.png)\n"
    template = "---\n{{ card_data }}\n---\n\n{{ body }}"
    return str(ModelCard.from_template(card_data, template_str=template, body=body))


def export_hub(model, found: weights.Weights, out: Path, name: str) -> Exported:
    """The hub folder in `out`: each file built in a temporary folder, then moved in."""
    from zoo.checkpoint import atomic_save, state_tensors

    staging = Path(tempfile.mkdtemp(prefix=".zoo-export-", dir=out))
    try:
        tensors = state_tensors(model)
        if found.dtype == "float16":
            tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        metadata = {"format": weights.FORMAT, "model": found.model, "dataset": found.dataset}
        atomic_save(staging / weights.WEIGHTS_FILE, tensors, metadata)
        file = staging / weights.WEIGHTS_FILE
        found = dataclasses.replace(
            found, file=weights.WEIGHTS_FILE, file_size=file.stat().st_size,
            sha256=weights.file_sha256(file), folder=None,
        )  # fmt: skip
        has_curves = bool(found.history)
        if has_curves:
            from zoo.plots import plot_curves, save_figure

            save_figure(plot_curves(found.history), staging / "curves.png")
        results.write_json(staging / weights.CONFIG_FILE, found.to_dict())
        results.atomic_write_bytes(staging / "README.md", model_card(found, has_curves).encode())
        files = []
        for path in sorted(staging.iterdir()):
            os.replace(path, out / path.name)
            files.append(out / path.name)
    except OSError as error:
        raise results.WriteError(out, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(files, [f"{out}: Hugging Face Hub folder ({', '.join(p.name for p in files)})"])


def require_token() -> None:
    from huggingface_hub import get_token

    if not get_token():
        raise ZooError(
            "--push needs a Hugging Face token: run `hf auth login` (or set HF_TOKEN) first, or "
            "export without --push and upload the folder later."
        )


def push(folder: Path, repo_id: str) -> str:
    """Upload a hub folder to `repo_id` on the Hugging Face Hub; needs a token and the network."""
    from huggingface_hub import HfApi

    require_token()
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id)
    except Exception as error:  # network, auth, hub errors: one sentence
        raise ZooError(
            f"Could not push {folder} to {repo_id} ({first_line(error)}); the folder is ready, "
            "upload it again when the Hub can be reached."
        ) from None
    return str(getattr(commit, "commit_url", repo_id))


# ----------------------------------------------------------------------------- the command


def export(
    source: str | Path,
    format: str,
    out: str | Path,
    *,
    checkpoint: str | None = None,
    push_to: str | None = None,
) -> Exported:
    """Export a run folder's checkpoint, a hub folder, or published weights by name (`unet-small`)
    as `format` (FORMATS) into the folder `out`; with `push_to` (hub only) upload it too."""
    if format not in FORMATS:
        raise ZooError(f"Unknown --format {format!r}; choose one of {', '.join(FORMATS)}.")
    if push_to and format != "hub":
        raise ZooError("--push uploads a Hugging Face Hub folder: pass it with --format hub.")
    if push_to:
        require_token()
    out = Path(out).expanduser()
    loaded = weights.load_source(source, checkpoint=checkpoint, channels_last=False)
    model, info = loaded.model.float(), loaded.info
    found = loaded.weights or facts_of_run(loaded)
    name, facts = str(source), facts_json(found)
    created = check_out(out)
    try:
        if format == "onnx":
            return export_onnx(model, info, file_for(out, found.model, ".onnx"), name, facts)
        if format == "pt2":
            return export_pt2(model, info, file_for(out, found.model, ".pt2"), name, facts)
        done = export_hub(model, found, out, name)
    except BaseException:
        remove_empty(created)  # a failed export leaves no folder it made behind
        raise
    if push_to:
        done.lines.append(f"Pushed to {push(out, push_to)}")
    return done


def facts_of_run(loaded: weights.Loaded) -> weights.Weights:
    """A run's facts as published weights would carry them, with the test metrics the run
    recorded (not scored again)."""
    from zoo.publish import describe

    record = loaded.record
    evaluation = {
        "split": "test",
        "precision": record.eval_precision,
        "device": record.config.device,
        "batch_size": record.config.eval_batch_size,
        "channels_last": record.config.channels_last,
        "torch": record.environment.get("torch"),
    }
    return describe(
        record, loaded.model, loaded.info, dtype="float32", metrics=record.test or {},
        evaluation=evaluation,
    )  # fmt: skip
