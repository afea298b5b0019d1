"""Plain fully-convolutional segmentation nets, after the facade-segmentation course reports.

`fcn` is the reports' baseline: conv blocks with batch norm and ReLU, two 2x2 max-pools down and
two bilinear upsamplings back up (Long, Shelhamer and Darrell's FCN without the skip heads).
`strided-net` replaces pooling with stride-2 convolutions and bilinear upsampling with learned
transposed convolutions (Springenberg et al.'s "all convolutional" idea applied to both ways).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.layers import conv_bn_relu, crop_to, pad_to_multiple


class FCN(nn.Module):
    """conv-conv | pool | conv-conv | pool | conv-conv | up | conv | up | conv | 1x1 to classes."""

    stride = 4  # total downsampling; inputs are padded to a multiple of it

    def __init__(
        self,
        num_classes: int = 5,
        in_chans: int = 3,
        channels: tuple[int, int, int] = (32, 64, 128),
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.down1 = nn.Sequential(conv_bn_relu(in_chans, c1), conv_bn_relu(c1, c1))
        self.down2 = nn.Sequential(conv_bn_relu(c1, c2), conv_bn_relu(c2, c2))
        self.middle = nn.Sequential(conv_bn_relu(c2, c3), conv_bn_relu(c3, c3))
        self.up2 = conv_bn_relu(c3, c2)
        self.up1 = conv_bn_relu(c2, c1)
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        x = self.down1(x)
        x = self.down2(F.max_pool2d(x, 2))
        x = self.middle(F.max_pool2d(x, 2))
        x = self.up2(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.up1(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return crop_to(self.head(x), size)


class StridedNet(nn.Module):
    """Stride-2 3x3 convs down (x8), 2x2 stride-2 transposed convs up, no pooling at all."""

    def __init__(
        self,
        num_classes: int = 5,
        in_chans: int = 3,
        channels: tuple[int, ...] = (32, 64, 128, 256),
    ):
        super().__init__()
        self.stride = 2 ** (len(channels) - 1)
        self.stem = conv_bn_relu(in_chans, channels[0])
        self.down = nn.Sequential(
            *(conv_bn_relu(a, b, stride=2) for a, b in zip(channels, channels[1:], strict=False))
        )
        up: list[nn.Module] = []
        for a, b in zip(channels[::-1], channels[-2::-1], strict=False):
            up += [
                nn.ConvTranspose2d(a, b, 2, stride=2, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
                conv_bn_relu(b, b),
            ]
        self.up = nn.Sequential(*up)
        self.head = nn.Conv2d(channels[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        return crop_to(self.head(self.up(self.down(self.stem(x)))), size)


# The factories of fcn and strided-net, declared in zoo/models/__init__.py.


def fcn(num_classes: int = 5, in_chans: int = 3, **kwargs) -> FCN:
    return FCN(num_classes, in_chans, **kwargs)


def strided_net(num_classes: int = 5, in_chans: int = 3, **kwargs) -> StridedNet:
    return StridedNet(num_classes, in_chans, **kwargs)
