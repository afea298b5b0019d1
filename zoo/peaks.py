"""The peak FLOP/s that `zoo bench`'s utilisation (MFU) is a share of: one that no kernel on the
machine exceeds. A GPU's datasheet dense figure for the dtype, a CPU's instruction-set figure
(cores x clock x FLOPs per cycle) where it can be derived honestly, or else the best of a matmul
sweep; raised when a measured row outruns it. docs/benchmarks.md has the sources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Dense (no sparsity) peak TFLOP/s from NVIDIA's datasheets and architecture whitepapers: fp32 on
# the CUDA cores, TF32 and fp16/bf16 on the tensor cores with fp32 accumulation (None: no such
# units). Searched in this order in torch.cuda.get_device_name(); a MIG slice matches nothing.
GPU_PEAKS = (
    # pattern, name, fp32, tf32, fp16, bf16
    (r"\bH100\b.*\bPCIe\b", "H100 PCIe", 51.0, 378.0, 756.0, 756.0),
    (r"\bH100\b.*\bNVL\b", "H100 NVL", 60.0, 417.5, 835.5, 835.5),
    (r"\bH100\b", "H100 SXM", 67.0, 494.7, 989.4, 989.4),
    (r"\bH200\b.*\bNVL\b", "H200 NVL", 60.0, 417.5, 835.5, 835.5),
    (r"\bH200\b", "H200 SXM", 67.0, 494.7, 989.4, 989.4),
    (r"\bA100\b", "A100", 19.5, 156.0, 312.0, 312.0),
    (r"\bL40S$", "L40S", 91.6, 183.0, 362.05, 362.05),
    (r"\bL4$", "L4", 30.3, 60.0, 121.0, 121.0),
    (r"\bA10$", "A10", 31.2, 62.5, 125.0, 125.0),
    (r"\bRTX 4090$", "GeForce RTX 4090", 82.6, 82.6, 165.2, 165.2),
    (r"\bRTX 3090$", "GeForce RTX 3090", 35.6, 35.6, 71.0, 71.0),
    (r"\bV100\b.*\bPCIE\b", "V100 PCIe", 14.0, None, 112.0, None),
    (r"\bV100\b", "V100 SXM2", 15.7, None, 125.0, None),
    (r"\bT4$", "T4", 8.1, None, 65.0, None),
)
# fp32 FLOPs per cycle per core of the AMD cores whose vector units are known from the family
# and model in /proc/cpuinfo: (family, first model, last model, name, FLOPs, units).
ZEN_CORES = (
    (0x17, 0x00, 0x2F, "Zen/Zen+", 16, "AVX2 on 2 128-bit FMA units"),
    (0x17, 0x30, 0xFF, "Zen 2", 32, "AVX2, 2 256-bit FMA units"),
    (0x19, 0x00, 0x0F, "Zen 3", 32, "AVX2, 2 256-bit FMA units"),
    (0x19, 0x10, 0x1F, "Zen 4", 32, "AVX-512 on 2 256-bit FMA units"),
    (0x19, 0x20, 0x5F, "Zen 3", 32, "AVX2, 2 256-bit FMA units"),
    (0x19, 0x60, 0x7F, "Zen 4", 32, "AVX-512 on 2 256-bit FMA units"),
    (0x19, 0xA0, 0xAF, "Zen 4", 32, "AVX-512 on 2 256-bit FMA units"),
)
CPUINFO = Path("/proc/cpuinfo")
CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")  # kHz
MATMUL_SIDES = {"cpu": (512, 1024, 2048), "cuda": (2048, 4096, 8192)}


@dataclass(frozen=True)
class Peak:
    """The FLOP/s that MFU is a share of, how it was found, and the matmul sweep beside it."""

    flops: float
    source: str  # "datasheet: ...", "instruction set: ...", "measured: ..."
    matmul: float  # the best matmul of the sweep (FLOP/s)

    def columns(self) -> dict:
        return {
            "peak_tflops": self.flops / 1e12,
            "peak_source": self.source,
            "matmul_tflops": self.matmul / 1e12,
        }


def gpu_rated_peak(name: str, precision: str, tf32: bool) -> tuple[float, str] | None:
    """The datasheet dense peak (FLOP/s) of the GPU `name` for `precision` (fp32 | fp16 | bf16;
    fp32 counts as TF32 when `tf32` lets cuDNN or cuBLAS use it), and where it comes from;
    None for a GPU not in GPU_PEAKS or a MIG slice of one."""
    if "MIG" in name:
        return None
    for pattern, label, fp32, tf32_peak, fp16, bf16 in GPU_PEAKS:
        if re.search(pattern, name.strip(), re.IGNORECASE):
            if precision == "fp32" and tf32 and tf32_peak:
                return tf32_peak * 1e12, f"datasheet: {label}, dense TF32 tensor cores"
            if precision == "fp32":
                return fp32 * 1e12, f"datasheet: {label}, fp32 CUDA cores"
            peak = {"fp16": fp16, "bf16": bf16}[precision]
            if peak is None:
                return None
            return peak * 1e12, f"datasheet: {label}, dense {precision} tensor cores"
    return None


def read_cpuinfo(path: Path = CPUINFO) -> list[dict]:
    """One dict per logical CPU of /proc/cpuinfo ([] where there is none)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    return [
        {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}
        for block in text.strip().split("\n\n")
        if block.strip()
    ]


def cpu_clock(processors: list[dict]) -> tuple[float, str] | None:
    """The cores' clock (Hz): cpufreq's maximum where the kernel has it (the boost clock), else
    the highest 'cpu MHz' of /proc/cpuinfo (in a VM, the clock the hypervisor reports)."""
    try:
        return int(CPUFREQ_MAX.read_text()) * 1e3, "cpufreq's cpuinfo_max_freq"
    except (OSError, ValueError):
        pass
    clocks = [float(p["cpu MHz"]) for p in processors if p.get("cpu MHz")]
    return (max(clocks) * 1e6, "'cpu MHz' in /proc/cpuinfo") if clocks else None


def cpu_rated_peak(precision: str, threads: int, path: Path = CPUINFO) -> tuple[float, str] | None:
    """The instruction-set peak (FLOP/s) of this CPU for `precision`: cores used (physical
    cores, at most `threads`) x clock x FLOPs per cycle per core, for the cores in ZEN_CORES
    and fp32 only; None where it cannot be derived honestly (other CPUs, bf16: see
    docs/benchmarks.md)."""
    processors = read_cpuinfo(path)
    if precision != "fp32" or not processors:
        return None
    first = processors[0]
    flags = set(first.get("flags", "").split())
    try:
        family, model = int(first["cpu family"]), int(first["model"])
    except (KeyError, ValueError):
        return None
    if first.get("vendor_id") != "AuthenticAMD" or not {"fma", "avx2"} <= flags:
        return None
    found = [z for z in ZEN_CORES if z[0] == family and z[1] <= model <= z[2]]
    clock = cpu_clock(processors)
    if not found or clock is None:
        return None
    _, _, _, core, per_cycle, units = found[0]
    physical = {(p.get("physical id"), p.get("core id")) for p in processors}  # SMT: one each
    cores = min(threads, len(processors) if (None, None) in physical else len(physical))
    return cores * clock[0] * per_cycle, (
        f"instruction set: {cores} core{'s' * (cores != 1)} x {clock[0] / 1e9:.4g} GHz "
        f"({clock[1]}) x {per_cycle} fp32 FLOP/cycle ({core}: {units})"
    )


def cpu_identity(path: Path = CPUINFO) -> str | None:
    """'AuthenticAMD family 25 model 1' (a VM may hide the model name, not these)."""
    processors = read_cpuinfo(path)
    if not processors or "cpu family" not in processors[0]:
        return None
    first = processors[0]
    return f"{first.get('vendor_id')} family {first['cpu family']} model {first.get('model')}"


def rated_peak(device, precision) -> tuple[float, str] | None:
    """The peak from the device's datasheet (GPUs) or instruction set (CPUs), if known."""
    import torch

    if device.type == "cuda":
        tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
        return gpu_rated_peak(torch.cuda.get_device_name(device), precision.label, tf32)
    return cpu_rated_peak(precision.label, torch.get_num_threads())


def matmul_sweep(device, precision, seconds: float = 2.0, repeats: int = 3) -> float:
    """The best matmul throughput (FLOP/s) in the setting's dtype over MATMUL_SIDES and
    `repeats` timed loops of each, `seconds` in all."""
    import time

    import torch

    from zoo.runtime import synchronize

    sides = MATMUL_SIDES["cuda" if device.type == "cuda" else "cpu"]
    dtype = precision.autocast_dtype or torch.float32
    share = seconds / (len(sides) * repeats)
    best = 0.0
    for side in sides:
        a = torch.randn(side, side, device=device, dtype=dtype)
        b = torch.randn(side, side, device=device, dtype=dtype)
        a @ b
        synchronize(device)
        for _ in range(repeats):
            count, start = 0, time.perf_counter()
            while count < 1 or time.perf_counter() - start < share:
                a @ b
                count += 1
            synchronize(device)
            best = max(best, 2 * side**3 * count / (time.perf_counter() - start))
    return best


def machine_peak(device, precision, seconds: float = 2.0) -> Peak:
    """The peak that MFU is a share of, one that no kernel should exceed: the datasheet (GPU)
    or instruction-set (CPU) figure where it is known and at least the matmul sweep, else the
    sweep's best; the sweep is recorded beside it either way."""
    matmul = matmul_sweep(device, precision, seconds)
    rated = rated_peak(device, precision)
    if rated is not None and rated[0] >= matmul:
        return Peak(rated[0], rated[1], matmul)
    sides = ", ".join(map(str, MATMUL_SIDES["cuda" if device.type == "cuda" else "cpu"]))
    source = f"measured: the best matmul of sides {sides}, 3 repeats each"
    if rated is not None:
        source += f" (above the {rated[1]}, {rated[0] / 1e12:.4g} TFLOP/s)"
    return Peak(matmul, source, matmul)


def outruns(row: dict, peak: Peak) -> bool:
    return row.get("achieved_tflops") is not None and row["achieved_tflops"] * 1e12 > peak.flops


def raise_peak(peak: Peak, row: dict, device, precision, seconds: float = 2.0) -> Peak:
    """A new peak after `row` outran `peak`: the matmul sweep measured again, and the larger of
    it and the row's achieved FLOP/s, so that no row reads above 100%."""
    matmul = max(peak.matmul, matmul_sweep(device, precision, seconds))
    achieved = row["achieved_tflops"] * 1e12
    kind = peak.source.split(":")[0]
    who = f"{row['model']} {row['mode']}"
    why = f"the {kind} peak ({peak.flops / 1e12:.4g} TFLOP/s) was outrun by {who}"
    if matmul >= achieved:
        return Peak(
            matmul, f"measured: the best matmul of a sweep measured again after {why}", matmul
        )
    return Peak(
        achieved, f"measured: the fastest row, {row['model']} {row['mode']}, after {why}", matmul
    )


def apply_peak(row: dict, peak: Peak) -> None:
    """Set the row's peak columns and its MFU (rows without figures keep them empty)."""
    if row.get("achieved_tflops") is not None:
        row.update(peak.columns(), mfu=row["achieved_tflops"] * 1e12 / peak.flops)
