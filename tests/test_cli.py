import subprocess
import sys

from typer.testing import CliRunner

from zoo.cli import app

runner = CliRunner()


def test_list_shows_every_model_with_parameters():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "baseline-cnn" in result.stdout and "wide-leaky-cnn" in result.stdout
    assert "211,690" in result.stdout  # baseline-cnn's parameter count
    assert "fashion-mnist" in result.stdout and "classification" in result.stdout


def test_list_filters_by_pattern_and_task():
    result = runner.invoke(app, ["list", "wide*"], env={"COLUMNS": "200"})
    assert "│ wide-leaky-cnn " in result.stdout and "│ baseline-cnn " not in result.stdout
    result = runner.invoke(app, ["list", "leaky"], env={"COLUMNS": "200"})
    assert "│ wide-leaky-cnn " in result.stdout and "│ baseline-cnn " not in result.stdout
    result = runner.invoke(app, ["list", "--task", "segmentation"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "│ baseline-cnn " not in result.stdout


def test_datasets_lists_fashion_mnist():
    result = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "fashion-mnist" in result.stdout and "1x28x28" in result.stdout


def test_summary_is_a_torchinfo_layer_table():
    result = runner.invoke(app, ["summary", "baseline-cnn"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for needle in ("Conv2d", "[1, 32, 28, 28]", "Total params: 211,690", "Params size (MB)",
                   "Input size (MB)", "Forward/backward pass size (MB)"):  # fmt: skip
        assert needle in result.stdout


def test_summary_of_unknown_model_is_one_clear_error():
    result = runner.invoke(app, ["summary", "basline-cnn"])
    assert result.exit_code == 1
    assert "Did you mean 'baseline-cnn'" in result.stderr and "Traceback" not in result.output


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


def test_python_dash_m_zoo_works():
    result = subprocess.run(
        [sys.executable, "-m", "zoo", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for command in ("train", "eval", "list", "summary", "datasets"):
        assert command in result.stdout
