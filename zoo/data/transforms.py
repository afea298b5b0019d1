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


def joint_augmentation(
    *,
    flip: bool = True,
    scale: tuple[float, float] = (0.5, 1.0),
    brightness_contrast: float = 0.2,
    crop: int | None = None,
):
    """Segmentation augmentation with albumentations, applied to each photo and its mask together:
    horizontal flip, a random crop of `scale` of the area resized back to the input size (masks
    with nearest neighbours), random brightness/contrast on the photo only, then (with `crop`) a
    random `crop` x `crop` window at that scale, so training sees objects at their test size.

    Same signature as `random_crop_flip`'s transform; (B, 3, H, W) uint8 photos and (B, H, W)
    masks in, the same shapes out (H = W = `crop` with it). The batch's seed comes from
    `generator`, so runs repeat.
    """
    import albumentations as A
    import numpy as np

    pipelines: dict[tuple[int, int], A.Compose] = {}  # built once per input size

    def pipeline_for(height: int, width: int) -> A.Compose:
        if (height, width) not in pipelines:
            steps = [A.HorizontalFlip(p=0.5)] if flip else []
            if scale != (1.0, 1.0):
                steps.append(A.RandomResizedCrop(size=(height, width), scale=scale, p=1.0))
            if brightness_contrast:
                steps.append(
                    A.RandomBrightnessContrast(brightness_contrast, brightness_contrast, p=0.5)
                )
            if crop is not None:
                steps.append(A.RandomCrop(crop, crop))
            pipelines[height, width] = A.Compose(steps)
        return pipelines[height, width]

    def transform(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None):
        pipeline = pipeline_for(*images.shape[-2:])
        pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        device = images.device  # albumentations works on host arrays; no-op copies on CPU
        photos = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C) views, no copy
        masks = targets.cpu().numpy()
        height, width = (crop, crop) if crop is not None else masks.shape[1:]
        out_images = np.empty((len(photos), height, width, photos.shape[3]), photos.dtype)
        out_masks = np.empty((len(masks), height, width), masks.dtype)
        for i in range(len(photos)):
            result = pipeline(image=photos[i], mask=masks[i])
            out_images[i], out_masks[i] = result["image"], result["mask"]
        out_images = torch.from_numpy(out_images).permute(0, 3, 1, 2).contiguous()
        return out_images.to(device), torch.from_numpy(out_masks).to(device)

    return transform


def random_resized_crop_flip(
    scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
):
    """timm's training augmentation for photos, with albumentations: a random crop of `scale` of
    the area and `ratio` aspect, resized back to the input size, then a random horizontal flip
    (timm's defaults). Same signature as `random_crop_flip`'s transform; (B, C, H, W) uint8 in,
    the same shape out; the batch's seed comes from `generator`, so runs repeat."""
    import albumentations as A
    import numpy as np

    pipelines: dict[tuple[int, int], A.Compose] = {}  # built once per input size

    def transform(images: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None):
        height, width = images.shape[-2:]
        if (height, width) not in pipelines:
            crop = A.RandomResizedCrop(size=(height, width), scale=scale, ratio=ratio, p=1.0)
            pipelines[height, width] = A.Compose([crop, A.HorizontalFlip(p=0.5)])
        pipeline = pipelines[height, width]
        pipeline.set_random_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        photos = images.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
        out = np.stack([pipeline(image=photo)["image"] for photo in photos])
        out = out.reshape(photos.shape)  # albumentations drops a single channel's axis
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device), targets

    return transform
