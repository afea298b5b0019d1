"""What the recipe's options do, not only that they run: `--seed` (init and shuffling),
`--split-seed` (the validation images), `--optimizer` and `--schedule` (what make_trainer builds,
and the learning rate history.csv records), and the misuses of each."""

import math

import pytest
import torch
from rich.console import Console

from zoo.config import TrainConfig
from zoo.data import load_dataset
from zoo.distributed import ONE_PROCESS
from zoo.errors import ZooError
from zoo.registry import create_model
from zoo.run import prepare, train_run
from zoo.runtime import Precision
from zoo.train import fit, make_trainer

CPU, FP32 = torch.device("cpu"), Precision(None, "fp32")


def config_for(root=None, **values) -> TrainConfig:
    config = TrainConfig(
        model="baseline-cnn", device="cpu", data_dir=str(root) if root else None, **values
    )
    return config.resolve("classification", "fashion-mnist")


def setup_for(root, **values):
    """What `zoo train` builds before its loop: the split data and the seeded model."""
    return prepare(config_for(root, **values), "classification", Console(quiet=True), ONE_PROCESS)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    first, second = a.state_dict(), b.state_dict()
    return all(torch.equal(first[name], second[name]) for name in first)


# ----------------------------------------------------------------------------- --seed


def test_the_seed_sets_the_initial_weights(tiny_root):
    one, other, again = (setup_for(tiny_root, seed=seed).model for seed in (1, 2, 1))
    assert same_weights(one, again), "the same seed gives the same initial weights"
    assert not same_weights(one, other), "another seed gives other initial weights"


def fit_history(data, seed: int, initial: dict) -> list[float]:
    """Train losses of two epochs from the same initial weights, shuffled by `seed`."""
    model = create_model("baseline-cnn")
    model.load_state_dict(initial)
    torch.manual_seed(0)  # dropout draws from the global RNG: the same for every call
    config = config_for(epochs=2, batch_size=32, seed=seed, channels_last=False)
    loop = fit(config, model, data, device=CPU, precision=FP32)
    assert loop.status == "completed"
    return [row["train_loss"] for row in loop.history]


def test_the_seed_sets_the_shuffling(tiny_root):
    data = load_dataset("fashion-mnist", tiny_root)
    torch.manual_seed(0)
    initial = create_model("baseline-cnn").state_dict()  # one start for every run below
    one, other, again = (fit_history(data, seed, initial) for seed in (1, 2, 1))
    assert one == again, "the same seed shuffles the same way"
    assert one[0] != other[0], "another seed shuffles another way from the first epoch"


# ----------------------------------------------------------------------------- --split-seed


def test_the_validation_images_follow_the_split_seed_only(tiny_root):
    base = setup_for(tiny_root, seed=1, split_seed=0).data
    other_seed = setup_for(tiny_root, seed=7, split_seed=0).data
    other_split = setup_for(tiny_root, seed=1, split_seed=1).data
    assert len(base.val) == round(200 * 0.1) and len(base.train) == 180
    assert torch.equal(base.val.images, other_seed.val.images), "--seed leaves the split alone"
    assert torch.equal(base.train.images, other_seed.train.images)
    assert not torch.equal(base.val.images, other_split.val.images), "--split-seed draws anew"


# ----------------------------------------------------------------------------- --optimizer


def linear(weights) -> torch.nn.Linear:
    model = torch.nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weights]))
    return model


def trainer_for(model, steps_per_epoch=10, **values):
    return make_trainer(
        config_for(**values), model, device=CPU, precision=FP32, steps_per_epoch=steps_per_epoch
    )


def step(trainer, inputs, *, scale=1.0):
    """One optimizer step on the loss `scale * sum(model(inputs))`: its gradient is known."""
    trainer.optimizer.zero_grad()
    (scale * trainer.model(inputs).sum()).backward()
    trainer.optimizer.step()


def test_sgd_is_nesterov_with_momentum_0_9():
    model = linear([1.0, -4.0])
    trainer = trainer_for(model, optimizer="sgd", lr=0.1, schedule="none")
    assert type(trainer.optimizer) is torch.optim.SGD
    gradient = torch.tensor([[0.5, 2.0]])  # d(sum(w . x)) / dw = x
    step(trainer, gradient)
    # Nesterov: buffer b = g, update g + 0.9 b = 1.9 g (plain momentum would take g)
    expected = torch.tensor([[1.0, -4.0]]) - 0.1 * 1.9 * gradient
    torch.testing.assert_close(model.weight.detach(), expected)
    step(trainer, gradient)
    # b = 0.9 g + g = 1.9 g, update g + 0.9 * 1.9 g = 2.71 g
    expected -= 0.1 * 2.71 * gradient
    torch.testing.assert_close(model.weight.detach(), expected)


def test_adamw_decays_the_weights_apart_from_the_gradient():
    # With a zero gradient AdamW only shrinks the weights by lr * weight_decay; Adam's L2 adds
    # weight_decay * w to the gradient, which its normalised step turns into lr * sign(w).
    for optimizer, expected in (("adamw", [0.95, -3.8]), ("adam", [0.9, -3.9])):
        model = linear([1.0, -4.0])
        trainer = trainer_for(model, optimizer=optimizer, lr=0.1, weight_decay=0.5, schedule="none")
        step(trainer, torch.ones(1, 2), scale=0.0)
        torch.testing.assert_close(model.weight.detach(), torch.tensor([expected]))
    assert type(trainer_for(linear([1.0]), optimizer="adam").optimizer) is torch.optim.Adam


def test_adam_takes_a_normalised_step():
    model = linear([1.0, -4.0])
    trainer = trainer_for(model, optimizer="adam", lr=0.1, schedule="none")
    step(trainer, torch.tensor([[0.5, -2.0]]))
    torch.testing.assert_close(model.weight.detach(), torch.tensor([[0.9, -3.9]]))


UNFUSED = {  # torch's per-parameter loop, with the hyperparameters build_optimizer sets
    "adam": lambda params: torch.optim.Adam(params, lr=0.1, weight_decay=0.01, foreach=False),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.1, weight_decay=0.01, foreach=False),
    "sgd": lambda params: torch.optim.SGD(
        params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01, foreach=False
    ),
}


@pytest.mark.parametrize("optimizer", UNFUSED)
def test_the_optimizer_is_fused_and_steps_as_the_unfused_one(optimizer):
    """One fused kernel for every parameter (torch's CPU default is a Python loop of ops per
    parameter): the same steps, to rounding."""
    fused, unfused = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    unfused.load_state_dict(fused.state_dict())
    initial = {name: weight.clone() for name, weight in fused.state_dict().items()}
    trainer = trainer_for(fused, optimizer=optimizer, lr=0.1, weight_decay=0.01, schedule="none")
    assert trainer.optimizer.defaults["fused"] is True
    loop = UNFUSED[optimizer](unfused.parameters())
    assert type(loop) is type(trainer.optimizer)
    inputs = torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    for scale in (1.0, -2.0, 0.5):
        step(trainer, inputs, scale=scale)
        loop.zero_grad()
        (scale * unfused(inputs).sum()).backward()
        loop.step()
    for name, weight in unfused.state_dict().items():
        assert not torch.equal(weight, initial[name])
        torch.testing.assert_close(fused.state_dict()[name], weight)


def test_an_unknown_optimizer_or_schedule_is_one_sentence():
    with pytest.raises(ZooError, match=r"Unknown optimizer 'rmsprop'; choose one of adam, adamw"):
        TrainConfig(model="baseline-cnn", optimizer="rmsprop")
    with pytest.raises(ZooError, match=r"Unknown schedule 'step'; choose one of cosine, onecycle"):
        TrainConfig(model="baseline-cnn", schedule="step")


# ----------------------------------------------------------------------------- --schedule


def learning_rates(schedule: str, steps: int = 20, lr: float = 0.01) -> list[float]:
    """The learning rate of each of `steps` steps (2 epochs of steps / 2) under `schedule`."""
    trainer = trainer_for(
        linear([1.0]), steps_per_epoch=steps // 2, epochs=2, schedule=schedule, lr=lr
    )
    rates = []
    for _ in range(steps):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        step(trainer, torch.ones(1, 1))
        if trainer.scheduler is not None:
            trainer.scheduler.step()
    rates.append(trainer.optimizer.param_groups[0]["lr"])  # after the last step
    return rates


def test_cosine_falls_from_the_peak_to_zero_with_no_warm_up():
    rates = learning_rates("cosine")
    expected = [0.01 * (1 + math.cos(math.pi * k / 20)) / 2 for k in range(21)]
    assert rates == pytest.approx(expected, abs=1e-9)


def test_onecycle_warms_up_for_30_percent_then_anneals():
    rates = learning_rates("onecycle")[:20]
    # PyTorch's defaults: from lr / 25, the peak at step 0.3 * 20 - 1 = 5, down to lr / 25e4
    assert rates[0] == pytest.approx(0.01 / 25)
    assert max(rates) == pytest.approx(0.01) and rates.index(max(rates)) == 5
    assert all(a < b for a, b in zip(rates[:5], rates[1:6], strict=True)), "rising to the peak"
    assert all(a > b for a, b in zip(rates[5:-1], rates[6:], strict=True)), "then falling"
    assert rates[-1] == pytest.approx(0.01 / 25e4)


def test_none_keeps_the_learning_rate():
    assert learning_rates("none") == [0.01] * 21


def test_a_schedule_over_zero_steps_is_refused():
    for schedule in ("cosine", "onecycle", "none"):
        with pytest.raises(ZooError, match="no training step"):
            trainer_for(linear([1.0]), steps_per_epoch=0, schedule=schedule)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_an_empty_training_split_is_one_sentence_before_any_work(tiny_root, tmp_path, schedule):
    # 200 images, 0.999 held out for validation: no training image, so no step to schedule.
    config = config_for(tiny_root, val_fraction=0.999, schedule=schedule, out=str(tmp_path / "r"))
    with pytest.raises(ZooError, match=r"leaves no training images.*smaller --val-fraction"):
        train_run(config)
    assert not (tmp_path / "r").exists(), "no run folder for a refused recipe"
