"""`zoo bench`: the rows and files, error rows, interrupted runs, FLOP units, bad input."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from zoo import bench
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
    rows, warnings = bench.load_bench_rows(tmp_path)
    assert warnings == [] and [r["mode"] for r in rows] == ["infer", "train"]
    for row in rows:
        assert list(row) == list(bench.BENCH_COLUMNS)
        assert row["error"] is None and row["params"] == 211_690
        assert row["batch_size"] == row["batch_size_asked"] == 128 and not row["oom_retried"]
        assert row["images_per_second"] > 0 and row["latency_ms_median"] > 0
        assert row["latency_ms_p90"] >= row["latency_ms_median"] and row["timed_iterations"] >= 6
        assert 0 < row["mfu"] < 5 and row["peak_tflops"] > 0
        assert row["input_shape"] == "1x28x28" and row["precision"] == "fp32"
    infer, train = rows
    assert train["flops_per_image"] == pytest.approx(3 * infer["flops_per_image"], rel=0.1), (
        "a training step is about 3 forwards (forward + backward)"
    )


def test_a_model_that_fails_is_an_error_row_and_the_others_go_on(tmp_path):
    # 3x3 inputs: baseline-cnn's two max-pools leave nothing; the timm net upsamples them.
    args = ["bench", "baseline-cnn", "timm/mobilenetv3_small_100", "--img-size", "3"]
    result = runner.invoke(app, [*args, "--mode", "infer", *QUICK, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    failed, worked = bench.load_bench_rows(tmp_path)[0]
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
    ((row,), _) = bench.load_bench_rows(tmp_path)
    assert row["precision"] == "fp32"


def test_a_malformed_bench_file_is_skipped_with_a_warning(tmp_path):
    (tmp_path / "benchmark-infer-x.csv").write_text("model,speed\nfoo,fast\n")
    (tmp_path / "benchmark-train-y.csv").write_bytes(b"\xff\xfe\x00garbage")
    rows, warnings = bench.load_bench_rows(tmp_path)
    assert rows == [] and len(warnings) == 2
    assert all("not a zoo bench file" in w for w in warnings)


def test_ctrl_c_keeps_the_rows_measured_so_far(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    models = ["baseline-cnn", "wide-leaky-cnn", "timm/resnet18", "timm/resnet50"]
    command = [
        sys.executable,
        "-m",
        "zoo",
        "bench",
        *models,
        "--mode",
        "infer",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.Popen(
        [*command, "--budget", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
        # A shell's background job starts with SIGINT ignored, and children inherit that: give
        # zoo the default disposition, as a terminal would, wherever pytest itself was started.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("*.csv")):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert b"rows measured so far are in the bench files" in stderr
    rows, warnings = bench.load_bench_rows(tmp_path)
    assert not warnings and 1 <= len(rows) < len(models)
    assert rows[0]["model"] == "baseline-cnn" and rows[0]["images_per_second"] > 0


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
    row = bench.measure_model("baseline-cnn", setting, peak=1e12)
    if retry:
        assert row["error"] == "" and row["oom_retried"]
        assert row["batch_size_asked"] == 128 and row["batch_size"] == 32
    else:
        assert row["error"].startswith("OutOfMemoryError") and row["images_per_second"] is None


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
