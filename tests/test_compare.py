"""`zoo compare`: grouping by recipe, mean +- std over seeds, Welch's test, bench joins, the
outputs (table, Markdown, CSV, HTML), the tables kept in the READMEs, and bad input."""

import csv
import dataclasses
import io
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
from conftest import COMMITTED_BASELINE
from scipy.stats import ttest_ind
from typer.testing import CliRunner

from zoo import compare as comparing
from zoo import results
from zoo.benchfiles import BENCH_COLUMNS, rows_csv
from zoo.cli import app
from zoo.config import AmpDtype

runner = CliRunner()


def fake_run(
    folder: Path, model: str, seed: int, accuracy: float, *, epochs: int = 15, **recipe
) -> Path:
    """A completed classification run record with the given test accuracy (and nothing else
    real): the committed baseline-cnn record with its scores and recipe changed."""
    record = results.read_record(COMMITTED_BASELINE)
    record.config = dataclasses.replace(
        record.config, model=model, seed=seed, epochs=epochs, **recipe
    )
    record.test = {**record.test, "accuracy": accuracy}
    record.run_dir = folder / "fashion-mnist" / model / f"run-{seed}-{epochs}"
    record.run_dir.mkdir(parents=True)
    record.figures = []
    results.write_record(record)
    return record.run_dir


def bench_row(**values) -> dict:
    row = dict.fromkeys(BENCH_COLUMNS)
    row |= {"task": "classification", "dataset": "fashion-mnist", "device": "cpu", "error": ""}
    row |= {"device_name": "AMD EPYC", "memory_format": "nhwc", "compiled": False}
    return row | values


@pytest.fixture
def seeded(tmp_path):
    for seed, accuracy in enumerate((0.920, 0.922, 0.921)):
        fake_run(tmp_path, "baseline-cnn", seed, accuracy)
    for seed, accuracy in enumerate((0.930, 0.931)):
        fake_run(tmp_path, "wide-leaky-cnn", seed, accuracy)
    fake_run(tmp_path, "baseline-cnn", 0, 0.925, epochs=30)  # another recipe: another row
    bench = [
        # compiled first: a run that was not compiled must still be joined to the eager row
        bench_row(model="baseline-cnn", mode="infer", precision="fp32", images_per_second=18000.0,
                  compiled=True, batch_size=128, flops_per_image=4.5e6),
        bench_row(model="baseline-cnn", mode="infer", precision="fp32", images_per_second=9000.0,
                  batch_size=128, latency_ms_median=14.2, flops_per_image=4.5e6,
                  peak_memory_mb=120.0),
        bench_row(model="baseline-cnn", mode="train", precision="fp32", images_per_second=7000.0,
                  mfu=0.031),
        bench_row(model="baseline-cnn", mode="infer", precision="bf16", images_per_second=1.0),
    ]  # fmt: skip
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "benchmark-infer-fp32-nhwc-pt2.14.1-amd-epyc.csv").write_text(
        rows_csv(bench)
    )
    return tmp_path


def test_runs_differing_in_seed_are_one_row_with_mean_std_and_n(seeded):
    comparison = comparing.compare(seeded)
    rows = {(row.model, row.recipe): row for row in comparison.rows["fashion-mnist"]}
    baseline = rows["baseline-cnn", "defaults"]
    assert baseline.n == 3 and baseline.seeds == [0, 1, 2]
    assert baseline.mean("test", "accuracy") == pytest.approx(0.921)
    assert baseline.std("test", "accuracy") == pytest.approx(0.001)
    assert rows["baseline-cnn", "--epochs 30"].n == 1
    assert rows["wide-leaky-cnn", "defaults"].n == 2
    # the bench rows join by model and dataset, the run's precision (fp32) chosen
    assert baseline.bench["infer"]["images_per_second"] == 9000.0
    assert baseline.bench["train"]["mfu"] == 0.031
    assert [row.model for row in comparison.rows["fashion-mnist"]] == [
        "wide-leaky-cnn", "baseline-cnn", "baseline-cnn",
    ], "sorted by test accuracy, best first"  # fmt: skip


def test_the_autocast_dtype_is_part_of_the_recipe_only_with_amp(tmp_path):
    """--amp-dtype changes nothing without --amp (the run is fp32): such runs are one row, and
    its recipe does not mention the dtype."""
    for seed, amp, dtype in ((0, False, "float16"), (1, False, "bfloat16"), (2, True, "float16"),
                             (3, True, "bfloat16")):  # fmt: skip
        fake_run(tmp_path, "baseline-cnn", seed, 0.92, amp=amp, amp_dtype=AmpDtype(dtype))
    rows = {row.recipe: row.seeds for row in comparing.compare(tmp_path).rows["fashion-mnist"]}
    assert rows == {"defaults": [0, 1], "--amp": [2], "--amp --amp-dtype bfloat16": [3]}


def test_baseline_rows_show_the_difference_and_welchs_p_value(seeded):
    comparison = comparing.compare(seeded, baseline="baseline-cnn")
    rows = {(row.model, row.recipe): row for row in comparison.rows["fashion-mnist"]}
    versus = rows["wide-leaky-cnn", "defaults"].versus_baseline()
    assert versus["difference"] == pytest.approx(0.9305 - 0.921)
    expected = ttest_ind([0.930, 0.931], [0.920, 0.922, 0.921], equal_var=False).pvalue
    assert versus["p_value"] == pytest.approx(expected)
    assert versus["exceeds_spread"]
    single = rows["baseline-cnn", "--epochs 30"].versus_baseline()
    assert single["p_value"] is None, "Welch needs 2+ runs on both sides"
    markdown = comparing.to_markdown(comparison)
    assert "Δ test vs baseline" in markdown and "+0.0095 (> spread)" in markdown
    assert "0.9210 ± 0.0010" in markdown


def test_bench_view_puts_precisions_side_by_side_with_the_speedup(seeded, tmp_path):
    result = runner.invoke(app, ["compare", str(seeded), "--bench", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "#### AMD EPYC (cpu), nhwc" in result.stdout
    infer = "infer img/s fp32 | infer img/s bf16 | infer img/s fp32 compiled"
    train = infer.replace("infer", "train")
    header = (
        f"| model | batch | GFLOPs/img | {infer} | infer bf16/fp32 | infer fp32 compiled/fp32 |"
    )
    assert f"{header} {train} | train bf16/fp32 | train fp32 compiled/fp32 |" in result.stdout
    # baseline-cnn: 9,000 fp32, 1.0 bf16 and 18,000 compiled fp32 inference images/s, training
    # in eager fp32 only
    cells = "| 9,000 | 1.0 | 18,000 | 0.00x | 2.00x | 7,000 |  |  |  |  |"
    assert f"| baseline-cnn | 128 | 0.004 {cells}" in result.stdout
    result = runner.invoke(app, ["compare", str(seeded), "--bench", "--format", "csv"])
    assert result.exit_code == 1 and "use --format table or markdown" in result.stderr
    fake_run(tmp_path / "runs", "baseline-cnn", 0, 0.92)
    result = runner.invoke(app, ["compare", str(tmp_path / "runs"), "--bench"])
    assert result.exit_code == 1 and "holds no bench files; run `zoo bench` first" in result.stderr


def test_the_outputs_carry_per_class_scores_with_class_names(seeded, tmp_path):
    comparison = comparing.compare(seeded, model="baseline*")
    rows = list(csv.DictReader(io.StringIO(comparing.to_csv(comparison))))
    assert len(rows) == 2 and {row["model"] for row in rows} == {"baseline-cnn"}
    assert "test_ap[Shirt]" in rows[0] and "test_accuracy[Trouser]" in rows[0]
    assert rows[0]["bench_infer_images_per_second"] == "9000.0"
    markdown = comparing.to_markdown(comparison)
    assert "Test AP per class:" in markdown and "| T-shirt/top |" in markdown
    assert "Test accuracy per class:" in markdown
    only_ap = comparing.to_markdown(comparison, per_class="ap")
    assert "Test AP per class:" in only_ap and "Test accuracy per class:" not in only_ap
    assert "per class:" not in comparing.to_markdown(comparison, per_class="none")
    assert comparing.to_markdown(comparison, per_class="all") == markdown
    result = runner.invoke(app, ["compare", str(seeded), "--format", "markdown", "--per-class",
                                 "ap,iou"])  # fmt: skip
    assert result.exit_code == 0 and result.stdout.count("per class:") == 1, result.output
    result = runner.invoke(app, ["compare", str(seeded), "--format", "markdown", "--per-class",
                                 "AP"])  # fmt: skip
    message = " ".join(result.stderr.split())
    assert result.exit_code == 1 and "--per-class 'AP' is not a per-class table; use all" in message
    result = runner.invoke(
        app, ["compare", str(seeded), "--format", "csv", "--out", str(tmp_path / "t.csv")]
    )
    assert result.exit_code == 0 and (tmp_path / "t.csv").read_text().startswith("dataset,")


def test_the_html_report_is_one_offline_file_with_tables_scatter_and_heatmap(seeded, tmp_path):
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["compare", str(seeded), "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert '<table class="sortable">' in html and 'alt="per-class heatmap"' in html
    assert 'alt="test score against throughput, with the Pareto front"' in html
    assert "http://" not in html and "https://" not in html, "nothing to fetch: opens offline"
    assert html.count("data:image/png;base64,") == 2  # the scatter and the heatmap


def test_the_pareto_front_keeps_what_nothing_beats_on_both_axes():
    from zoo.report import pareto_front

    points = [(100, 0.90), (1000, 0.93), (200, 0.95), (50, 0.94), (1000, 0.80)]
    assert pareto_front(points) == [2, 1]  # (200, .95) and (1000, .93), sorted by speed


def test_bad_input_is_one_sentence(tmp_path, seeded):
    result = runner.invoke(app, ["compare", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["compare", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "holds no run records or bench files" in result.stderr
    result = runner.invoke(app, ["compare", str(seeded), "--sort", "speed"])
    assert result.exit_code == 1 and "Unknown --sort column 'speed'; choose one of" in result.stderr
    result = runner.invoke(app, ["compare", str(seeded), "--format", "html"])
    assert result.exit_code == 1 and "pass --out report.html" in result.stderr
    assert "Traceback" not in result.output


def test_malformed_records_and_bench_files_are_skipped_with_a_warning(seeded):
    broken = seeded / "fashion-mnist" / "baseline-cnn" / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text("{cut")
    (broken / "config.json").write_text("{}")
    (seeded / "bench" / "benchmark-train-x.csv").write_text("model,speed\nfoo,1\n")
    result = runner.invoke(app, ["compare", str(seeded), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert f"Skipped {broken}" in result.stderr
    assert "benchmark-train-x.csv: not a zoo bench file" in result.stderr
    assert "| baseline-cnn | defaults | 3 |" in result.stdout


def test_the_tables_in_the_readmes_are_compares_output(tmp_path, monkeypatch):
    """The README tables are generated (`make tables`), never typed: regenerating them from the
    committed results changes nothing. Only the committed files count: a user's own runs under
    results/ (`make demo` puts one there) must not fail the test."""
    listed = subprocess.run(
        ["git", "ls-files", "results", "benchmarks/zen3-cpu"], capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip("needs a git checkout to tell the committed results from local runs")
    for name in listed.stdout.split():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(name, tmp_path / name)
    readmes = {
        name: Path(name).read_text()
        for name in ("README.md", "docs/results.md", "results/README.md", "docs/benchmarks.md")
    }
    monkeypatch.chdir(tmp_path)  # `zoo compare results ...` now reads the committed copy
    for name, text in readmes.items():
        copy = tmp_path / name.replace("/", "-")
        copy.write_text(text)
        assert "<!-- zoo compare" in copy.read_text(), f"{name} has no generated table"
        changed = comparing.refresh(copy, comparing_markdown)
        assert not changed, f"{name}'s tables differ from `zoo compare`: run `make tables`"


def comparing_markdown(args):
    from zoo.cli import markdown_for

    return markdown_for(args)


def test_the_report_renders_in_a_real_browser(seeded, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    out = tmp_path / "report.html"
    assert (
        runner.invoke(
            app, ["compare", str(seeded), "--format", "html", "--out", str(out)]
        ).exit_code
        == 0
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert "fashion-mnist" in dom and dom.count("<table") >= 3 and "data:image/png" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1200,1600", f"--screenshot={shot}", out.as_uri()],
        capture_output=True, timeout=120,
    )  # fmt: skip
    from PIL import Image

    with Image.open(shot) as image:
        colours = image.convert("L").getextrema()
    assert colours[1] - colours[0] > 100, "the screenshot is not blank"


def test_train_with_seeds_makes_one_run_per_seed_that_compare_groups(tiny_root, tmp_path):
    args = ["train", "baseline-cnn", "--epochs", "1", "--data-dir", str(tiny_root)]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    (row,) = comparing.compare(tmp_path).rows["fashion-mnist"]
    assert row.n == 2 and row.seeds == [0, 1]
    first, second = ([(r["train_loss"], r["val_loss"]) for r in run.history] for run in row.runs)
    assert first != second, "each seed trains its own run, not the same one twice"
    accuracies = [run.test["accuracy"] for run in row.runs]
    assert row.mean("test", "accuracy") == pytest.approx(statistics.fmean(accuracies))
    assert row.std("test", "accuracy") == pytest.approx(statistics.stdev(accuracies))
    for bad, message in ((["--seeds", "0,1", "--seed", "3"], "drop --seed"),
                         (["--seeds", "a,b"], "comma-separated integers"),
                         (["--seeds", "1,1"], "distinct seeds")):  # fmt: skip
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), *bad])
        assert result.exit_code == 1 and message in result.stderr
    assert not (tmp_path / "x").exists()


class Scored:
    """A run as Row.values reads it: a test accuracy and nothing else."""

    def __init__(self, accuracy: float | None):
        self.test = {"accuracy": accuracy}

    def score(self, split: str, name: str):
        return self.test[name] if split == "test" else None


def row_of(*accuracies: float, baseline=None) -> comparing.Row:
    runs = [Scored(accuracy) for accuracy in accuracies]
    return comparing.Row("d", "classification", "m", "defaults", runs, baseline=baseline)


@pytest.mark.parametrize(
    "mine,theirs,exceeds",
    [
        ((0.90, 0.91, 0.92), (0.86, 0.89, 0.92), False),  # +0.02, spreads 0.01 and 0.03
        ((0.86, 0.89, 0.92), (0.86, 0.87, 0.88), False),  # +0.02, spreads 0.03 and 0.01
        ((0.935, 0.94, 0.945), (0.86, 0.89, 0.92), True),  # +0.05, spreads 0.005 and 0.03
        ((0.91, 0.94, 0.97), (0.88, 0.89, 0.90), True),  # +0.05, spreads 0.03 and 0.01
        ((0.86, 0.87, 0.88), (0.90, 0.93, 0.96), True),  # -0.06, spreads 0.01 and 0.03
    ],
)
def test_a_difference_exceeds_the_seed_spread_only_above_the_larger_spread(mine, theirs, exceeds):
    """A difference between the two rows' spreads is within the noisier one's noise, whichever
    side that is; only one above both counts."""
    versus = row_of(*mine, baseline=row_of(*theirs)).versus_baseline()
    spreads = (statistics.stdev(mine), statistics.stdev(theirs))
    assert versus["difference"] == pytest.approx(statistics.fmean(mine) - statistics.fmean(theirs))
    assert versus["spread"] == pytest.approx(max(spreads))
    assert versus["exceeds_spread"] is exceeds


def test_the_spread_of_a_single_run_row_is_the_other_rows():
    one_run = row_of(0.95, baseline=row_of(0.86, 0.89, 0.92)).versus_baseline()
    assert one_run["spread"] == pytest.approx(0.03) and one_run["exceeds_spread"] is True
    inside = row_of(0.91, baseline=row_of(0.86, 0.89, 0.92)).versus_baseline()  # +0.02 < 0.03
    assert inside["exceeds_spread"] is False
    lone = row_of(0.95, baseline=row_of(0.90)).versus_baseline()  # no spread on either side
    assert lone["spread"] is None and lone["exceeds_spread"] is False and lone["p_value"] is None


def test_mean_and_std_are_over_the_runs_that_have_the_score():
    row = row_of(0.90, None, 0.96)  # a run without a test accuracy counts in neither
    assert row.values("test", "accuracy") == [0.90, 0.96]
    assert row.mean("test", "accuracy") == pytest.approx(0.93)
    assert row.std("test", "accuracy") == pytest.approx(statistics.stdev([0.90, 0.96]))
    assert row.mean("val", "accuracy") is None and row.std("val", "accuracy") is None
    assert row_of(0.90, None).mean("test", "accuracy") == pytest.approx(0.90)
    assert row_of(0.90, None).std("test", "accuracy") is None, "no spread from one value"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy on two constant samples
def test_versus_baseline_needs_another_row_with_scores_on_both_sides():
    row = row_of(0.90, 0.92)
    assert row.versus_baseline() is None, "no baseline"
    row.baseline = row
    assert row.versus_baseline() is None, "the baseline row itself"
    assert row_of(0.90, baseline=row_of(None)).versus_baseline() is None
    assert row_of(None, baseline=row_of(0.90)).versus_baseline() is None
    # Welch's p-value of two constant rows is NaN: reported as none, not as a number
    same = row_of(0.90, 0.90, baseline=row_of(0.90, 0.90)).versus_baseline()
    assert same["p_value"] is None and same["difference"] == 0.0
    assert same["spread"] == 0.0 and same["exceeds_spread"] is False


@pytest.mark.parametrize(
    "mine,theirs", [((0.90, 0.92), (0.85, 0.86)), ((0.90, 0.92, 0.91), (0.85, 0.86))]
)
def test_welchs_p_value_needs_two_runs_a_side_and_no_more(mine, theirs):
    versus = row_of(*mine, baseline=row_of(*theirs)).versus_baseline()
    assert versus["p_value"] == pytest.approx(ttest_ind(mine, theirs, equal_var=False).pvalue)


class ClassScored:
    """A run as Row.per_class reads it: per-class test APs for some of its classes."""

    class_names = ["cat", "dog", "eel"]

    def __init__(self, **ap):
        self.ap = ap

    def per_class(self, split: str, name: str) -> dict:
        return self.ap if (split, name) == ("test", "ap") else {}


def test_per_class_is_the_mean_over_the_runs_that_have_the_class():
    runs = [ClassScored(cat=0.5, dog=0.25), ClassScored(cat=0.75, dog=None), ClassScored(cat=1.0)]
    row = comparing.Row("d", "classification", "m", "defaults", runs)
    assert row.per_class("test", "ap") == {"cat": 0.75, "dog": 0.25, "eel": None}
    assert row.per_class("val", "ap") == dict.fromkeys(["cat", "dog", "eel"])


def test_a_scores_spread_goes_under_its_mean_so_the_column_stays_narrow():
    from rich.console import Console

    from zoo.compare import fitted_table

    header = ["model", "n", "test mean AP", "test mIoU", "test pixel accuracy"]
    body = [["unet-small", "3", "0.6670 ± 0.0508", "0.4547 ± 0.0446", "0.7027 ± 0.0211"],
            ["unet", "1", "0.7483", "0.5335", "0.7431"]]  # fmt: skip
    console = Console(width=52, record=True)
    for part in fitted_table("t", header, body, 52):
        console.print(part)
    text = console.export_text()
    assert "Not shown" not in text, "three columns of 8 fit in 52 with the ± under the mean"
    assert max(map(len, text.splitlines())) <= 52
    mean_line, spread_line = (line for line in text.splitlines() if "0.6670" in line or "±" in line)
    assert "0.4547" in mean_line and "0.7027" in mean_line and "± 0.0446" in spread_line
    assert mean_line.index("0.6670") + 6 == spread_line.index("± 0.0508") + 8, "right-aligned"


def test_a_wrapping_column_keeps_a_figure_and_its_unit_together():
    from rich.console import Console

    from zoo.compare import fitted_table

    header = ["model", "acc", "params", "GFLOPs", "size", "dtype", "recipe"]
    published = ["timm/mobilenetv3_small_100", "0.871", "1.53M", "0.0104", "6.2 MB", "fp32", "a"]
    listed = ["baseline-cnn", "0.929", "212k", "0.0023", "train to get weights", "", "b"]

    def render(body) -> str:
        console = Console(width=80, record=True)
        for part in fitted_table("t", header, body, 80, wrap=("size",)):
            console.print(part)
        text = console.export_text()
        assert max(map(len, text.splitlines())) <= 80
        return text

    assert "6.2 MB" in render([published])
    text = render([published, listed])
    assert "6.2 MB" in text and "timm/mobilenetv3_small_100" in text
    assert "train to get weights" not in text and "weights" in text  # text wraps, at spaces
