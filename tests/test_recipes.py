"""Recipes as files: `zoo train --config FILE`, `--print-config`, the committed recipes/, and
each way a recipe file can be wrong."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from zoo.cli import app
from zoo.config import TrainConfig, read_recipe
from zoo.errors import ZooError

runner = CliRunner()
TIMING = ("epoch_seconds", "train_images_per_second")  # wall-clock columns of history.csv


def printed_config(*args: str) -> dict:
    result = runner.invoke(app, ["train", *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.stdout)


def test_print_config_is_the_resolved_recipe_and_reads_back(tmp_path):
    printed = printed_config("unet-small", "--epochs", "3", "--optimizer", "sgd")
    assert printed["model"] == "unet-small" and printed["dataset"] == "mini-facade"
    assert printed["epochs"] == 3 and printed["optimizer"] == "sgd"
    assert printed["batch_size"] == 8, "the model's defaults are filled in"
    assert printed == TrainConfig.from_dict(printed).to_dict(), "every field, plain values"
    recipe = tmp_path / "unet.yaml"
    recipe.write_text(yaml.safe_dump(printed))
    assert printed_config("--config", str(recipe)) == printed


def test_options_on_the_command_line_override_the_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: baseline-cnn\nlr: 0.01\nepochs: 4\naugment: true\n")
    printed = printed_config("--config", str(recipe), "--lr", "0.02", "--no-augment")
    assert (printed["lr"], printed["epochs"], printed["augment"]) == (0.02, 4, False)
    assert printed_config("wide-leaky-cnn", "--config", str(recipe))["model"] == "wide-leaky-cnn"
    json_recipe = tmp_path / "r.json"
    json_recipe.write_text(json.dumps({"model": "baseline-cnn", "lr": 1}))  # an int for a float
    assert printed_config("--config", str(json_recipe))["lr"] == 1.0


def test_a_runs_config_json_replays_it_bit_identically(tiny_root, tmp_path):
    first = tmp_path / "first"
    args = ["--data-dir", str(tiny_root), "--epochs", "2", "--augment", "--lr", "0.003"]
    result = runner.invoke(
        app, ["train", "baseline-cnn", *args, "--seed", "3", "--out", str(first)]
    )
    assert result.exit_code == 0, result.output
    (run,) = first.glob("*/*/*")
    again = tmp_path / "again"
    config = run / "config.json"
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(again)])
    assert result.exit_code == 0, result.output
    (replay,) = again.glob("*/*/*")
    assert history(replay) == history(run) and len(history(run)) == 2
    saved = json.loads((replay / "config.json").read_text())["config"]
    assert saved == {**json.loads(config.read_text())["config"], "out": str(again)}
    weights, replayed = load_file(run / "best.safetensors"), load_file(replay / "best.safetensors")
    assert all(weights[k].equal(replayed[k]) for k in weights)


def history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.mark.parametrize(
    "path",
    sorted(Path("recipes").glob("*.yaml")) + sorted(Path("results").glob("*/*/*/config.json")),
    ids=lambda p: str(p),
)
def test_each_committed_recipe_and_run_record_reads_as_a_valid_config(path):
    values = read_recipe(path)
    config = TrainConfig.from_dict(values)
    assert values["model"] == config.model and config.epochs >= 1


BAD_RECIPES = [
    ("r.yaml", "model: baseline-cnn\nlearning_rate: 0.01\n", "unknown field 'learning_rate'"),
    ("r.yaml", "model: baseline-cnn\nepchs: 3\n", "Did you mean epochs?"),
    ("r.yaml", "model: baseline-cnn\nepochs: ten\n", "gives epochs = 'ten'; --epochs takes an"),
    ("r.yaml", "model: baseline-cnn\nlr: [1, 2]\n", "--lr takes a number"),
    ("r.yaml", "model: baseline-cnn\noptimizer: lion\n", "--optimizer takes one of adam, adamw"),
    ("r.yaml", "model: baseline-cnn\nepochs: 3\n  lr: 0.1\n", "does not parse (line 3)"),
    ("r.json", '{"model": "baseline-cnn",}', "does not parse (line 1)"),
    ("r.yaml", "- baseline-cnn\n- 3\n", "must be a mapping of `field: value` lines"),
    ("config.json", '{"schema_version": 3, "config": {"model": "baseline-cnn"}}',
     "is a run record of schema version 3, and this zoo reads versions 1 and 2"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, message", BAD_RECIPES, ids=lambda v: str(v)[:30])
def test_a_bad_recipe_file_is_one_sentence_and_nothing_is_written(tmp_path, name, text, message):
    recipe = tmp_path / name
    recipe.write_text(text)
    with pytest.raises(ZooError) as error:
        read_recipe(recipe)
    assert message in str(error.value) and str(recipe) in str(error.value)
    out = tmp_path / "results"
    result = runner.invoke(app, ["train", "--config", str(recipe), "--out", str(out)])
    assert result.exit_code == 1 and message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output and not out.exists()


def test_config_and_resume_together_is_refused(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: baseline-cnn\n")
    result = runner.invoke(app, ["train", "--config", str(recipe), "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "drop --config" in result.stderr
