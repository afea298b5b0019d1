"""The engine under every command: the config, the loop's callbacks, evaluation without a run
folder, training states, and the run-record schema."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from conftest import COMMITTED_BASELINE
from typer.testing import CliRunner

from zoo import results
from zoo.checkpoint import STATE, load_training_state, save_training_state
from zoo.cli import app
from zoo.config import TrainConfig
from zoo.data.splits import load_dataset
from zoo.errors import ZooError
from zoo.evaluate import evaluate, evaluate_run
from zoo.registry import create_model
from zoo.run import train_run
from zoo.runtime import Precision, place_model
from zoo.train import Callback, make_trainer, train_step

runner = CliRunner()
FP32 = Precision(None, "fp32")


def quick_config(root, out, **changes) -> TrainConfig:
    options = dict(model="baseline-cnn", data_dir=str(root), out=str(out), epochs=2, device="cpu")
    return TrainConfig(**{**options, **changes})


# ----------------------------------------------------------------------------- config


def test_a_config_is_plain_values_checked_on_creation_without_the_registry():
    config = TrainConfig(model="a-model-nobody-registered", optimizer="sgd")
    assert config.batch_size is None and config.optimizer == "sgd"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0
    with pytest.raises(ZooError, match="Unknown optimizer 'rmsprop'; choose one of adam, adamw"):
        TrainConfig(model="baseline-cnn", optimizer="rmsprop")
    with pytest.raises(ZooError, match="--eval-batch-size must be at least 1"):
        TrainConfig(model="baseline-cnn", eval_batch_size=0)


def test_a_config_round_trips_through_json_and_reads_older_records():
    config = TrainConfig(model="unet-small", crop_size=64, amp_dtype="bfloat16")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    old = {**config.to_dict(), "skip_bad": True, "a_field_from_the_future": 1}
    del old["skip_bad_samples"]
    assert TrainConfig.from_dict(old).skip_bad_samples is True


def test_every_config_field_is_a_zoo_train_option_of_the_same_name():
    import typer.main

    command = typer.main.get_command(app).commands["train"]
    not_fields = {"model", "resume", "nproc", "seeds", "config", "print_config"}
    options = {param.name for param in command.params} - not_fields
    assert options == {f.name for f in dataclasses.fields(TrainConfig)} - {"model"}


def test_train_run_leaves_the_callers_config_unchanged(tiny_root, tmp_path):
    config = quick_config(tiny_root, tmp_path, epochs=1)
    before = dataclasses.asdict(config)
    record = train_run(config)
    assert dataclasses.asdict(config) == before
    assert record.config.dataset == "fashion-mnist" and record.config.batch_size == 128


# ----------------------------------------------------------------------------- callbacks


class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, loop):
        self.calls.append("fit_start")

    def on_epoch_start(self, loop):
        self.calls.append(f"epoch_start {loop.epoch + 1}")

    def on_log(self, loop, step, loss, accuracy, images):
        self.calls.append("log")

    def on_epoch_end(self, loop, row):
        self.calls.append(f"epoch_end {row['epoch']} best {loop.best_epoch}")

    def on_fit_end(self, loop):
        self.calls.append(f"fit_end {loop.status}")


def test_callbacks_see_the_loop_in_order(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr("zoo.train.LOG_EVERY", 1)
    recorder = Recorder()
    record = train_run(quick_config(tiny_root, tmp_path, batch_size=64), callbacks=[recorder])
    assert record.status == "completed"
    # 180 training images in batches of 64: three steps, each logged with LOG_EVERY = 1
    epoch = ["log", "log", "log"]
    assert recorder.calls[0] == "fit_start" and recorder.calls[-1] == "fit_end completed"
    assert recorder.calls[1:5] == ["epoch_start 1", *epoch]
    assert recorder.calls[5].startswith("epoch_end 1 best 1")
    assert recorder.calls[6:10] == ["epoch_start 2", *epoch]


class StopAfterOne(Callback):
    def on_epoch_end(self, loop, row):
        loop.request_stop("pruned", "trial pruned at epoch 1")


def test_a_callback_can_stop_the_run_with_its_own_status(tiny_root, tmp_path):
    record = train_run(quick_config(tiny_root, tmp_path, epochs=3), callbacks=[StopAfterOne()])
    assert record.status == "pruned" and record.epochs_completed == 1
    saved = results.read_record(record.run_dir)
    assert saved.status == "pruned" and saved.message.startswith("trial pruned at epoch 1")
    assert len(saved.history) == 1 and saved.test is None, "a pruned run is not evaluated"


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_equals_evaluate_run_on_the_same_checkpoint(tiny_root, tmp_path):
    record = train_run(quick_config(tiny_root, tmp_path))
    after = evaluate_run(record.run_dir, checkpoint="last.safetensors")
    # The same weights, evaluated by hand with no run folder around them:
    from zoo.checkpoint import load_weights

    data = load_dataset("fashion-mnist", tiny_root)
    model = place_model(create_model("baseline-cnn"), torch.device("cpu"), True)
    load_weights(model, record.run_dir / "last.safetensors", "baseline-cnn")
    for split in ("val", "test"):
        metrics, _ = evaluate(
            model, getattr(data, split), data.info, device=torch.device("cpu"), precision=FP32,
            batch_size=1024, channels_last=True,
        )  # fmt: skip
        assert metrics == after.split(split), split


# ----------------------------------------------------------------------------- training state


def trainer_for(config, seed=0):
    torch.manual_seed(seed)
    model = place_model(create_model(config.model), torch.device("cpu"), False)
    return make_trainer(
        config, model, device=torch.device("cpu"), precision=FP32, steps_per_epoch=4
    )


def steps(trainer, generator, count=3):
    """`count` training steps on random batches drawn from `generator` and the global RNG."""
    for _ in range(count):
        images = torch.randn(8, 1, 28, 28, generator=generator) + torch.randn(8, 1, 28, 28)
        train_step(trainer, images, torch.randint(0, 10, (8,), generator=generator))


def test_a_training_state_restores_everything_a_run_needs(tmp_path):
    config = TrainConfig(model="wide-leaky-cnn", optimizer="adamw", schedule="onecycle", epochs=2)
    original = trainer_for(config)
    generator = torch.Generator().manual_seed(5)
    steps(original, generator)
    progress = {"epoch": 1, "step": 3, "history": [{"epoch": 1}], "best_score": 0.5}
    save_training_state(tmp_path / STATE, original, generator, progress)
    steps(original, generator)  # the run goes on (dropout draws from the global RNG)

    restored = trainer_for(config, seed=123)  # other initial weights
    generator_copy = torch.Generator()
    progress = load_training_state(tmp_path / STATE, restored, generator_copy)
    assert progress["step"] == 3 and progress["history"] == [{"epoch": 1}]
    steps(restored, generator_copy)  # ... and the restored one goes on the same way
    expected, actual = original.model.state_dict(), restored.model.state_dict()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs after the same steps"
    assert original.scheduler.state_dict() == restored.scheduler.state_dict()


def test_a_training_state_that_is_no_state_is_refused(tmp_path):
    config = TrainConfig(model="baseline-cnn")
    trainer = trainer_for(config)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ZooError, match="is not a zoo-training-state/1 file"):
        load_training_state(tmp_path / "weights.safetensors", trainer, torch.Generator())
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ZooError, match="cut.safetensors is not a readable safetensors file"):
        load_training_state(tmp_path / "cut.safetensors", trainer, torch.Generator())


# ----------------------------------------------------------------------------- run records


def test_the_committed_records_read_through_the_schema():
    records, warnings = results.load_runs("results")
    assert not [w for w in warnings if "/trials/" not in w]
    by_folder = {r.run_dir.relative_to("results").as_posix(): r for r in records}
    baseline = by_folder[COMMITTED_BASELINE.relative_to("results").as_posix()]
    assert baseline.schema_version == 1 and baseline.task == "classification"
    assert baseline.score("test", baseline.metrics.scores[0]) == pytest.approx(0.9203, abs=1e-4)
    unet = by_folder["mini-facade/unet-small/20261121-121126"]
    assert unet.metrics.scores[0] == "mean_ap" and set(unet.per_class("test", "ap")) == {
        "others", "facade", "pillar", "window", "balcony",
    }  # fmt: skip


def test_load_runs_skips_damaged_foreign_and_unfinished_files_with_a_warning(tiny_root, tmp_path):
    record = train_run(quick_config(tiny_root, tmp_path / "runs", epochs=1))
    damaged = tmp_path / "runs" / "x" / "y" / "damaged"
    damaged.mkdir(parents=True)
    (damaged / "metrics.json").write_text("{not json")
    (damaged / "config.json").write_text("{}")
    foreign = tmp_path / "runs" / "x" / "y" / "foreign"
    foreign.mkdir()
    (foreign / "metrics.json").write_text('{"hello": "world"}')
    (foreign / "config.json").write_text("[1, 2]")
    records, warnings = results.load_runs(tmp_path / "runs")
    assert [r.run_dir for r in records] == [record.run_dir]
    assert len(warnings) == 2 and all(w.startswith("Skipped ") for w in warnings)
    assert str(damaged) in " ".join(warnings) and str(foreign) in " ".join(warnings)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_an_output_folder_that_cannot_be_written_is_one_sentence(tiny_root, tmp_path, where):
    if where == "proc":
        out = "/proc/zoo-out"
    else:
        (tmp_path / "a-file").write_text("x")
        out = str(tmp_path / "a-file" / "runs")
    args = ["train", "baseline-cnn", "--data-dir", str(tiny_root), "--out", out]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Cannot write run folders to {out}" in result.stderr
    assert "pass --out with a folder you can write to" in result.stderr


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without a CUDA GPU"
)
def test_sync_bn_on_the_cpu_is_refused_before_any_work(tiny_root, tmp_path):
    args = ["train", "wide-leaky-cnn", "--data-dir", str(tiny_root), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*args, "--sync-bn"])
    assert result.exit_code == 1 and "--sync-bn synchronises BatchNorm across GPU" in result.stderr
    assert not (tmp_path / "r").exists()


def test_weights_that_are_a_pickle_say_how_to_convert(tiny_root, tmp_path):
    torch.save(create_model("baseline-cnn").state_dict(), tmp_path / "model.pt")
    args = ["train", "baseline-cnn", "--data-dir", str(tiny_root), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*args, "--weights", str(tmp_path / "model.pt")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is a PyTorch pickle" in result.stderr and "safetensors files only" in result.stderr
    assert "save_file(torch.load" in result.stderr
    assert not (tmp_path / "r").exists()


def test_help_and_datasets_do_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from zoo.cli import app\n"
        "for args in (['--help'], ['train', '--help'], ['datasets']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "assert 'fashion-mnist' in result.output\n"
        "print(sorted({'torch', 'timm', 'segmentation_models_pytorch'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_nothing_but_the_loops_callers_imports_the_loop():
    """zoo/train.py is the loop; only the CLI and the loop's callers may import it."""
    from pathlib import Path

    callers = {"cli.py", "run.py", "callbacks.py", "loggers.py", "train.py", "sweep.py", "bench.py"}
    for path in Path("zoo").rglob("*.py"):
        if path.name not in callers:
            text = path.read_text()
            assert "zoo.train import" not in text and "from zoo import train" not in text, path


# Edges allowed to close a circle, each with its reason. compare.render hands `--format html` to
# report.render, which builds on compare's rows: a lazy call back, not an import order.
IMPORT_CIRCLE_EXCEPTIONS = {("zoo.compare", "zoo.report")}


def zoo_imports() -> dict[str, set[str]]:
    """zoo module -> the zoo modules it imports, at module level or inside functions (`from zoo
    import x` is an edge to zoo.x when x is a module, else to the package zoo)."""
    import ast
    from pathlib import Path

    paths = {}
    for path in Path("zoo").rglob("*.py"):
        parts = path.with_suffix("").parts
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    edges = {}
    for module, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module == "zoo" or node.module.startswith("zoo."):
                    for alias in node.names:
                        child = f"{node.module}.{alias.name}"
                        found.add(child if child in paths else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "zoo"}
        edges[module] = found - {module}
    return edges


def test_zoos_imports_form_no_circle():
    """The import graph is a DAG: a module is never, however indirectly, imported by what it
    imports. (registry -> checkpoint -> data.base -> registry was the circle published weights
    removed: create_model only builds, and zoo/weights.py loads.)"""
    edges = zoo_imports()
    for edge in IMPORT_CIRCLE_EXCEPTIONS:
        assert edge[1] in edges[edge[0]], f"{edge} is gone: remove it from the exceptions"
        edges[edge[0]] = edges[edge[0]] - {edge[1]}
    circles, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for imported in sorted(edges.get(module, ())):
            if state.get(imported) == "open":
                circles.append(" -> ".join([*stack[stack.index(imported) :], imported]))
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert circles == []
    assert "zoo.checkpoint" not in edges["zoo.registry"], "create_model only builds"
    facade = [module for module, imported in edges.items() if "zoo" in imported]
    assert facade == [], "zoo/__init__.py is the public facade: zoo's modules import zoo.x"
