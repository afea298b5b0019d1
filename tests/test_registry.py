import pytest
import torch

import zoo
from zoo.data import load_dataset
from zoo.errors import UnknownNameError
from zoo.registry import MODELS, Registry, create_model, get_model_entry, list_models


def test_builtin_models_are_registered():
    assert {"baseline-cnn", "wide-leaky-cnn"} <= set(list_models())
    assert zoo.list_models is list_models


def test_duplicate_name_raises():
    registry = Registry("model", "zoo list")
    registry.register("a", task="classification")(lambda **kw: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", task="classification")(lambda **kw: None)


def test_builtin_duplicate_raises():
    with pytest.raises(ValueError, match="baseline-cnn"):
        zoo.register_model("baseline-cnn", task="classification", dataset="x", description="")(
            lambda **kw: None
        )


def test_unknown_task_raises():
    with pytest.raises(ValueError, match="task"):
        Registry("model", "zoo list").register("a", task="detection")


def test_list_models_wildcards_and_task():
    assert list_models("*cnn*") == ["baseline-cnn", "wide-leaky-cnn"]
    assert list_models("baseline-*") == ["baseline-cnn"]
    assert list_models(["base*", "wide*"]) == ["baseline-cnn", "wide-leaky-cnn"]
    assert "baseline-cnn" in list_models(task="classification")
    assert "baseline-cnn" not in list_models(task="segmentation")
    assert list_models("no-such-*") == []


def test_natural_sort():
    registry = Registry("model", "zoo list")
    for name in ("net10", "net2", "net1"):
        registry.register(name, task="classification")(lambda **kw: None)
    assert registry.names() == ["net1", "net2", "net10"]


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownNameError) as info:
        create_model("baseline-cn")
    message = str(info.value)
    assert "'baseline-cn'" in message and "'baseline-cnn'" in message and "zoo list" in message


def test_unknown_model_without_close_match_still_points_at_list():
    with pytest.raises(UnknownNameError, match="zoo list"):
        get_model_entry("zzzzzz")


def test_unknown_dataset_names_close_matches():
    with pytest.raises(UnknownNameError, match="'fashion-mnist'.*zoo datasets"):
        load_dataset("fashion-mnst")


def test_entries_declare_task_dataset_description():
    for name in list_models():
        entry = MODELS.entries[name]
        assert entry.task in ("classification", "segmentation")
        assert entry.dataset and entry.description


def test_create_model_defaults_come_from_the_dataset():
    model = create_model("baseline-cnn")
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def listed_names(*args: str) -> list[str]:
    """The model names in the rows of `zoo list ARGS`'s table."""
    from typer.testing import CliRunner

    from zoo.cli import app

    result = CliRunner().invoke(app, ["list", *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return [line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line]


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_zoo_list_task_shows_exactly_that_tasks_models(task):
    names = listed_names("--task", task)
    expected = [n for n in list_models() if get_model_entry(n).task == task]
    assert names == expected and len(names) >= 4, "every model of the task, and only those"
    assert {get_model_entry(n).task for n in names} == {task}


def test_zoo_list_pattern_and_task_together():
    assert listed_names("*cnn*", "--task", "classification") == ["baseline-cnn", "wide-leaky-cnn"]
    assert listed_names("*cnn*", "--task", "segmentation") == []
    assert listed_names("smp/unet-*", "--task", "segmentation") == [
        "smp/unet-resnet18", "smp/unet-resnet34", "smp/unet-tu-convnext_atto",
    ]  # fmt: skip
