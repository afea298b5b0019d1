"""Batch-level augmentation on uint8 tensors: a whole batch in a few tensor ops, no Python loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(padding: int = 2, flip: bool = True):
    """Random crop with zero padding (as torchvision's RandomCrop) plus random horizontal flip."""

    def transform(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None):
        # Random numbers come from the (CPU) generator, so runs are reproducible on any device.
        n, _, h, w = images.shape
        device = images.device
        if padding:
            padded = F.pad(images, (padding, padding, padding, padding))
            top = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(device)
            left = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator).to(device)
            rows = (top + torch.arange(h, device=device).view(1, h, 1)).expand(n, h, w)
            cols = (left + torch.arange(w, device=device).view(1, 1, w)).expand(n, h, w)
            batch = torch.arange(n, device=device).view(n, 1, 1).expand(n, h, w)
            images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if flip:
            flipped = (torch.rand(n, generator=generator) < 0.5).to(device)
            images = torch.where(flipped.view(n, 1, 1, 1), images.flip(3), images)
        return images.contiguous(), targets

    return transform
