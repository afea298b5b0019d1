"""Progress: each phase of a command on stderr (a plain line per phase when stderr is not a
terminal, transient bars when it is), and stdout left to the results."""

import io
import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from zoo import progress, tables
from zoo.cli import app, out
from zoo.results import read_record

runner = CliRunner()
PLAIN_LINE = re.compile(r"^(?P<phase>[^:\n]+): (?:(?P<count>[\d,.]+) (?P<unit>\w+), )?[\d.]+ s$")


def phases_in(stderr: str) -> dict[str, str]:
    """The plain phase lines of a log: phase -> "count unit" ("" without a count)."""
    found = {}
    for line in stderr.splitlines():
        if match := PLAIN_LINE.match(line):
            found[match["phase"]] = f"{match['count']} {match['unit']}" if match["count"] else ""
    return found


def rendered(*things) -> str:
    """What zoo's stdout console prints for `things`, one after the other."""
    console = Console(file=io.StringIO(), width=out.width)
    for thing in things:
        console.print(thing)
    return console.file.getvalue()


def test_train_and_eval_show_every_phase_on_stderr_and_keep_stdout_for_results(
    facade_root, tmp_path
):
    args = ["--data-dir", str(facade_root), "--out", str(tmp_path / "runs"), "--epochs", "1"]
    result = runner.invoke(app, ["train", "unet-small", *args])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "mini-facade" / "unet-small").iterdir()
    record = read_record(run_dir)
    assert result.stdout == rendered(tables.metrics_table(record), f"Run record: {run_dir}")

    # 24 train photos: 2 for validation (val_fraction 0.1), 22 to train on; 6 test photos.
    assert phases_in(result.stderr) == {
        "loading mini-facade": "",
        "decoding mini-facade-train": "24 images",  # the first run fills the decode cache
        "decoding mini-facade-test_dev": "6 images",
        "building unet-small": "",
        "val inference": "2 images",
        "val metrics": "",
        "test inference": "6 images",
        "test metrics": "",
        "drawing figures": "5 figures",
    }
    lines = result.stderr.splitlines()
    assert any(line.startswith("epoch   1/1  train loss") for line in lines)
    assert "\x1b" not in result.stderr and "\r" not in result.stderr, "no live bars in a log"
    assert "" not in lines, "no blank lines either"

    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(facade_root)])
    assert result.exit_code == 0, result.output
    assert result.stdout == rendered(tables.metrics_table(read_record(run_dir)))
    assert phases_in(result.stderr) == {
        "loading best.safetensors": "",
        "loading mini-facade": "",  # from the decode cache now: no decoding
        "val inference": "2 images",
        "val metrics": "",
        "test inference": "6 images",
        "test metrics": "",
        "drawing figures": "5 figures",
    }
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"


def test_a_classification_run_shows_its_phases(tiny_root, tmp_path):
    args = ["--data-dir", str(tiny_root), "--out", str(tmp_path), "--epochs", "1"]
    result = runner.invoke(app, ["train", "baseline-cnn", *args, "--limit-train", "64"])
    assert result.exit_code == 0, result.output
    shown = phases_in(result.stderr)
    assert shown["val inference"] == "20 images" and shown["test inference"] == "50 images"
    assert {"loading fashion-mnist", "building baseline-cnn", "drawing figures"} <= set(shown)
    (run_dir,) = (tmp_path / "fashion-mnist" / "baseline-cnn").iterdir()
    assert result.stdout == rendered(
        tables.metrics_table(read_record(run_dir)), f"Run record: {run_dir}"
    )


def log_console() -> Console:
    return Console(file=io.StringIO(), width=100)  # not a terminal: a plain line per phase


def test_a_phase_is_one_plain_line_when_it_ends_and_none_when_it_fails():
    console = log_console()
    with progress.reporting(console):
        with progress.phase("val inference", total=3, unit="images") as advance:
            advance(2)
            advance()
        with progress.phase("drawing figures"):
            pass
        with progress.phase("downloading x.gz", total=2_000_000, unit="bytes") as advance:
            advance(1_500_000)
        with progress.phase("validation", total=3, unit="images", log=False) as advance:
            advance(3)
        with pytest.raises(ValueError), progress.phase("test inference"):
            raise ValueError("the error says what happened")
    assert phases_in(console.file.getvalue()) == {
        "val inference": "3 images",
        "drawing figures": "",
        "downloading x.gz": "1.5 MB",
    }
    assert len(console.file.getvalue().splitlines()) == 3


def test_outside_reporting_phases_show_nothing():
    console = log_console()
    with progress.phase("val inference", total=3, unit="images") as advance:
        advance(3)
    with progress.reporting(console), progress.reporting(None), progress.phase("quiet rank"):
        pass
    assert console.file.getvalue() == ""


def test_on_a_terminal_phases_are_transient_bars_that_nest():
    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=100)
    with (
        progress.reporting(console),
        progress.phase("epoch 1/1"),
        progress.phase("validation", total=2) as advance,
    ):
        advance(2)
    shown = console.file.getvalue()
    assert "validation" in shown and "epoch 1/1" in shown  # drawn while they ran
    assert not phases_in(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)), "no plain lines"


# ----------------------------------------------------------------------------- what got faster


def test_exact_ap_stays_scikit_learns_with_ties_and_edge_cases():
    """The faster exact AP (zoo.metrics.average_precision) on scores with many ties."""
    import numpy as np
    import torch
    from sklearn.metrics import average_precision_score

    from zoo.metrics import average_precision, predicted_labels

    generator = np.random.default_rng(0)
    for levels in (2, 7, 1000):
        scores = generator.integers(0, levels, 5000) / levels  # heavy ties at few levels
        positives = generator.random(5000) < 0.3 + 0.4 * scores
        expected = average_precision_score(positives, scores)
        found = average_precision(torch.from_numpy(scores).float(), torch.from_numpy(positives))
        assert found == pytest.approx(expected, abs=1e-12), levels
    ones = torch.ones(4)
    assert average_precision(torch.rand(4), ones.bool()) == 1.0  # no negative
    assert np.isnan(average_precision(torch.rand(4), ones.bool() & False))  # no positive
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]])
    assert predicted_labels(probs).tolist() == probs.argmax(1).tolist() == [0, 1, 2]
