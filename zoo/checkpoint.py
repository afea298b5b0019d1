"""Weights and training states on disk: safetensors for tensors, JSON for everything else.

- `save_weights` / `load_weights`: a model's state dict (best.safetensors, last.safetensors,
  --weights files), with string metadata (model, dataset, epoch, ...).
- `save_training_state` / `load_training_state`: everything `zoo train --resume` needs to go on
  as if never stopped: model, optimizer, scheduler, GradScaler, the torch (and CUDA) RNG states,
  the shuffle generator and the loop's progress (epoch, step, best score, history). One
  safetensors file whose metadata holds the JSON part, so the pair can never be half-updated.

Every file is written to a hidden temporary name and renamed into place. Nothing is unpickled:
a pickle (`torch.save` output) is refused with a sentence saying how to convert it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from zoo.errors import ZooError, first_line
from zoo.results import BEST, LAST, STATE, WriteError  # noqa: F401 (the file names, re-exported)
from zoo.runtime import unwrap

STATE_FORMAT = "zoo-training-state/1"
PICKLE_HINT = (
    "zoo loads safetensors files only, never pickles; convert it once, with code you trust: "
    'python -c "import torch; from safetensors.torch import save_file; '
    "save_file(torch.load('IN.pt', weights_only=True), 'OUT.safetensors')\""
)


class CheckpointError(ZooError):
    """A weights or training-state file that cannot be read; the message names the file."""


def atomic_save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors file written to `.NAME.tmp` and renamed, so readers never see half of one.

    A failed write (full disk, ...) leaves the previous file as it was and raises WriteError."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as error:
        raise WriteError(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The plain module's state dict on the CPU, contiguous, as safetensors stores it."""
    return {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}


def save_weights(path: Path, model: torch.nn.Module, metadata: dict[str, str]) -> None:
    """The model's weights as safetensors; metadata values must be strings."""
    atomic_save(path, state_tensors(model), metadata)


def looks_like_pickle(path: Path) -> bool:
    """torch.save writes a zip archive (PK..) or, before PyTorch 1.6, a raw pickle (0x80 ..).
    A safetensors file starts with its header's length (8 bytes, little-endian, whose first
    byte may be anything) and then the header's `{`."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_tensors(path: Path, what: str, fix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of a safetensors file; CheckpointError naming the file otherwise."""
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist; {fix}")
    if looks_like_pickle(path):
        raise CheckpointError(f"{what} {path} is a PyTorch pickle: {PICKLE_HINT}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{what} {path} is not a readable safetensors file ({first_line(error)}); {fix}"
        ) from None
    return tensors, metadata


def load_weights(
    model: torch.nn.Module,
    path: str | Path,
    name: str,
    *,
    what: str = "Weights file",
    fix: str | None = None,
) -> dict[str, str]:
    """Load a safetensors state dict into `model` strictly: every key present, every shape equal.

    Returns the file's metadata. A missing, damaged, pickled or not fitting file is a
    CheckpointError naming `what` and `path`, ending with `fix` (by default, the fix for a
    --weights file).
    """
    fix = fix or f"pass a safetensors file saved from {name} with the same classes and channels."
    tensors, metadata = read_tensors(Path(path), what, fix)
    try:
        unwrap(model).load_state_dict(tensors)
    except RuntimeError as error:  # missing or unexpected keys, other shapes
        raise CheckpointError(
            f"{what} {path} does not fit {name} ({first_line(error)}); {fix}"
        ) from None
    return metadata


# ----------------------------------------------------------------------------- training state


def split_state(prefix: str, state: object, tensors: dict[str, torch.Tensor]) -> object:
    """Move every tensor of a nested state dict into `tensors` (keyed by its path) and return
    the rest, JSON-ready, with each tensor replaced by {"tensor": key}."""
    if isinstance(state, torch.Tensor):
        key = prefix
        tensors[key] = state.detach().contiguous().cpu()
        return {"tensor": key}
    if isinstance(state, dict):
        return {"dict": [[k, split_state(f"{prefix}.{k}", v, tensors)] for k, v in state.items()]}
    if isinstance(state, list | tuple):
        return {"list": [split_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(state)]}
    return {"value": state}


def join_state(encoded: object, tensors: dict[str, torch.Tensor]) -> object:
    """The inverse of `split_state` (tuples come back as lists, which state dicts accept);
    ValueError for anything `split_state` does not write."""
    if not isinstance(encoded, dict) or len(encoded) != 1:
        raise ValueError(f"{encoded!r:.40} is not an encoded state")
    ((kind, payload),) = encoded.items()
    if kind == "tensor":
        return tensors[payload]
    if kind == "dict":
        return {key: join_state(value, tensors) for key, value in payload}
    if kind == "list":
        return [join_state(value, tensors) for value in payload]
    if kind == "value":
        return payload
    raise ValueError(f"unknown state entry {kind!r}")


def save_training_state(path: Path, trainer, generator: torch.Generator, progress: dict) -> None:
    """Write everything needed to resume exactly: `trainer`'s model, optimizer, scheduler and
    GradScaler (a zoo.train.Trainer), the RNG states, and `progress`, the loop's JSON-ready
    state."""
    model, optimizer, scheduler = trainer.model, trainer.optimizer, trainer.scheduler
    tensors = {f"model.{k}": v for k, v in state_tensors(model).items()}
    rng = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    document = {
        "optimizer": split_state("optimizer", optimizer.state_dict(), tensors),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": trainer.scaler.state_dict(),
        "rng": split_state("rng", rng, tensors),
        "progress": progress,
    }
    atomic_save(path, tensors, {"format": STATE_FORMAT, "state": json.dumps(document)})


def match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments, SGD's momentum) its parameter's
    memory format again: the file holds them contiguous, and the fused optimizers walk a
    parameter and its state in memory order, so a channels-last weight with a contiguous
    moment would be updated from the wrong elements."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == param.shape
                    and value.stride() != param.stride()
                ):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def read_state_progress(path: Path) -> dict:
    """The loop's progress (epoch, step, history, best score) saved in a training state, read
    from its metadata without loading a tensor."""
    from safetensors import SafetensorError, safe_open

    fix = "resume from a run folder written by `zoo train`, or start a new run."
    if Path(path).is_file() and looks_like_pickle(path):
        raise CheckpointError(f"Training state {path} is a PyTorch pickle: {PICKLE_HINT}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return json.loads(metadata["state"])["progress"]
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"Training state {path} cannot be read ({error}); {fix}") from None


def load_training_state(path: Path, trainer, generator: torch.Generator) -> dict:
    """Restore what `save_training_state` wrote into `trainer` and `generator`; returns the
    progress."""
    model, optimizer, scheduler = trainer.model, trainer.optimizer, trainer.scheduler
    fix = "resume from a run folder written by `zoo train`, or start a new run."
    tensors, metadata = read_tensors(Path(path), "Training state", fix)
    if metadata.get("format") != STATE_FORMAT:
        raise CheckpointError(
            f"Training state {path} is not a {STATE_FORMAT} file "
            f"(format {metadata.get('format')!r}); {fix}"
        )
    try:
        document = json.loads(metadata["state"])
        weights = {
            key.removeprefix("model."): value
            for key, value in tensors.items()
            if key.startswith("model.")
        }
        model.load_state_dict(weights)
        optimizer.load_state_dict(join_state(document["optimizer"], tensors))
        match_parameter_layouts(optimizer)
        if scheduler is not None:
            scheduler.load_state_dict(document["scheduler"])
        if document["scaler"]:
            trainer.scaler.load_state_dict(document["scaler"])
        rng = join_state(document["rng"], tensors)
        torch.set_rng_state(rng["torch"])
        generator.set_state(rng["generator"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        progress = document["progress"]
        if not isinstance(progress, dict) or not {"epoch", "step", "history"} <= set(progress):
            raise ValueError("no progress (epoch, step, history)")
    # A file's content is untrusted input: whatever fails to apply makes it "not fit".
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as error:
        raise CheckpointError(
            f"Training state {path} does not fit this run ({first_line(error)}); {fix}"
        ) from None
    return progress
