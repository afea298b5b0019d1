"""U-Nets (Ronneberger, Fischer and Brox, 2015) for facade segmentation.

`unet-small` is the course reports' compact U-Net: 3x3 conv + ReLU layers without batch norm,
three 2x2 max-pools, 2x2 transposed convs up, and skips that *add* the encoder feature map of the
same size instead of concatenating it (465,857 parameters for 3 input channels and 5 classes).
`unet` is the full design: 4 levels of 32 to 512 channels, batch norm, concatenated skips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.layers import conv_bn_relu, conv_relu, crop_to, pad_to_multiple


class SmallUNet(nn.Module):
    """16,24 | pool | 36,52 | pool | 72,96 | pool | 96,96 | up 96 (+) 72,52 | up 52 (+) 36,24 |
    up 24 (+) 16 | 3x3 conv to the classes; (+) adds the encoder map of the same size."""

    stride = 8

    def __init__(self, num_classes: int = 5, in_chans: int = 3):
        super().__init__()
        self.enc1 = nn.Sequential(conv_relu(in_chans, 16), conv_relu(16, 24))
        self.enc2 = nn.Sequential(conv_relu(24, 36), conv_relu(36, 52))
        self.enc3 = nn.Sequential(conv_relu(52, 72), conv_relu(72, 96))
        self.bottom = nn.Sequential(conv_relu(96, 96), conv_relu(96, 96))
        self.up3 = nn.ConvTranspose2d(96, 96, 2, stride=2)
        self.dec3 = nn.Sequential(conv_relu(96, 72), conv_relu(72, 52))
        self.up2 = nn.ConvTranspose2d(52, 52, 2, stride=2)
        self.dec2 = nn.Sequential(conv_relu(52, 36), conv_relu(36, 24))
        self.up1 = nn.ConvTranspose2d(24, 24, 2, stride=2)
        self.dec1 = conv_relu(24, 16)
        self.head = nn.Conv2d(16, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        skip1 = self.enc1(x)
        skip2 = self.enc2(F.max_pool2d(skip1, 2))
        skip3 = self.enc3(F.max_pool2d(skip2, 2))
        x = self.bottom(F.max_pool2d(skip3, 2))
        x = self.dec3(self.up3(x) + skip3)
        x = self.dec2(self.up2(x) + skip2)
        x = self.dec1(self.up1(x) + skip1)
        return crop_to(self.head(x), size)


def double_conv(in_chans: int, out_chans: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_chans, out_chans), conv_bn_relu(out_chans, out_chans))


class UNet(nn.Module):
    """The original U-Net layout with batch norm: double convs, max-pool down, transposed conv up,
    encoder maps concatenated onto the decoder's; `widths` from the top level to the bottom."""

    def __init__(
        self,
        num_classes: int = 5,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512),
    ):
        super().__init__()
        self.stride = 2 ** (len(widths) - 1)
        self.encoders = nn.ModuleList()
        previous = in_chans
        for width in widths:
            self.encoders.append(double_conv(previous, width))
            previous = width
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deep, shallow in zip(widths[::-1], widths[-2::-1], strict=False):
            self.ups.append(nn.ConvTranspose2d(deep, shallow, 2, stride=2))
            self.decoders.append(double_conv(2 * shallow, shallow))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, skips[-2::-1], strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return crop_to(self.head(x), size)


# The factories of unet-small and unet, declared in zoo/models/__init__.py.


def unet_small(num_classes: int = 5, in_chans: int = 3, **kwargs) -> SmallUNet:
    return SmallUNet(num_classes, in_chans, **kwargs)


def unet(num_classes: int = 5, in_chans: int = 3, **kwargs) -> UNet:
    return UNet(num_classes, in_chans, **kwargs)
