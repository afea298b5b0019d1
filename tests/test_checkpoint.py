"""zoo/checkpoint.py on its own: weights and training states written whole or not at all, read
back equal, and every file that is not one refused in a sentence naming it. No training: these
run in a second, so `make mutation MUTATE=checkpoint` can run them for each mutant."""

import json
import pickle
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from zoo import checkpoint
from zoo.checkpoint import (
    PICKLE_HINT,
    STATE_FORMAT,
    CheckpointError,
    join_state,
    load_training_state,
    load_weights,
    looks_like_pickle,
    read_state_progress,
    save_training_state,
    save_weights,
    split_state,
)
from zoo.results import WriteError


def small_model(seed: int = 0) -> torch.nn.Module:
    """A conv, a batch norm (buffers) and a linear layer, its conv weight channels-last."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 3),
    )
    return model.to(memory_format=torch.channels_last)


def assert_same_tensors(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


# ----------------------------------------------------------------------------- weights


def test_weights_come_back_equal_with_their_metadata_and_no_temporary_file(tmp_path):
    model = small_model()
    model[1].running_mean += 1.5  # a buffer that is not its initial value
    path = tmp_path / "best.safetensors"
    save_weights(path, model, {"model": "small", "epoch": "3"})
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]
    stored = load_file(path)
    assert all(tensor.is_contiguous() for tensor in stored.values()), "as safetensors stores it"

    other = small_model(seed=1)
    assert load_weights(other, path, "small") == {"model": "small", "epoch": "3"}
    assert_same_tensors(model.state_dict(), other.state_dict())


def test_a_compiled_model_saves_and_loads_the_plain_modules_keys(tmp_path):
    model = small_model()
    wrapped = torch.nn.Module()  # what torch.compile returns, as far as unwrap sees it
    wrapped._orig_mod = model
    save_weights(tmp_path / "w.safetensors", wrapped, {})
    assert set(load_file(tmp_path / "w.safetensors")) == set(model.state_dict())
    target = torch.nn.Module()
    target._orig_mod = small_model(seed=1)
    load_weights(target, tmp_path / "w.safetensors", "small")
    assert_same_tensors(model.state_dict(), target._orig_mod.state_dict())


def test_a_failed_write_raises_write_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_weights(path, small_model(), {"epoch": "1"})
    before = path.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.raises(WriteError) as raised:
        save_weights(path, small_model(seed=1), {"epoch": "2"})
    assert str(raised.value).startswith(f"Could not write {path} (No space left on device)")
    assert path.read_bytes() == before, "the previous file is intact"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"], "no temporary file left"


def test_a_file_is_on_disk_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = checkpoint.os.fsync, checkpoint.os.replace
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        checkpoint.os, "replace",
        lambda src, dst: events.append(("replace", src.name, dst.name)) or real_replace(src, dst),
    )  # fmt: skip
    save_weights(tmp_path / "best.safetensors", small_model(), {})
    assert events == ["fsync", ("replace", ".best.safetensors.tmp", "best.safetensors")]


def test_pickles_are_told_apart_from_safetensors_by_their_first_bytes(tmp_path):
    zipped, raw, safe = tmp_path / "a.pt", tmp_path / "b.pkl", tmp_path / "c.safetensors"
    torch.save({"w": torch.zeros(2)}, zipped)
    raw.write_bytes(pickle.dumps({"w": 1}, protocol=2))
    save_file({"w": torch.zeros(2)}, str(safe))
    assert looks_like_pickle(zipped) and looks_like_pickle(raw)
    assert not looks_like_pickle(safe)
    # a safetensors header length may begin with any byte, "PK" or 0x80 included
    for head in (b"\x80\x00\x00\x00\x00\x00\x00\x00{", b"PK\x03\x04\x00\x00\x00\x00{"):
        (tmp_path / "d").write_bytes(head + b'"x": 1}')
        assert not looks_like_pickle(tmp_path / "d")
    (tmp_path / "e").write_bytes(b"hello, world")
    assert not looks_like_pickle(tmp_path / "e")


def test_a_weights_file_that_is_missing_pickled_or_damaged_is_one_sentence(tmp_path):
    model, fix = (
        small_model(),
        "pass a safetensors file saved from small with the same classes and channels.",
    )
    with pytest.raises(CheckpointError) as raised:
        load_weights(model, tmp_path / "nothing.safetensors", "small")
    assert (
        str(raised.value)
        == f"Weights file {tmp_path / 'nothing.safetensors'} does not exist; {fix}"
    )

    torch.save(model.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError) as raised:
        load_weights(model, tmp_path / "model.pt", "small")
    assert (
        str(raised.value)
        == f"Weights file {tmp_path / 'model.pt'} is a PyTorch pickle: {PICKLE_HINT}."
    )

    save_weights(tmp_path / "cut.safetensors", model, {})
    data = (tmp_path / "cut.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as raised:
        load_weights(model, tmp_path / "cut.safetensors", "small", what="Checkpoint", fix="FIX")
    with pytest.raises(Exception) as library:
        safe_open(str(tmp_path / "cut.safetensors"), framework="pt")
    reason = str(library.value).strip().splitlines()[0]
    assert str(raised.value) == (
        f"Checkpoint {tmp_path / 'cut.safetensors'} is not a readable safetensors file "
        f"({reason}); FIX"
    )

    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.safetensors is not a readable safetensors"):
        load_weights(model, tmp_path / "empty.safetensors", "small")


def test_a_library_error_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    save_weights(tmp_path / "w.safetensors", small_model(), {})

    def fails(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr("safetensors.safe_open", fails)
    with pytest.raises(CheckpointError) as raised:
        load_weights(small_model(), tmp_path / "w.safetensors", "small", fix="FIX")
    assert str(raised.value) == (
        f"Weights file {tmp_path / 'w.safetensors'} is not a readable safetensors file (OSError); "
        "FIX"
    )


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_weights_that_do_not_fit_the_model_are_refused(tmp_path, change):
    tensors = {k: v.contiguous() for k, v in small_model().state_dict().items()}
    if change == "missing":
        del tensors["3.bias"]
    elif change == "unexpected":
        tensors["4.weight"] = torch.zeros(1)
    else:
        tensors["3.weight"] = torch.zeros(5, 16)
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError) as raised:  # strict: no key missing, none too many
        load_weights(small_model(seed=1), tmp_path / "w.safetensors", "small", fix="FIX")
    assert str(raised.value) == (
        f"Weights file {tmp_path / 'w.safetensors'} does not fit small (Error(s) in loading "
        "state_dict for Sequential:); FIX"
    ), "torch's first line, not its list of keys"


# ----------------------------------------------------------------------------- training state


def test_a_nested_state_splits_into_tensors_and_json_and_joins_back():
    weight = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": weight}},
        "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0], "name": None}],
        "cuda": [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)],
    }
    tensors = {}
    encoded = split_state("optimizer", state, tensors)
    assert set(tensors) == {"optimizer.state.0.step", "optimizer.state.0.exp_avg",
                            "optimizer.cuda.0", "optimizer.cuda.1"}  # fmt: skip
    assert tensors["optimizer.state.0.exp_avg"].is_contiguous()
    assert json.loads(json.dumps(encoded)) == encoded, "the rest is plain JSON"
    joined = join_state(json.loads(json.dumps(encoded)), tensors)
    assert joined["param_groups"] == [{"lr": 0.1, "betas": [0.9, 0.999], "params": [0],
                                       "name": None}]  # fmt: skip
    assert torch.equal(joined["state"][0]["exp_avg"], weight)
    assert torch.equal(joined["state"][0]["step"], torch.tensor(3.0))
    assert [t.tolist() for t in joined["cuda"]] == [[1, 2], [3]]

    for bad in ({"tensor": "a", "value": 1}, [1]):
        with pytest.raises(ValueError, match="is not an encoded state"):
            join_state(bad, tensors)
    with pytest.raises(ValueError, match="unknown state entry 'pickle'"):
        join_state({"pickle": "x"}, tensors)


FIRST_EPOCH = {"epoch": 1, "step": 0, "history": []}  # a loop's progress after one epoch


class Trainer(types.SimpleNamespace):
    """What save_training_state reads of a zoo.train.Trainer."""


def trainer(seed: int, scheduler: bool = True) -> Trainer:
    model = small_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10 * (seed + 1))
    return Trainer(model=model, optimizer=optimizer, scheduler=schedule if scheduler else None,
                   scaler=scaler)  # fmt: skip


def step(trainer: Trainer, seed: int = 0) -> None:
    images = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    trainer.optimizer.zero_grad()
    trainer.model(images).square().sum().backward()
    trainer.optimizer.step()
    if trainer.scheduler is not None:
        trainer.scheduler.step()


def saved_state(folder: Path) -> Path:
    """A training state of a trainer after its first epoch, in `folder`."""
    path = folder / "train_state.safetensors"
    save_training_state(path, trainer(seed=0), torch.Generator(), FIRST_EPOCH)
    return path


def test_a_training_state_brings_back_the_optimizer_schedule_scaler_rngs_and_progress(tmp_path):
    saved = trainer(seed=0)
    step(saved)
    generator = torch.Generator().manual_seed(11)
    torch.manual_seed(5)
    progress = {"epoch": 1, "step": 4, "history": [{"epoch": 1, "val_loss": 0.5}], "best": 0.5}
    save_training_state(tmp_path / "state.safetensors", saved, generator, progress)
    expected_random = (torch.rand(3), torch.rand(3, generator=generator))

    resumed, other_generator = trainer(seed=1), torch.Generator().manual_seed(99)
    torch.manual_seed(123)
    assert load_training_state(tmp_path / "state.safetensors", resumed, other_generator) == progress
    assert torch.equal(torch.rand(3), expected_random[0]), "the global RNG is restored"
    assert torch.equal(torch.rand(3, generator=other_generator), expected_random[1])
    assert_same_tensors(saved.model.state_dict(), resumed.model.state_dict())
    assert resumed.scheduler.state_dict() == saved.scheduler.state_dict()
    assert resumed.optimizer.param_groups[0]["lr"] == 0.005
    assert resumed.scaler.get_scale() == 2.0**10
    moments = [resumed.optimizer.state[p]["exp_avg"] for p in resumed.model.parameters()]
    assert all(m.abs().sum() > 0 for m in moments)
    step(saved)
    step(resumed)
    assert_same_tensors(saved.model.state_dict(), resumed.model.state_dict())

    # The progress alone, read from the metadata.
    assert read_state_progress(tmp_path / "state.safetensors") == progress
    # The tensors' names, as results/README.md gives them: the weights load from "model.*".
    names = set(load_file(tmp_path / "state.safetensors"))
    assert {name for name in names if name.startswith("model.")} == {
        f"model.{key}" for key in saved.model.state_dict()
    }
    assert {"rng.torch", "rng.generator", "optimizer.state.0.exp_avg"} <= names
    assert all(name.split(".")[0] in ("model", "optimizer", "rng") for name in names)


def test_the_cuda_rng_states_are_saved_once_cuda_is_used_and_restored_where_it_is(
    tmp_path, monkeypatch
):
    states = [torch.tensor([7, 8], dtype=torch.uint8), torch.tensor([9], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    load_training_state(saved_state(tmp_path), trainer(seed=1), torch.Generator())
    assert [[t.tolist() for t in call] for call in restored] == [[[7, 8], [9]]]

    # A run that never used CUDA does not start it to read its RNG states.
    def starts_cuda():
        raise AssertionError("CUDA initialised by saving a training state")

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", starts_cuda)
    load_training_state(saved_state(tmp_path), trainer(seed=1), torch.Generator())
    assert len(restored) == 1, "no CUDA states saved, none restored"


def test_a_state_keeps_its_dtype_when_given_its_parameters_memory_format():
    param = torch.nn.Parameter(torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last))
    optimizer = torch.optim.SGD([param], lr=0.1)
    saved = torch.randn(2, 3, 4, 4, dtype=torch.float64)  # contiguous, as the file holds it
    optimizer.state[param] = {"momentum_buffer": saved.clone(), "step": torch.tensor(1.0)}
    checkpoint.match_parameter_layouts(optimizer)
    buffer = optimizer.state[param]["momentum_buffer"]
    assert buffer.stride() == param.stride() and buffer.dtype == torch.float64
    assert torch.equal(buffer, saved)
    assert optimizer.state[param]["step"].shape == ()


def test_a_training_state_without_a_scheduler_loads_into_a_trainer_without_one(tmp_path):
    saved = trainer(seed=0, scheduler=False)
    step(saved)
    progress = {"epoch": 2, "step": 0, "history": []}
    save_training_state(tmp_path / "s", saved, torch.Generator(), progress)
    resumed = trainer(seed=1, scheduler=False)
    assert load_training_state(tmp_path / "s", resumed, torch.Generator()) == progress
    assert_same_tensors(saved.model.state_dict(), resumed.model.state_dict())


def test_a_disabled_scaler_keeps_the_resumed_runs_own(tmp_path):
    saved = trainer(seed=0)
    saved.scaler = torch.amp.GradScaler("cpu", enabled=False)  # fp32 and bf16 runs
    save_training_state(tmp_path / "s", saved, torch.Generator(), FIRST_EPOCH)
    resumed = trainer(seed=2)
    load_training_state(tmp_path / "s", resumed, torch.Generator())
    assert resumed.scaler.get_scale() == 3 * 2.0**10


def rewrite_state(path, change) -> None:
    """The training state at `path` with `change(document)` applied to its JSON part."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(path)
    document = json.loads(metadata["state"])
    change(document)
    save_file(tensors, str(path), metadata={**metadata, "state": json.dumps(document)})


@pytest.mark.parametrize(
    "change,reason",
    [
        (lambda d: d["progress"].pop("history"), "no progress (epoch, step, history)"),
        (lambda d: d.update(progress=[1, 2]), "no progress (epoch, step, history)"),
        (lambda d: d.pop("optimizer"), "'optimizer'"),
        (lambda d: d.update(rng={"tensor": "nowhere"}), "'nowhere'"),
    ],
)
def test_a_training_state_that_does_not_fit_is_one_sentence(tmp_path, change, reason):
    path = saved_state(tmp_path)
    rewrite_state(path, change)
    with pytest.raises(CheckpointError) as raised:
        load_training_state(path, trainer(seed=1), torch.Generator())
    assert str(raised.value) == (
        f"Training state {path} does not fit this run ({reason}); resume from a run folder "
        "written by `zoo train`, or start a new run."
    )


def test_a_failure_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    path = saved_state(tmp_path)

    def fails(state):
        raise RuntimeError()

    monkeypatch.setattr(torch, "set_rng_state", fails)
    with pytest.raises(CheckpointError, match=r"does not fit this run \(RuntimeError\); resume"):
        load_training_state(path, trainer(seed=1), torch.Generator())


def test_a_state_for_another_model_does_not_fit(tmp_path):
    path = saved_state(tmp_path)
    other = trainer(seed=0)
    other.model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match=r"does not fit this run \(Error\(s\) in loading"):
        load_training_state(path, other, torch.Generator())


def test_a_file_that_is_no_training_state_is_refused_by_name(tmp_path):
    weights = tmp_path / "best.safetensors"
    save_weights(weights, small_model(), {"format": "weights"})
    fix = "resume from a run folder written by `zoo train`, or start a new run."
    with pytest.raises(CheckpointError) as raised:
        load_training_state(weights, trainer(seed=0), torch.Generator())
    assert str(raised.value) == (
        f"Training state {weights} is not a {STATE_FORMAT} file (format 'weights'); {fix}"
    )
    with pytest.raises(CheckpointError) as raised:
        read_state_progress(weights)
    assert str(raised.value) == f"Training state {weights} cannot be read ('state'); {fix}"

    torch.save({"x": 1}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError) as raised:
        read_state_progress(tmp_path / "state.pt")
    assert str(raised.value) == (
        f"Training state {tmp_path / 'state.pt'} is a PyTorch pickle: {PICKLE_HINT}."
    )
    with pytest.raises(CheckpointError) as raised:
        load_training_state(tmp_path / "state.pt", trainer(seed=0), torch.Generator())
    assert str(raised.value) == (
        f"Training state {tmp_path / 'state.pt'} is a PyTorch pickle: {PICKLE_HINT}."
    )
    with pytest.raises(CheckpointError) as raised:
        load_training_state(tmp_path / "missing", trainer(seed=0), torch.Generator())
    assert str(raised.value) == f"Training state {tmp_path / 'missing'} does not exist; {fix}"
    with pytest.raises(CheckpointError, match=r"missing cannot be read"):
        read_state_progress(tmp_path / "missing")
