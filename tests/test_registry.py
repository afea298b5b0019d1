import os
import subprocess
import sys

import pytest
import torch

import zoo
from zoo.data import load_dataset
from zoo.errors import UnknownNameError, ZooWarning
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


# Plugins: third-party packages that register entries through the zoo.models / zoo.datasets
# entry-point groups. Each test installs a real distribution (dist-info + modules) on sys.path.

PLUGIN_MODEL = """
from torch import nn

from zoo.registry import register_model


@register_model(
    "{name}", task="classification", dataset="fashion-mnist", description="A plugin's model."
)
def {function}(num_classes=10, in_chans=1, **kwargs):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 28 * 28, num_classes))
"""


def test_plugin_models_are_listed_built_and_shown_by_zoo_list(plugins):
    later = PLUGIN_MODEL.format(name="plugin-late", function="build")
    plugins(
        "teamnets",
        {"zoo.models": {"nets": "teamnets_nets", "late": "teamnets_late:register"}},
        {
            "teamnets_nets": PLUGIN_MODEL.format(name="plugin-net", function="plugin_net"),
            # an entry point naming a function: zoo calls it, and it registers
            "teamnets_late": "def register():\n"
            + "\n".join(f"    {line}" for line in later.splitlines()),
        },
    )
    assert list_models("plugin-*") == ["plugin-late", "plugin-net"]
    assert create_model("plugin-net")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("plugin-late", num_classes=3)(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    assert listed_names("plugin") == ["plugin-late", "plugin-net"]


def test_zoo_list_in_a_fresh_process_shows_an_installed_plugin(plugins):
    folder = plugins(
        "teamnets",
        {"zoo.models": {"nets": "teamnets_fresh"}},
        {"teamnets_fresh": PLUGIN_MODEL.format(name="plugin-fresh", function="plugin_fresh")},
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.getcwd()])}
    command = [sys.executable, "-m", "zoo", "list", "plugin", "--format", "csv"]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "plugin-fresh,classification,fashion-mnist,7850,A plugin's model."
    ]
    assert result.stderr == ""


def test_a_plugin_may_declare_its_models_and_is_imported_when_one_is_built(plugins):
    plugins(
        "lazynets",
        {"zoo.models": {"nets": "lazynets_names"}},
        {
            "lazynets_names": "from zoo.registry import declare_model\n"
            "declare_model('plugin-lazy', 'lazynets_family:build', task='classification',"
            " dataset='fashion-mnist', description='Declared.', num_parameters=7850)\n",
            "lazynets_family": "from torch import nn\n"
            "def build(num_classes=10, in_chans=1, **kwargs):\n"
            "    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 28 * 28, num_classes))\n",
        },
    )
    assert list_models("plugin-lazy") == ["plugin-lazy"]
    assert get_model_entry("plugin-lazy").module == "lazynets_family"
    assert "lazynets_family" not in sys.modules, "declaring imports nothing"
    assert create_model("plugin-lazy")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert "lazynets_family" in sys.modules


def test_plugin_datasets_show_in_zoo_datasets(plugins):
    from typer.testing import CliRunner

    from zoo.cli import app
    from zoo.data import get_dataset_info, list_datasets

    plugins(
        "teamdata",
        {"zoo.datasets": {"shapes": "teamdata_shapes"}},
        {
            "teamdata_shapes": (
                "from zoo.data import DatasetInfo, register_dataset\n"
                "INFO = DatasetInfo('plugin-shapes', 'classification', ('circle', 'square'), 1,"
                " (16, 16), (0.5,), (0.25,), 'A plugin dataset.')\n"
                "@register_dataset(INFO)\n"
                "def load(root, download=False):\n"
                "    raise NotImplementedError\n"
            )
        },
    )
    assert "plugin-shapes" in list_datasets()
    assert get_dataset_info("plugin-shapes").class_names == ("circle", "square")
    result = CliRunner().invoke(app, ["datasets", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("plugin-shapes,") for line in result.stdout.splitlines())


def test_a_plugin_that_raises_at_import_is_left_out_with_one_warning(plugins):
    plugins(
        "brokennets",
        {"zoo.models": {"broken": "brokennets_models"}},
        {
            "brokennets_models": PLUGIN_MODEL.format(name="plugin-half", function="half")
            + "raise RuntimeError('no GPU driver found')\n"
        },
    )
    plugins(
        "teamnets",
        {"zoo.models": {"nets": "teamnets_ok"}},
        {"teamnets_ok": PLUGIN_MODEL.format(name="plugin-ok", function="plugin_ok")},
    )
    with pytest.warns(ZooWarning) as caught:
        names = list_models()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'broken' (brokennets 0.1)" in message
    assert "RuntimeError: no GPU driver found" in message and "uninstall brokennets" in message
    assert "plugin-ok" in names and "baseline-cnn" in names
    assert "plugin-half" not in names, "a plugin that fails is left out whole"


def test_a_plugin_that_raises_leaves_zoo_list_working(plugins):
    plugins(
        "brokennets",
        {"zoo.models": {"broken": "brokennets_cli"}},
        {"brokennets_cli": "import no_such_module_anywhere\n"},
    )
    from typer.testing import CliRunner

    from zoo.cli import app

    result = CliRunner().invoke(app, ["list", "*cnn*", "--format", "csv"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [
        "baseline-cnn", "wide-leaky-cnn",
    ]  # fmt: skip
    warnings = [line for line in result.stderr.splitlines() if "Warning:" in line]
    assert len(warnings) == 1 and "'broken' (brokennets 0.1)" in warnings[0]
    assert "ModuleNotFoundError" in warnings[0] and "no_such_module_anywhere" in warnings[0]


def test_a_plugin_duplicate_name_is_skipped_with_one_sentence_naming_both(plugins):
    plugins(
        "dupnets",
        {"zoo.models": {"dup": "dupnets_models"}},
        {
            "dupnets_models": PLUGIN_MODEL.format(name="baseline-cnn", function="mine")
            + PLUGIN_MODEL.format(name="plugin-extra", function="extra")
        },
    )
    with pytest.warns(ZooWarning) as caught:
        names = list_models()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'dup' (dupnets 0.1)" in message and "'baseline-cnn'" in message
    assert "zoo.models.cnn" in message and "rename it in the plugin" in message
    assert get_model_entry("baseline-cnn").factory.__module__ == "zoo.models.cnn", "zoo's stays"
    assert "plugin-extra" in names, "the plugin's other entries still register"


def test_entry_points_are_read_on_the_first_lookup_only(monkeypatch):
    import importlib.metadata

    reads = []
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: reads.append(group) or [])
    registry = Registry("model", "zoo list", group="zoo.test-models")
    assert reads == [], "creating a registry (importing zoo) reads no entry points"
    registry.names()
    registry.names()
    assert reads == ["zoo.test-models"]
