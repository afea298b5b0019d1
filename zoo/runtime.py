"""Where and how a model runs: device and precision resolution, autocast, model preparation
(memory format, torch.compile, DistributedDataParallel) and the unwrapping of every wrapper.

Nothing here knows about datasets or run folders; the loop, evaluation, bench and predict all
resolve devices and precisions through these functions, so they fall back the same way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from zoo.errors import ZooError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when visible), `cpu`, `cuda` or `cuda:N`; a CUDA device without CUDA is a
    ZooError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ZooError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(
            f"--device {name} asked for CUDA, but no CUDA GPU is visible; use --device cpu."
        )
    if device.type not in ("cpu", "cuda"):
        raise ZooError(f"zoo runs on cpu or cuda, not {name!r}; use --device cpu or cuda.")
    return device


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None  # None = fp32
    label: str  # what runs: fp32 | fp16 | bf16
    warning: str | None = None  # why the asked precision does not run, if it does not

    @property
    def needs_grad_scaler(self) -> bool:
        return self.autocast_dtype == torch.float16


def resolve_precision(device: torch.device, amp: bool, amp_dtype: str) -> Precision:
    """Which precision will actually run; falls back to fp32 with a warning, never silently."""
    if not amp:
        return Precision(None, "fp32")
    dtype = torch.float16 if amp_dtype == "float16" else torch.bfloat16
    label = "fp16" if dtype == torch.float16 else "bf16"
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return Precision(None, "fp32", "This GPU has no bf16 support; running fp32.")
        return Precision(dtype, label)
    if dtype == torch.bfloat16 and cpu_has_native_bf16():
        return Precision(dtype, label)
    reason = (
        "fp16 autocast is not used on CPU (use --amp-dtype bfloat16)"
        if dtype == torch.float16
        else "this CPU has no native bf16 support"
    )
    return Precision(None, "fp32", f"--amp ignored: {reason}; running fp32.")


def autocast(device: torch.device, precision: Precision):
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def place_model(model: torch.nn.Module, device: torch.device, channels_last: bool):
    """`model` on `device` in the chosen memory format (in place; returns it)."""
    return model.to(device, memory_format=memory_format(channels_last))


# Compiled / eager training images/s on the CPU, compile time not included, and where it was
# measured (fp32, channels-last, zoo's default batch; torch 2.14.1; the 2-core AMD EPYC VM):
# - ROUNDS: the median of the interleaved rounds of `benchmarks/compile_cpu.py --threads 1
#   --model NAME` (segmentation at --img-size 128), 2026-12-02, beside two trainings;
# - BENCH: `zoo bench --all` and `zoo bench --all --compile` on an idle machine, 2026-12-02, one
#   after the other (benchmarks/zen3-cpu/), for the entries the rounds did not measure.
# docs/benchmarks.md, "--compile on the CPU", has the tables and why.
ROUNDS, BENCH = "benchmarks/compile_cpu.py", "zoo bench (benchmarks/zen3-cpu)"
CPU_COMPILE_SPEED = {
    "baseline-cnn": (0.48, ROUNDS),
    "wide-leaky-cnn": (0.74, ROUNDS),
    "unet-small": (0.89, ROUNDS),
    "strided-net": (0.98, ROUNDS),
    "fcn": (0.94, ROUNDS),
    "smp/deeplabv3plus-resnet34": (0.85, BENCH),
    "smp/fpn-resnet18": (0.76, BENCH),
    "smp/linknet-resnet18": (1.02, BENCH),
    "smp/unet-resnet18": (0.82, BENCH),
    "smp/unet-resnet34": (0.96, BENCH),
    "smp/unet-tu-convnext_atto": (0.98, BENCH),
    "smp/upernet-resnet18": (0.97, BENCH),
    "timm/convnext_atto": (0.86, BENCH),
    "timm/efficientnet_b0": (0.85, BENCH),
    "timm/mobilenetv3_small_100": (1.01, BENCH),
    "timm/regnetx_002": (0.84, BENCH),
    "timm/resnet18": (1.12, BENCH),
    "timm/resnet50": (0.90, BENCH),
    "unet": (0.86, BENCH),
}


def check_compile(device: torch.device) -> None:
    """A ZooError, one sentence, where torch.compile cannot run on `device`: a Python it does not
    support, no C++ compiler for its CPU kernels, no Triton for its GPU kernels."""
    from torch._dynamo.eval_frame import check_if_dynamo_supported
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch.utils._triton import has_triton

    try:
        check_if_dynamo_supported()
    except RuntimeError as error:
        raise ZooError(f"--compile cannot run here ({error}); train without it.") from None
    if device.type == "cpu":
        try:
            get_cpp_compiler()
        except RuntimeError:
            raise ZooError(
                "--compile on the CPU needs a C++ compiler to build torch.compile's kernels and "
                "none was found; install g++ (or set CXX to one), or train without --compile."
            ) from None
    elif not has_triton():
        raise ZooError(
            "--compile on a GPU needs Triton to build torch.compile's kernels and it is not "
            "installed; pip install triton, or train without --compile."
        )


def compile_warning(model_name: str, device: torch.device) -> str | None:
    """Why --compile would slow this model down on `device`, where it was measured to."""
    speed, where = CPU_COMPILE_SPEED.get(model_name, (None, ""))
    if device.type != "cpu" or speed is None or speed >= 1:
        return None
    return (
        f"--compile on the CPU trained {model_name} at {speed:.2f}x the speed of eager in "
        f"{where}, before its compile time (docs/benchmarks.md); drop --compile to train faster."
    )


@contextlib.contextmanager
def compile_failures_explained(model_name: str):
    """torch.compile failing to build `model_name`'s kernels (a C++ compiler that does not work,
    Python headers missing, ...) as a one-sentence ZooError instead of its traceback."""
    from torch._dynamo.exc import BackendCompilerFailed

    try:
        yield
    except BackendCompilerFailed as error:
        inner = error.inner_exception
        lines = str(inner).strip().splitlines()
        reason = f"{type(inner).__name__}: {lines[0] if lines else ''}"[:200]
        raise ZooError(
            f"--compile could not build {model_name}'s kernels ({reason}); fix the compiler "
            "setup, or train without --compile."
        ) from None


def compile_model(model: torch.nn.Module, *, frozen: bool = False) -> torch.nn.Module:
    """`model` in torch.compile, specialised to the shape it first sees: zoo runs a compiled
    model on full training batches only (see zoo.train.train_step), so another shape (the
    bench's halved batch after running out of memory) gets kernels of its own instead of
    switching every later step to shape-generic ones.

    `frozen`: for inference with weights that will not change again (the bench's infer rows),
    inductor's `freezing` folds them into the graph as constants (on the CPU: convolution
    weights packed once for oneDNN), which the inference graph of a training model cannot do.
    """
    return torch.compile(model, dynamic=False, options={"freezing": True} if frozen else None)


def wrap_for_training(
    model: torch.nn.Module, *, compile: bool = False, ddp_device: torch.device | None = None
) -> torch.nn.Module:
    """The module that runs the steps: `model` itself, wrapped in DistributedDataParallel when a
    process group is running (`ddp_device`), then in torch.compile when asked. Checkpoints are
    always taken from `unwrap(...)`, the plain module."""
    if ddp_device is not None:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ddp_device.index] if ddp_device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=device_ids)
    return compile_model(model) if compile else model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under torch.compile's and DistributedDataParallel's wrappers, whose
    state_dict keys are the ones checkpoints use."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
