"""The model contract, checked for every registry entry (as timm's tests/test_models.py does)."""

import pytest
import torch

from zoo.data import get_dataset_info
from zoo.registry import create_model, get_model_entry, list_models

SEGMENTATION_TEST_SIZE = (64, 64)  # small, divisible by every net's total stride
# The heaviest curated timm/smp entries: checked with `pytest -m slow`, not by default.
SLOW_MODELS = {"timm/resnet50", "smp/deeplabv3plus-resnet34", "smp/unet-resnet34"}


def model_names() -> list:
    """Every registered model, the slow ones marked `slow`."""
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in list_models()
    ]


def sample_shape(name: str, in_chans: int, batch: int = 2) -> tuple[int, ...]:
    entry = get_model_entry(name)
    if entry.task == "segmentation":
        return (batch, in_chans, *SEGMENTATION_TEST_SIZE)
    return (batch, in_chans, *get_dataset_info(entry.dataset).image_size)


def expected_output(name: str, shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
    if get_model_entry(name).task == "segmentation":
        return (shape[0], num_classes, *shape[2:])
    return (shape[0], num_classes)


@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("in_chans,num_classes", [(1, 10), (3, 7)])
def test_forward_shape_and_finite(name, in_chans, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans).eval()
    shape = sample_shape(name, in_chans)
    with torch.no_grad():
        output = model(torch.randn(shape))
    assert output.shape == expected_output(name, shape, num_classes)
    assert torch.isfinite(output).all()


@pytest.mark.parametrize("name", model_names())
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=2).train()
    output = model(torch.randn(sample_shape(name, 2)))
    output.float().mean().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"No gradient for {parameter_name}"
        assert torch.isfinite(parameter.grad).all(), f"Non-finite gradient for {parameter_name}"


@pytest.mark.parametrize("name", model_names())
def test_same_seed_same_output(name):
    x = torch.randn(sample_shape(name, 1))
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model(name, num_classes=4, in_chans=1).eval()
        with torch.no_grad():
            outputs.append(model(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", model_names())
def test_channels_last_matches_contiguous(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=1).eval()
    x = torch.randn(sample_shape(name, 1))
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        output = model(x.contiguous(memory_format=torch.channels_last))
    scale = max(1.0, reference.abs().max().item())  # deep random-init nets give large logits
    torch.testing.assert_close(output, reference, rtol=1e-4, atol=1e-4 * scale)


def test_baseline_cnn_is_the_reports_network():
    model = create_model("baseline-cnn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)),
        (32, 32, (3, 3)),
    ]
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 2


def test_wide_leaky_cnn_uses_leaky_relu_and_batch_norm():
    model = create_model("wide-leaky-cnn")
    kinds = {type(m) for m in model.modules()}
    assert torch.nn.ReLU not in kinds
    assert any(issubclass(k, torch.nn.LeakyReLU) for k in kinds)
    assert torch.nn.BatchNorm2d in kinds


@pytest.mark.parametrize(
    "name", [n for n in list_models() if get_model_entry(n).num_parameters is not None]
)
def test_declared_parameter_counts_are_the_models_own(name):
    """`zoo list` shows declared counts for timm/smp entries without importing them."""
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == get_model_entry(name).num_parameters
