import csv
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from zoo import tables
from zoo.cli import app, markdown_for
from zoo.errors import ZooError
from zoo.options import ExplainMethod

runner = CliRunner()
NARROW = {"COLUMNS": "80"}


def command_paths(command, path: list[str]) -> list[list[str]]:
    """Every command and subcommand under `command`, as typed after `zoo`."""
    below = getattr(command, "commands", {})
    return [path] * bool(path) + [
        found for name, sub in below.items() for found in command_paths(sub, [*path, name])
    ]


COMMANDS = command_paths(typer.main.get_command(app), [])


def click_command(path: list[str]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.get_command(typer.Context(command), name)
    return command


def assert_fits(text: str, width: int = 80) -> None:
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, f"{len(wide)} lines wider than {width}, e.g. {wide[0]!r}"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_fits_80_columns_with_every_option_whole(path):
    result = runner.invoke(app, [*path, "--help"], env=NARROW, prog_name="zoo")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: zoo " + " ".join(path))
    assert_fits(result.stdout)
    for parameter in click_command(path).params:
        for flag in parameter.opts + parameter.secondary_opts:
            if flag.startswith("--"):
                assert re.search(rf"{re.escape(flag)}\b", result.stdout), f"{flag} is cut"


# One user error per command: the arguments, the exit status, and what the message must say.
USER_ERRORS = [
    (["train", "basline-cnn"], 1, "Unknown model 'basline-cnn'. Did you mean 'baseline-cnn'?"),
    (["train"], 1, "Name the model to train"),
    (["eval", "no/such/run"], 1, "no/such/run does not exist"),
    (["eval", "run", "--checkpoint", "first"], 2, "'first' is not one of 'best', 'last'"),
    (["predict", "no/such/run", "x.png"], 1, "no/such/run does not exist"),
    (["list", "--task", "detection"], 2, "'detection' is not one of"),
    (["datasets", "--format", "xml"], 2, "'xml' is not one of 'table', 'csv', 'json'"),
    (["summary", "basline-cnn"], 1, "Did you mean 'baseline-cnn'?"),
    (["compare", "no/such/folder"], 1, "no/such/folder does not exist; pass a results folder"),
    (["explain", "run", "--method", "lime"], 2, "'lime' is not one of 'all', 'saliency'"),
    (["bench"], 1, "Name the models to bench, or pass --all (not both)."),
    (["sweep", "basline-cnn", "--trials", "2"], 1, "Unknown model 'basline-cnn'."),
    (["sweep", "run", "baseline-cnn", "--sampler", "cma"], 2, "'cma' is not one of 'tpe'"),
    (["sweep", "show", "no-study", "--out", "no/such/results"], 1, "There is no study 'no-study'"),
    (["weights", "--format", "xml"], 2, "'xml' is not one of 'table', 'csv', 'json'"),
    (["weights", "list", "--all-version"], 2, "No such option: --all-version"),
    (["weights", "publish", "no/such/run", "--note", "x"], 1, "no/such/run does not exist"),
    (["export", "no/such/run", "--format", "onnx", "--out", "no/x"], 1, "no/such/run does not"),
    (["bench", "fcn", "--repeats", "0"], 2, "Invalid value for '--repeats'"),
    (["compare", "--task", "detection"], 2, "'detection' is not one of 'classification'"),
]


def test_every_command_has_a_user_error_case():
    tried = {tuple(args[: len(path)]) for args, _, _ in USER_ERRORS for path in COMMANDS}
    untried = [path for path in COMMANDS if tuple(path) not in tried]
    assert not untried, f"no user error is tried for: {untried}"


@pytest.mark.parametrize("args, code, message", USER_ERRORS, ids=lambda v: str(v)[:40])
def test_each_command_names_a_user_error_in_one_sentence(args, code, message):
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output
    assert not Path("no").exists(), "a failed command leaves nothing behind"


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"zoo {version('zoo')}\n"


def test_explain_methods_are_explain_modules_methods():
    from zoo.explain import METHODS

    assert [m.value for m in ExplainMethod] == ["all", *METHODS]


def test_list_shows_every_model_with_its_parameters_at_80_columns():
    from zoo.registry import list_models

    result = runner.invoke(app, ["list"], env=NARROW)
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    for name in list_models():  # whole, never wrapped or cut
        assert re.search(rf"│ {re.escape(name)} +│", result.stdout), name
    assert re.search(r"│ baseline-cnn +│ fashion-mnist +│ +211,690 │", result.stdout)
    assert "The reports' net" in result.stdout, "the description column is there"


def test_list_filters_by_pattern_and_task():
    names = lambda args: [row["name"] for row in list_json(args)]  # noqa: E731
    assert names(["wide*"]) == ["wide-leaky-cnn"]
    assert names(["leaky"]) == ["wide-leaky-cnn"], "a plain word matches anywhere"
    segmentation = names(["--task", "segmentation"])
    assert "unet-small" in segmentation and "smp/unet-resnet34" in segmentation
    assert "baseline-cnn" not in segmentation and "timm/resnet18" not in segmentation
    classification = names(["--task", "classification"])
    assert "baseline-cnn" in classification and "unet-small" not in classification
    assert set(segmentation) | set(classification) == set(names([]))


def list_json(args: list[str]) -> list[dict]:
    result = runner.invoke(app, ["list", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_list_and_datasets_give_scripts_csv_and_json():
    rows = {row["name"]: row for row in list_json([])}
    assert rows["baseline-cnn"] == {
        "name": "baseline-cnn",
        "task": "classification",
        "dataset": "fashion-mnist",
        "parameters": 211690,
        "description": rows["baseline-cnn"]["description"],
    }
    result = runner.invoke(app, ["datasets", "--format", "csv"], env=NARROW)
    assert result.exit_code == 0, result.output
    found = {row["name"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert set(found) == {"cmp-facade", "fashion-mnist", "mini-facade"}
    assert found["fashion-mnist"]["input"] == "1x28x28" and found["cmp-facade"]["classes"] == "12"
    assert not any("┃" in line for line in result.stdout.splitlines()), "no boxes"


def test_datasets_table_fits_80_columns():
    result = runner.invoke(app, ["datasets"], env=NARROW)
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    for name, size in (("fashion-mnist", "1x28x28"), ("mini-facade", "3x256x256")):
        assert re.search(rf"│ {name} +│ \w+ +│ +\d+ │ {size} +│", result.stdout), name


def test_compare_tables_fit_80_columns_without_splitting_names_or_scores():
    from zoo import compare as comparing

    result = runner.invoke(app, ["compare", "results", "--no-trials"], env=NARROW)
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    comparison = comparing.compare("results", trials=False)
    for rows in comparison.rows.values():
        header, body = comparing.main_table(rows)
        score = next(column for column in header if column.startswith("test "))
        for cells in body:
            for column in ("model", "n", score):
                cell = cells[header.index(column)]
                for line in cell.replace(" ± ", "\n± ").splitlines():  # a ± goes under its mean
                    assert f" {line} " in result.stdout, (column, cell)
    assert "Not shown at this width:" in result.stdout, "what was left out is said"
    wide = runner.invoke(app, ["compare", "results", "--no-trials"], env={"COLUMNS": "250"})
    assert "Not shown" not in wide.stdout and "MFU" in wide.stdout


def test_compare_bench_table_fits_80_columns():
    result = runner.invoke(app, ["compare", "results", "--bench"], env=NARROW)
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    assert re.search(r"│ smp/deeplabv3plus-resnet34 │ +8 │", result.stdout)


def test_metrics_table_fits_80_columns(committed_baseline_record):
    from rich.console import Console

    console = Console(width=80, file=io.StringIO())
    console.print(tables.metrics_table(committed_baseline_record))
    text = console.file.getvalue()
    assert_fits(text)
    assert re.search(r"│ T-shirt/top +│ +\d\.\d{3} │", text)
    assert "overall" in text


def test_study_table_fits_80_columns_with_every_figure_whole():
    from rich.console import Console

    rows = [
        {"trial": 10, "state": "complete", "value": 0.933517, "epochs": 30, "batch_size": 64,
         "lr": 0.000574412, "weight_decay": 0.0134878, "augment": True, "label_smoothing": 0.1235},
        {"trial": 11, "state": "pruned", "value": 0.88321, "epochs": 1, "batch_size": 256,
         "lr": 0.00297306, "weight_decay": 2.692e-05, "augment": False, "label_smoothing": 0.0},
    ]  # fmt: skip
    console = Console(width=80, file=io.StringIO())
    for part in tables.study_table(rows, "study s: val_accuracy (MAXIMIZE)", width=80):
        console.print(part)
    text = console.file.getvalue()
    assert_fits(text)
    assert re.search(r"│ +10 │ complete │ +0\.9335 │ +30 │ +64 │ +0\.0005744 │ +0\.01349 │", text)
    assert re.search(r"│ +11 │ pruned +│ +0\.8832 │ +1 │ +256 │ +0\.002973 │ +2\.692e-05 │", text)
    assert "weight" in text and "decay" in text, "a searched option's name wraps at its _"
    assert "Not shown at this width: label smoothing (widen the terminal)." in text


@pytest.mark.parametrize("model", ["baseline-cnn", "unet-small"])
def test_summary_is_a_torchinfo_layer_table_at_80_columns(model):
    result = runner.invoke(app, ["summary", model], env=NARROW)
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)
    for needle in ("Conv2d", "Total params: ", "Total mult-adds (", "Params size (MB)",
                   "Input size (MB)", "Forward/backward pass size (MB)"):  # fmt: skip
        assert needle in result.stdout
    assert "Units." not in result.stdout, "torchinfo's enum is spelt as it means it"
    if model == "baseline-cnn":
        assert "[1, 32, 28, 28]" in result.stdout and "Total params: 211,690" in result.stdout
        assert "Total mult-adds (M): 2.27" in result.stdout


def test_markdown_for_parses_compare_options_and_names_a_bad_one():
    text = markdown_for(["results", "--no-trials", "--dataset", "cmp-facade"])
    assert text.startswith("#### cmp-facade") and "fashion-mnist" not in text
    with pytest.raises(ZooError, match="No such option: --colour"):
        markdown_for(["results", "--colour"])


def test_sweep_without_a_subcommand_runs_the_sweep(tmp_path):
    """`zoo sweep MODEL` is `zoo sweep run MODEL`: both reach the same checks."""
    for args in (["sweep", "wide-leaky-cnn"], ["sweep", "run", "wide-leaky-cnn"]):
        result = runner.invoke(app, [*args, "--trials", "0", "--out", str(tmp_path)])
        assert result.exit_code == 1 and "--trials must be at least 1" in result.stderr


def modules_loaded_after(statements: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `statements`."""
    code = f"import sys\n{statements}\nprint([m for m in {modules} if m in sys.modules])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return eval(result.stdout)  # a printed list of names


def test_import_zoo_stays_light():
    """`import zoo` pays for no torch; the models do not pay for torchmetrics or matplotlib."""
    heavy = ("torch", "torchmetrics", "matplotlib", "torchvision")
    assert modules_loaded_after("import zoo", heavy) == []
    assert modules_loaded_after("import zoo; zoo.create_model('unet')", heavy[1:]) == []
    assert modules_loaded_after("import zoo.cli", heavy) == [], "`zoo --help` pays for no torch"


def test_no_module_of_zoo_runs_its_own_cli_through_a_test_runner():
    from pathlib import Path

    import zoo

    for path in Path(zoo.__file__).parent.rglob("*.py"):
        assert "CliRunner" not in path.read_text(), path


def test_python_dash_m_zoo_works():
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for command in ("train", "eval", "list", "summary", "datasets", "sweep", "bench"):
        assert re.search(rf"^  {command} ", result.stdout, re.M), command


# ------------------------------------------------------------------------- leftovers of issue 20


def published_weights():
    """A published version of baseline-cnn's weights, as `zoo weights` would list it."""
    from zoo.weights import Weights

    facts = dict(model="baseline-cnn", dataset="fashion-mnist", version=1, task="classification",
                 class_names=("T-shirt/top", "Trouser"), in_chans=1, input_size=(1, 28, 28),
                 mean=(0.286,), std=(0.353,), file="model.safetensors", dtype="float32",
                 file_size=846_000, sha256="0" * 64, num_parameters=211_690, gflops=0.005,
                 run_id="fashion-mnist/baseline-cnn/x", recipe="zoo train baseline-cnn",
                 recipe_file=None, config={}, metrics={"accuracy": 0.9132, "loss": 0.25},
                 evaluation={"torch": "2.14.1", "device": "cpu", "batch_size": 1024})  # fmt: skip
    return Weights(**facts)


@pytest.mark.parametrize(
    "difference, cpu, code, verdict",
    [
        (0.0, "EPYC", 0, "Reproduced exactly: {figures} (every score of 2 equal)."),
        (3e-6, "Xeon", 0, "Reproduced within 1e-05: {figures}, largest difference 3e-06;"),
        (3e-6, "EPYC", 0, "Reproduced within 1e-05: {figures}, largest difference 3e-06;"),
        (2e-5, "EPYC", 1, "Error: Not the published scores: {figures}, largest difference 2e-05;"),
        (0.0012, "Xeon", 1, "Error: Not the published scores: {figures}, largest difference"),
    ],
)
def test_eval_of_published_weights_fails_unless_it_reproduces_them(
    monkeypatch, difference, cpu, code, verdict
):
    """Every score within 1e-5 of the published one, on any CPU (kernels sum in another order
    on another machine, even one of the same CPU model); never more."""
    from zoo import publish, weights

    found = published_weights()
    same = {"device": "cpu", "batch_size": 1024, "torch": "2.14.1", "cpu": "EPYC"}
    found = dataclasses.replace(found, evaluation=same)
    metrics = {**found.metrics, "accuracy": found.metrics["accuracy"] + difference}
    evaluation = {**same, "cpu": cpu}
    rescored = publish.Rescored(found, metrics, evaluation, {"accuracy": difference, "loss": 0.0})
    monkeypatch.setattr(weights, "source_weights", lambda source: found)
    monkeypatch.setattr(publish, "rescore", lambda *args, **kwargs: rescored)
    result = runner.invoke(app, ["eval", "baseline-cnn"], env=NARROW)
    assert result.exit_code == code, result.output
    figures = f"test accuracy {0.9132 + difference:.4f}, published 0.9132"
    text = " ".join((result.stdout if code == 0 else result.stderr).split())
    assert verdict.format(figures=figures) in text
    if difference:
        assert text.endswith(f"torch 2.14.1 ({cpu}, batch 1024).") and "Traceback" not in text


def test_a_misspelt_model_is_named_before_any_training_code_is_imported():
    """`zoo train basline-cnn` answers from the registry's declarations, at once: no torch (the
    model families import it), and no run, loop, data or metrics code."""
    heavy = ("torch", "zoo.models.cnn", "zoo.run", "zoo.train", "zoo.data.splits", "torchmetrics",
             "matplotlib", "optuna")  # fmt: skip
    code = (
        "import sys\nfrom zoo.cli import app\n"
        "try:\n    app(['train', 'basline-cnn'], prog_name='zoo')\n"
        "except SystemExit as exit:\n"
        f"    print(exit.code, [m for m in {heavy} if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert "Did you mean 'baseline-cnn'?" in result.stderr
    assert result.stdout.strip() == "1 []", result.stdout


def test_zoo_list_imports_no_torch():
    """Every zoo model declares its task, dataset, description and parameter count, so `zoo list`
    builds nothing and imports no torch, timm or smp."""
    code = (
        "import sys\nfrom zoo.cli import app\n"
        "try:\n    app(['list', '--format', 'csv'], prog_name='zoo')\n"
        "except SystemExit as exit:\n"
        "    heavy = ('torch', 'timm', 'segmentation_models_pytorch')\n"
        "    print(exit.code, [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert "baseline-cnn,classification,fashion-mnist,211690," in result.stdout, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout


def test_predicted_pngs_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from zoo import predict, results

    mask = tmp_path / "house_mask.png"
    predict.save_png(np.zeros((4, 6, 3), dtype=np.uint8), mask)
    assert Image.open(mask).size == (6, 4) and [p.name for p in tmp_path.iterdir()] == [mask.name]
    before = mask.read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", full_disk)
    with pytest.raises(ZooError, match="No space left"):
        predict.save_png(np.full((4, 6, 3), 255, dtype=np.uint8), mask)
    assert mask.read_bytes() == before, "the old file is intact"
    assert [p.name for p in tmp_path.iterdir()] == [mask.name], "no temporary file is left"
