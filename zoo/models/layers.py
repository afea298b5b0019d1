"""Building blocks shared by the model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad (B, C, H, W) on the bottom and right up to a multiple of `multiple`.

    Returns the padded tensor and the original (H, W) for `crop_to`. Segmentation nets that
    downsample by `multiple` in total use it so that any input size works: zero is the mean
    of the normalised input, so the padding looks like a flat grey border.
    """
    height, width = x.shape[-2:]
    # Padded even by zero pixels: a branch on the size would be frozen into an exported graph.
    x = F.pad(x, (0, -width % multiple, 0, -height % multiple))
    return x, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo `pad_to_multiple`: keep the top-left (H, W) of a (B, C, H', W') tensor."""
    return x[..., : size[0], : size[1]]


def conv_bn_relu(in_chans: int, out_chans: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (same padding, no bias) -> batch norm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


def conv_relu(in_chans: int, out_chans: int) -> nn.Sequential:
    """3x3 conv (same padding, with bias) -> ReLU, for the nets without batch norm."""
    return nn.Sequential(nn.Conv2d(in_chans, out_chans, 3, padding=1), nn.ReLU(inplace=True))
