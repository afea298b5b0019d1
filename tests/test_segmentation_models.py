"""Extras for the segmentation nets beyond the generic contract in test_models.py."""

import pytest
import torch

from zoo.models.layers import crop_to, pad_to_multiple
from zoo.registry import create_model, list_models

SEGMENTATION_MODELS = list_models(task="segmentation")


def test_the_four_facade_nets_are_registered():
    assert set(SEGMENTATION_MODELS) >= {"fcn", "strided-net", "unet-small", "unet"}


def test_unet_small_has_the_reports_parameter_count():
    model = create_model("unet-small")  # mini-facade: 3 channels in, 5 classes
    assert sum(p.numel() for p in model.parameters()) == 465_857
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 14 and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()
    )
    layer_counts = [
        sum(p.numel() for p in m.parameters())
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
    ]
    assert layer_counts == [
        448, 3480, 7812, 16900, 33768, 62304, 83040, 83040, 36960, 62280, 33748,
        10868, 16884, 7800, 2328, 3472, 725,
    ]  # fmt: skip


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
@pytest.mark.parametrize("size", [(37, 50), (17, 16)])
def test_any_input_size_gives_a_same_size_output(name, size):
    model = create_model(name, num_classes=4, in_chans=3).eval()
    with torch.no_grad():
        output = model(torch.randn(1, 3, *size))
    assert output.shape == (1, 4, *size)


def test_pad_and_crop_round_trip():
    x = torch.randn(2, 3, 13, 30)
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape[-2:] == (16, 32) and size == (13, 30)
    torch.testing.assert_close(crop_to(padded, size), x)
    same, _ = pad_to_multiple(x[..., :8, :16], 8)
    assert same.shape[-2:] == (8, 16)


def test_deeplabv3plus_learns_a_two_region_mask_at_full_resolution():
    """The curated DeepLabV3+ (slow-marked in test_models.py) by default, small and fast: from
    random init, a few Adam steps on two 32x32 images fit their left/right mask, and the eval
    output is a per-pixel map at the input's size that every parameter was trained for."""
    torch.manual_seed(0)
    model = create_model("smp/deeplabv3plus-resnet34", num_classes=2, in_chans=3)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    images[..., 16:] += 1.5  # the right half is brighter
    masks = torch.zeros(2, 32, 32, dtype=torch.long)
    masks[..., 16:] = 1
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert losses[-1] < losses[0] / 3, losses
    model.eval()
    with torch.no_grad():
        predicted = model(images).argmax(1)
    assert predicted.shape == masks.shape
    assert (predicted == masks).float().mean() > 0.9
    # both halves are found, so the boundary is placed, not one class painted everywhere
    assert (predicted[..., :14] == 0).float().mean() > 0.9
    assert (predicted[..., 18:] == 1).float().mean() > 0.9
