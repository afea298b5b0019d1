"""`zoo bench`: the rows and files, merging into them, error rows, interrupted runs, FLOP
units, the peak MFU is a share of, timm's columns, the committed files, bad input."""

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from zoo import bench, benchfiles, peaks
from zoo.cli import app

runner = CliRunner()
QUICK = ["--budget", "0.2", "--repeats", "1"]


def test_a_bench_writes_typed_rows_to_files_named_by_setting(tmp_path):
    result = runner.invoke(app, ["bench", "baseline-cnn", *QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    torch_version = torch.__version__.split("+")[0]
    assert names[0].startswith(f"benchmark-infer-fp32-nhwc-pt{torch_version}-")
    assert {n.rsplit(".", 1)[1] for n in names} == {"csv", "json"} and len(names) == 4
    rows, warnings = benchfiles.load_bench_rows(tmp_path)
    assert warnings == [] and [r["mode"] for r in rows] == ["infer", "train"]
    for row in rows:
        assert list(row) == list(benchfiles.BENCH_COLUMNS)
        assert row["error"] is None and row["params"] == 211_690
        assert row["batch_size"] == row["batch_size_asked"] == 128 and not row["oom_retried"]
        assert row["images_per_second"] > 0 and row["latency_ms_median"] > 0
        assert row["latency_ms_p90"] >= row["latency_ms_median"] and row["timed_iterations"] >= 6
        assert 0 < row["mfu"] <= 1 and row["peak_tflops"] >= row["matmul_tflops"] > 0
        assert row["peak_source"] and row["measured_at"] and row["torch"] == torch.__version__
        assert row["input_shape"] == "1x28x28" and row["precision"] == "fp32"
        assert row[f"{row['mode']}_samples_per_sec"] == row["images_per_second"]
        assert row["param_count"] == pytest.approx(0.21169)
    infer, train = rows
    assert train["flops_per_image"] == pytest.approx(3 * infer["flops_per_image"], rel=0.1), (
        "a training step is about 3 forwards (forward + backward)"
    )


def test_a_model_that_fails_is_an_error_row_and_the_others_go_on(tmp_path):
    # 3x3 inputs: baseline-cnn's two max-pools leave nothing; the timm net upsamples them.
    args = ["bench", "baseline-cnn", "timm/mobilenetv3_small_100", "--img-size", "3"]
    result = runner.invoke(app, [*args, "--mode", "infer", *QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    failed, worked = benchfiles.load_bench_rows(tmp_path)[0]
    assert (
        failed["model"] == "baseline-cnn"
        and failed["error"]
        and failed["images_per_second"] is None
    )
    assert worked["error"] is None and worked["images_per_second"] > 0


def test_throughput_is_sustained_and_latency_per_iteration():
    """A stall counts in throughput (each repeat's images over its time, the median repeat),
    not in the median latency: batch / median latency would overstate a long run's speed."""
    repeats = [[0.010, 0.010, 0.010, 0.050], [0.010] * 4, [0.020] * 4]
    figures = bench.summarize(repeats, batch=100)
    assert figures["images_per_second"] == pytest.approx(100 / 0.020)  # means 0.02, 0.01, 0.02
    assert figures["latency_ms_median"] == pytest.approx(10.0)
    assert figures["latency_ms_p99"] > figures["latency_ms_p90"] > figures["latency_ms_median"]
    assert figures["timed_iterations"] == 12


def test_flops_are_twice_the_multiply_adds():
    layer = torch.nn.Linear(10, 4, bias=False)
    assert bench.count_flops(layer, torch.randn(3, 10)) == 2 * 3 * 10 * 4


@pytest.mark.parametrize(
    "layer",
    [
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16),  # depthwise
        torch.nn.Conv2d(16, 32, 3, stride=2, groups=4),
        torch.nn.ConvTranspose2d(16, 8, 2, stride=2),
        torch.nn.ConvTranspose2d(16, 8, 2, stride=2, groups=4),
    ],
    ids=["conv", "depthwise", "grouped-strided", "transposed", "transposed-grouped"],
)
def test_a_convolution_backward_counts_twice_its_forward(layer):
    """The input and the weight gradients each cost a forward, groups or not (torch 2.14's own
    formula counts a depthwise backward `groups` times over)."""
    images = torch.randn(2, layer.in_channels, 8, 8, requires_grad=True)
    forward = bench.count_flops(layer, images)
    assert forward > 0
    assert bench.count_flops(lambda x: layer(x).sum().backward(), images) == 3 * forward


def test_bad_input_is_one_sentence_before_any_work(tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "baselin-cnn", "--out", str(out)])
    assert result.exit_code == 1 and "Did you mean 'baseline-cnn'" in result.stderr
    if not torch.cuda.is_available():
        result = runner.invoke(
            app, ["bench", "baseline-cnn", "--device", "cuda", "--out", str(out)]
        )
        assert result.exit_code == 1 and "no CUDA GPU is visible" in result.stderr
    result = runner.invoke(app, ["bench", "--out", str(out)])
    assert result.exit_code == 1 and "or pass --all" in result.stderr
    assert not out.exists() and "Traceback" not in result.output


def test_fp16_amp_on_the_cpu_is_reported_as_not_applied(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    args = ["bench", "baseline-cnn", "--amp", "--mode", "infer", *QUICK, "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "--amp ignored" in result.stderr
    ((row,), _) = benchfiles.load_bench_rows(tmp_path)
    assert row["precision"] == "fp32"


def test_a_malformed_bench_file_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "benchmark-infer-x.csv").write_text("model,speed\nfoo,fast\n")
    (tmp_path / "benchmark-train-y.csv").write_bytes(b"\xff\xfe\x00garbage")
    rows, warnings = benchfiles.load_bench_rows(tmp_path)
    assert rows == [] and len(warnings) == 2
    assert all("not a zoo bench file" in w for w in warnings)


@pytest.mark.parametrize("retry", [True, False])
def test_out_of_memory_halves_the_batch_and_says_so(monkeypatch, retry):
    """A stand-in for CUDA running out of memory above 32 images (the code path is the same on
    any device): the batch is halved until it fits and the row says so; --no-retry: error row."""
    import zoo.registry

    real = zoo.registry.create_model

    class RunsOutAbove32(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images):
            if len(images) > 32:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.model(images)

    monkeypatch.setattr(
        zoo.registry, "create_model", lambda *args, **kwargs: RunsOutAbove32(real(*args, **kwargs))
    )
    setting = bench.Setting(mode="infer", device="cpu", repeats=1, budget=0.1, retry=retry)
    row = bench.measure_model("baseline-cnn", setting)
    if retry:
        assert row["error"] == "" and row["oom_retried"]
        assert row["batch_size_asked"] == 128 and row["batch_size"] == 32
    else:
        assert row["error"].startswith("OutOfMemoryError") and row["images_per_second"] is None


@pytest.mark.timeout(660)  # its command may take 600 s
def test_the_independent_check_measures_both_ways_in_turn_and_writes_its_figures(tmp_path):
    """benchmarks/bench_check.py (the check of zoo bench's figures) runs end to end: zoo bench
    and the Timer each measure twice, and the verdict follows from the two medians. Whether they
    agree within 10% is the benchmark's question, not this test's (a busy machine can tip it)."""
    script = Path(__file__).parents[1] / "benchmarks" / "bench_check.py"
    out = tmp_path / "check.json"
    command = [sys.executable, str(script), "--models", "baseline-cnn", "--modes", "infer"]
    command += ["--repeats", "2", "--budget", "0.2", "--json", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    (result,) = json.loads(out.read_text())
    assert len(result["zoo"]) == len(result["timer"]) == 2
    assert all(rate > 100 for rate in result["zoo"] + result["timer"]), result
    ratio = statistics.median(result["zoo"]) / statistics.median(result["timer"])
    assert result["ratio"] == pytest.approx(ratio)
    higher = sum(a > b for a, b in zip(result["zoo"], result["timer"], strict=True))
    verdict = "PASS" if abs(ratio - 1) <= 0.10 else "FAIL"
    assert proc.returncode == (verdict == "FAIL")
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("baseline-cnn")]
    assert line.split()[-2:] == [f"{higher}/2", verdict]


# ----------------------------------------------------------------------------- merging files

COMMITTED = Path("results/bench")
INFER_FP32 = "benchmark-infer-fp32-nhwc-pt2.14.1-amd-epyc"
ZEN3_FOLDER = Path("benchmarks/zen3-cpu")  # eager and compiled fp32 rows of one machine and day
# What timm's benchmark.py writes with --bench both and a FLOP counter installed (its
# infer_macts, fvcore's activation count, is the one column zoo does not count).
TIMM_BENCHMARK_COLUMNS = [
    "model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size",
    "infer_gmacs", "train_samples_per_sec", "train_step_time", "train_batch_size",
    "train_img_size", "param_count",
]  # fmt: skip


def committed_copy(folder: Path) -> Path:
    """The committed bench files, copied under the names a fp32 nhwc CPU bench writes on this
    machine (the committed names where it is the committed files' machine)."""
    from zoo.results import cpu_model

    env = {"device_name": cpu_model(), "torch": torch.__version__}
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(COMMITTED.iterdir()):
        _, mode, precision, layout, *_ = path.stem.split("-")
        stem = benchfiles.bench_file_stem(mode, precision, layout, env)
        shutil.copy(path, folder / f"{stem}{path.suffix}")
    return folder


def this_machines(folder: Path, mode: str = "infer", precision: str = "fp32") -> Path:
    from zoo.results import cpu_model

    env = {"device_name": cpu_model(), "torch": torch.__version__}
    return folder / f"{benchfiles.bench_file_stem(mode, precision, 'nhwc', env)}.csv"


def test_a_bench_replaces_its_models_rows_and_keeps_every_other_row(tmp_path):
    """Issue 21: benching one model rewrote a 19-row file as 1 row. Now it merges: the model's
    row is replaced where it stood (not duplicated), every other row and file is untouched."""
    out = committed_copy(tmp_path / "bench")
    before = {path: path.read_bytes() for path in out.iterdir()}
    target = this_machines(out)
    old, _ = benchfiles.read_bench_csv(target)
    args = ["bench", "baseline-cnn", "--mode", "infer", "--device", "cpu", *QUICK]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    new, version = benchfiles.read_bench_csv(target)
    assert version == benchfiles.SCHEMA_VERSION
    assert [row["model"] for row in new] == [row["model"] for row in old]  # 19 rows, in place
    for was, now in zip(old, new, strict=True):
        if was["model"] == "baseline-cnn":
            assert (
                now["measured_at"] and now["images_per_second"] > 0 and was["measured_at"] is None
            )
        else:
            assert now == was
    for path, data in before.items():
        if path.stem != target.stem:
            assert path.read_bytes() == data, f"{path.name} changed"
    header = json.loads(target.with_suffix(".json").read_text())
    assert [run["measured_at"] for run in header["runs"]] == [None, new[0]["measured_at"]]
    assert header["migrations"] and header["rows"] == new


LAUNCHER = """
import os, signal, sys
from zoo import bench
from zoo.cli import app

write_merged = bench.write_merged

def write_then_interrupt(*args, **kwargs):
    write_merged(*args, **kwargs)
    os.killpg(0, signal.SIGINT)  # a terminal's Ctrl-C, to the whole process group

bench.write_merged = write_then_interrupt
app(prog_name="zoo")
"""


@pytest.mark.timeout(660)  # its command may take 600 s
def test_ctrl_c_after_the_first_row_keeps_it_and_every_row_not_measured(tmp_path):
    """Ctrl-C right after the first row is written (injected there: not speed dependent): the
    file holds that row and every committed row the run did not get to, nothing else changed."""
    out = committed_copy(tmp_path / "bench")
    target = this_machines(out)
    old, _ = benchfiles.read_bench_csv(target)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    command = [sys.executable, str(launcher), "bench", "baseline-cnn", "wide-leaky-cnn"]
    command += ["--mode", "infer", "--device", "cpu", *QUICK, "--out", str(out)]
    proc = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": os.getcwd()}, capture_output=True, timeout=600,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
        # A shell's background job starts with SIGINT ignored, and children inherit that: give
        # zoo the default disposition, as a terminal would, wherever pytest itself was started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.returncode == 130, proc.stderr.decode()
    assert b"rows measured so far are in the bench files" in proc.stderr
    new, _ = benchfiles.read_bench_csv(target)
    assert [row["model"] for row in new] == [row["model"] for row in old]
    changed = [now["model"] for was, now in zip(old, new, strict=True) if now != was]
    assert changed == ["baseline-cnn"] and new[0]["measured_at"] and new[0]["mfu"] <= 1
    assert json.loads(target.with_suffix(".json").read_text())["rows"] == new


def fake_row(model: str, setting, achieved: float) -> dict:
    """A measured row without measuring (its achieved TFLOP/s given)."""
    row = bench.new_row(model, setting) | bench.describe(model, setting)
    row |= {"batch_size": row["batch_size_asked"], "params": 1000, "flops_per_image": 1e9}
    row |= {"images_per_second": achieved * 1e3, "latency_ms_median": 1.0, "latency_ms_p90": 1.0}
    row |= {"peak_memory_mb": 1.0, "achieved_tflops": achieved}
    return row | benchfiles.timm_columns(row)


@pytest.fixture
def fake_measuring(monkeypatch):
    """run_bench without child processes or matmuls: a 0.1 TFLOP/s instruction-set peak, a
    0.09 matmul sweep, and rows whose achieved TFLOP/s the test sets in the returned dict."""
    achieved = {}  # {model or (model, mode): achieved TFLOP/s}

    def measure(model, setting):
        return fake_row(model, setting, achieved.get((model, setting.mode), achieved.get(model)))

    monkeypatch.setattr(bench, "measure_in_child", measure)
    peak = peaks.Peak(1e11, "instruction set: 1 core x 1 GHz x 100 FLOP/cycle", 0.9e11)
    monkeypatch.setattr(bench, "machine_peak", lambda *args, **kwargs: peak)
    monkeypatch.setattr(peaks, "matmul_sweep", lambda *args, **kwargs: 0.95e11)
    return achieved


SETTING = bench.Setting(device="cpu", repeats=1, budget=0.1)


def test_a_row_that_outruns_the_peak_raises_it_for_every_row_of_the_run(tmp_path, fake_measuring):
    """The last row (unet-small's training step) outruns the 0.1 TFLOP/s peak: the peak becomes
    its 0.2, in every row of the run, the inference file's too."""
    fake_measuring |= {"baseline-cnn": 0.05, "unet-small": 0.08, ("unet-small", "train"): 0.2}
    notes = []
    models = ["baseline-cnn", "unet-small"]
    rows = bench.run_bench(models, SETTING, tmp_path, on_note=notes.append)
    assert [row["mfu"] for row in rows] == pytest.approx([0.25, 0.4, 0.25, 1.0])
    assert [row["peak_tflops"] for row in rows] == pytest.approx([0.2] * 4)
    assert rows[0]["peak_source"].startswith("measured: the fastest row, unet-small train")
    assert "instruction set peak (0.1 TFLOP/s) was outrun" in rows[0]["peak_source"]
    assert rows[0]["matmul_tflops"] == pytest.approx(0.095)
    assert notes[0].startswith("Benchmarking 2 models (infer, train) on cpu, fp32")
    assert len(notes) == 2 and notes[1].startswith("Peak raised to 0.2 TFLOP/s")
    written, _ = benchfiles.load_bench_rows(tmp_path)
    assert [row["mfu"] for row in written] == pytest.approx([0.25, 0.4, 0.25, 1.0])


def legacy_file(path: Path, rows: list[dict], peak: float) -> Path:
    """A schema-1 bench file (before 2026-12-01): its columns, its one measured matmul peak."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, benchfiles.LEGACY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row | {"peak_tflops": peak, "mfu": row["achieved_tflops"] / peak})
    path.with_suffix(".json").write_text(json.dumps({"environment": {"torch": "2.14.1+cu130"}}))
    return path


def test_a_file_of_the_previous_schema_is_migrated_never_dropped(tmp_path, fake_measuring):
    committed, _ = benchfiles.read_bench_csv(COMMITTED / f"{INFER_FP32}.csv")
    rows = [
        row | {"achieved_tflops": a} for row, a in zip(committed[:3], (0.3, 0.1, 0.12), strict=True)
    ]
    path = legacy_file(tmp_path / "old" / f"{INFER_FP32}.csv", rows, peak=0.2)
    read, warnings = benchfiles.load_bench_rows(path.parent)  # readers migrate in memory
    assert not warnings and [row["mfu"] for row in read] == pytest.approx([1.0, 1 / 3, 0.4])
    assert read[0]["peak_source"].startswith("migrated: the fastest row of its bench run")
    assert read[0]["infer_samples_per_sec"] == read[0]["images_per_second"]
    assert read[0]["torch"] == "2.14.1+cu130" and read[0]["matmul_tflops"] == 0.2
    # a bench into its folder migrates it, then merges: the three rows stay, one is replaced
    out = tmp_path / "out"
    legacy_file(this_machines(out), rows, peak=0.2)
    fake_measuring["fcn"] = 0.05
    bench.run_bench(["fcn"], dataclasses.replace(SETTING, mode="infer"), out)
    merged, version = benchfiles.read_bench_csv(this_machines(out))
    assert version == benchfiles.SCHEMA_VERSION and len(merged) == 3
    assert [row["measured_at"] is None for row in merged] == [True, False, True]
    header = json.loads(this_machines(out).with_suffix(".json").read_text())
    assert header["migrations"][0]["from_schema"] == 1


def test_a_garbage_bench_file_is_named_and_the_other_files_are_still_read(tmp_path):
    shutil.copy(COMMITTED / f"{INFER_FP32}.csv", tmp_path / f"{INFER_FP32}.csv")
    bad = dict.fromkeys(benchfiles.BENCH_COLUMNS) | {"model": "x", "mode": "infer"}
    (tmp_path / "benchmark-infer-a.csv").write_text(
        benchfiles.rows_csv([bad, bad | {"images_per_second": "fast"}])
    )
    short = benchfiles.rows_csv([bad]) + "baseline-cnn,classification\n"
    (tmp_path / "benchmark-train-b.csv").write_text(short)
    rows, warnings = benchfiles.load_bench_rows(tmp_path)
    assert len(rows) == 19 and len(warnings) == 2
    a, b = warnings
    assert str(tmp_path / "benchmark-infer-a.csv") in a and "line 3 has images_per_second" in a
    assert str(tmp_path / "benchmark-train-b.csv") in b and "line 3 has 2 cells" in b
    assert all(w.count(". ") == 0 and w.endswith(".") for w in warnings)  # one sentence each


@pytest.mark.parametrize(
    "content, message",
    [
        ("model,speed\nbaseline-cnn,fast\n", "not a zoo bench file of this version"),
        (",".join(benchfiles.BENCH_COLUMNS) + "\nbaseline-cnn,oops\n", "line 2 has 2 cells"),
    ],
    ids=["other-columns", "garbage-row"],
)
def test_a_bench_stops_before_any_work_when_its_file_cannot_be_merged(
    tmp_path, monkeypatch, content, message
):
    target = this_machines(tmp_path)
    target.write_text(content)
    monkeypatch.setattr(bench, "machine_peak", lambda *a, **k: pytest.fail("work started"))
    args = ["bench", "baseline-cnn", "--mode", "infer", "--device", "cpu", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Cannot add rows to {target}" in result.stderr and message in result.stderr
    assert target.read_text() == content


@pytest.mark.parametrize("folder,files", [(COMMITTED, 4), (ZEN3_FOLDER, 2)], ids=["bench", "zen3"])
def test_the_committed_bench_files_are_current_and_no_row_is_above_100_percent(folder, files):
    paths = sorted(folder.glob("benchmark-*.csv"))
    assert len(paths) == files
    for path in paths:
        rows, version = benchfiles.read_bench_csv(path)
        migrate = "run zoo.benchfiles.migrate_bench_folder"
        assert version == benchfiles.SCHEMA_VERSION, f"{path}: {migrate}"
        header = json.loads(path.with_suffix(".json").read_text())
        assert header["schema_version"] == benchfiles.SCHEMA_VERSION and header["rows"] == rows
        if any(row["measured_at"] is None for row in rows):  # rows of the 2026-11-28 run
            assert header["migrations"][0]["how"] == benchfiles.MIGRATION_NOTE
        for row in (row for row in rows if row["error"] is None):
            assert 0 < row["mfu"] <= 1, f"{path.name} {row['model']}: MFU {row['mfu']:.1%}"
            assert row["mfu"] == pytest.approx(row["achieved_tflops"] / row["peak_tflops"])
            assert row["peak_source"] and row["matmul_tflops"] <= row["peak_tflops"]


def test_the_zen3_files_hold_every_entry_eager_and_compiled_with_compile_time_apart():
    from zoo.registry import list_models

    for mode in ("infer", "train"):
        stem = INFER_FP32.replace("infer", mode, 1)
        rows, _ = benchfiles.read_bench_csv(ZEN3_FOLDER / f"{stem}.csv")
        assert all(row["error"] is None and row["mode"] == mode for row in rows)
        found = {(row["model"], row["compiled"]) for row in rows}
        assert found == {(m, c) for m in list_models() for c in (False, True)}, mode
        for row in rows:
            assert (row["compile_seconds"] is not None) == row["compiled"], row["model"]
            assert "Zen 3" in row["peak_source"] and row["timed_iterations"] >= 6


def test_a_zoo_bench_file_has_timms_columns_in_timms_units():
    """A zoo bench CSV read as a timm benchmark.py CSV: its column set, in its units (samples/s,
    ms per step, GMACs = FLOPs / 2 / 1e9, parameters in millions), beside zoo's own columns and
    the environment of every row."""
    for mode in ("infer", "train"):
        path = COMMITTED / f"{INFER_FP32.replace('infer', mode, 1)}.csv"
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            assert set(TIMM_BENCHMARK_COLUMNS) <= set(reader.fieldnames)
            rows = {row["model"]: row for row in reader}
        resnet = rows["timm/resnet18"]
        rate = float(resnet["images_per_second"])
        assert float(resnet[f"{mode}_samples_per_sec"]) == rate
        assert float(resnet[f"{mode}_step_time"]) == pytest.approx(1000 * 128 / rate)
        assert int(resnet[f"{mode}_batch_size"]) == 128 and int(resnet[f"{mode}_img_size"]) == 28
        assert float(resnet["param_count"]) == pytest.approx(11.18, abs=0.005)
        other = "train" if mode == "infer" else "infer"
        assert resnet[f"{other}_samples_per_sec"] == resnet[f"{other}_step_time"] == ""
        if mode == "infer":
            gmacs = float(resnet["flops_per_image"]) / 2 / 1e9
            assert float(resnet["infer_gmacs"]) == pytest.approx(gmacs)
        for row in rows.values():
            for column in ("device_name", "torch", "precision", "memory_format", "compiled"):
                assert row[column], f"{path.name} {row['model']}: no {column}"


# ----------------------------------------------------------------------------- the peak

ZEN3 = """processor\t: {n}
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
cpu MHz\t\t: 2445.404
physical id\t: 0
core id\t\t: {n}
flags\t\t: fpu sse sse2 fma avx avx2
"""


def test_the_cpu_peak_is_cores_times_clock_times_flops_per_cycle(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("\n".join(ZEN3.format(n=n) for n in range(2)))
    monkeypatch.setattr(peaks, "CPUFREQ_MAX", tmp_path / "no-cpufreq")
    flops, source = peaks.cpu_rated_peak("fp32", 2, cpuinfo)
    assert flops == pytest.approx(2 * 2.445404e9 * 32)
    assert source.startswith("instruction set: 2 cores x 2.445 GHz ('cpu MHz' in /proc/cpuinfo)")
    assert "Zen 3" in source
    assert peaks.cpu_rated_peak("fp32", 1, cpuinfo)[0] == pytest.approx(flops / 2)
    assert peaks.cpu_rated_peak("bf16", 2, cpuinfo) is None  # no native bf16 on Zen 3
    (tmp_path / "cpufreq").write_text("3500000\n")  # kHz: the boost clock, where it is known
    monkeypatch.setattr(peaks, "CPUFREQ_MAX", tmp_path / "cpufreq")
    assert peaks.cpu_rated_peak("fp32", 2, cpuinfo)[0] == pytest.approx(2 * 3.5e9 * 32)
    for other in ("GenuineIntel", "HygonGenuine"):
        cpuinfo.write_text(ZEN3.format(n=0).replace("AuthenticAMD", other))
        assert peaks.cpu_rated_peak("fp32", 2, cpuinfo) is None
    cpuinfo.write_text(ZEN3.format(n=0).replace("cpu family\t: 25", "cpu family\t: 26"))
    assert peaks.cpu_rated_peak("fp32", 2, cpuinfo) is None  # Zen 5: datapath differs by part


@pytest.mark.parametrize(
    "name, precision, tf32, tflops",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", True, 989.4),
        ("NVIDIA H100 PCIe", "fp16", True, 756.0),
        ("NVIDIA H200", "bf16", True, 989.4),
        ("NVIDIA H200 NVL", "bf16", True, 835.5),
        ("NVIDIA A100-SXM4-80GB", "fp32", True, 156.0),
        ("NVIDIA A100-SXM4-80GB", "fp32", False, 19.5),
        ("NVIDIA A10", "bf16", True, 125.0),
        ("NVIDIA A10G", "bf16", True, None),
        ("NVIDIA L4", "fp16", True, 121.0),
        ("NVIDIA L40S", "bf16", True, 362.05),
        ("NVIDIA GeForce RTX 4090", "bf16", True, 165.2),
        ("Tesla T4", "fp16", True, 65.0),
        ("Tesla T4", "bf16", True, None),
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "bf16", True, None),
    ],
)
def test_a_gpus_peak_is_its_datasheets_dense_figure(name, precision, tf32, tflops):
    found = peaks.gpu_rated_peak(name, precision, tf32)
    assert (found and found[0] / 1e12) == (tflops and pytest.approx(tflops))
    if found:
        assert found[1].startswith("datasheet: ")


def test_the_peak_is_the_rated_figure_unless_the_matmul_sweep_beats_it(monkeypatch):
    device, precision = torch.device("cpu"), bench_precision()
    monkeypatch.setattr(peaks, "matmul_sweep", lambda *args, **kwargs: 5e10)
    monkeypatch.setattr(peaks, "rated_peak", lambda *args: (8e10, "instruction set: x"))
    assert peaks.machine_peak(device, precision) == peaks.Peak(8e10, "instruction set: x", 5e10)
    monkeypatch.setattr(peaks, "rated_peak", lambda *args: (4e10, "instruction set: x"))
    peak = peaks.machine_peak(device, precision)
    assert peak.flops == 5e10 and peak.source.startswith("measured: the best matmul")
    assert "above the instruction set: x, 0.04 TFLOP/s" in peak.source


def bench_precision():
    from zoo.runtime import resolve_precision

    return resolve_precision(torch.device("cpu"), False, "float16")


# ----------------------------------------------------------------------------- the CLI's parts


def test_select_models_checks_the_selection_before_any_work():
    from zoo.errors import ZooError
    from zoo.registry import list_models

    assert bench.select_models(["unet", "fcn", "unet"], False, None, None) == ["unet", "fcn"]
    assert bench.select_models(None, True, "segmentation", None) == list_models("*", "segmentation")
    assert bench.select_models(None, True, None, "fashion-mnist") == list_models(
        "*", "classification"
    )
    assert bench.select_models(None, True, None, None) == list_models("*")
    bad = [
        ((None, False, None, None), "Name the models to bench, or pass --all"),
        ((["fcn"], True, None, None), "Name the models to bench, or pass --all"),
        ((["baselin-cnn"], False, None, None), "Did you mean 'baseline-cnn'"),
        ((["fcn"], False, "segmentation", None), "--task only filters --all"),
        ((None, True, "segmentation", "fashion-mnist"), "is a classification dataset"),
        ((["baseline-cnn"], False, None, "mini-facade"), "pick a classification dataset"),
    ]
    for args, message in bad:
        with pytest.raises(ZooError, match=re.escape(message)):
            bench.select_models(*args)


def test_the_result_table_fits_80_columns_and_never_cuts_a_number_or_a_name():
    from rich.console import Console

    rows = [row for row in benchfiles.load_bench_rows(COMMITTED)[0] if row["precision"] == "fp32"]
    failed = rows[:1] + [rows[1] | {"error": "RuntimeError: " + "too small " * 12}]
    for shown in (rows, [r for r in rows if r["mode"] == "infer"], failed):
        console = Console(width=80, record=True)
        console.print(bench.result_table(shown, "zoo bench (fp32)"))
        text = console.export_text()
        lines = text.splitlines()
        assert max(map(len, lines)) <= 80 and "…" not in text
        for row in shown:  # its figures whole, on its own line
            cells = bench.result_cells(row)
            found = [line for line in lines if f" {row['model']} " in line]
            assert found, f"{row['model']} is cut"
            if not row["error"]:
                rate, mfu = f" {cells['img/s']} ", f" {cells['MFU']} "
                assert any(rate in line and mfu in line for line in found)
        header = next(line for line in lines if " model " in line)
        assert (" error " in header) == (shown is failed)
