"""timm classifiers and segmentation-models-pytorch (smp) models behind the zoo model contract.

Names are routed by prefix, as smp routes `tu-<name>` to timm:

- `timm/<timm model name>` -> `TimmClassifier`, any name `timm.list_models()` knows;
- `smp/<arch>-<encoder>` -> `SmpSegmenter`, any smp architecture with any smp encoder
  (including `tu-<timm name>`).

The prefixes and the curated entries are declared in `zoo/models/__init__.py`, which imports
nothing: the curated ones by name, so `zoo list`, `--all` benchmarks and the parametrized model
tests include them; any other valid prefixed name is built on demand.

timm and smp are imported inside the resolvers and factories only, so `import zoo`, `zoo list`
and the from-scratch models never pay their import time (several seconds).

Weights are random by default. `pretrained=True` here (what `zoo train --imagenet` and
`registry.create_model(imagenet=True)` pass) reads ImageNet weights from the local Hugging
Face / torch hub cache only (hub offline mode) and raises a ZooError naming the cache folder when
they are not there: never a silent fallback to random weights.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ZooError
from zoo.models.layers import crop_to, pad_to_multiple
from zoo.registry import MODELS, Entry

SEGMENTATION_DATASET = "mini-facade"  # default dataset of the smp/ names built on demand
FIXED_INPUT_SIDE = 64  # models with a fixed input size (ViTs) are built for, and fed, 64x64


# ----------------------------------------------------------------------------- weights


def hub_cache_dirs() -> str:
    """The folders pretrained weights are read from, for error messages."""
    from huggingface_hub import constants

    return (
        f"{constants.HF_HUB_CACHE} (Hugging Face) and {Path(torch.hub.get_dir()) / 'checkpoints'}"
    )


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Hugging Face Hub offline mode for the duration: weights come from the local cache only."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def require_timm_weights(timm_name: str, zoo_name: str) -> None:
    """Raise unless timm has pretrained weights for `timm_name` in the local cache (or on HF)."""
    import timm

    if not timm.models.is_model_pretrained(timm_name):
        raise ZooError(
            f"timm has no ImageNet weights for {zoo_name}; drop --imagenet or pass --weights PATH."
        )
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if not cfg.hf_hub_id and cfg.url:  # torch hub download: check the cache without the network
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        if not cached.is_file():
            raise ZooError(
                f"No ImageNet weights for {zoo_name} in the local cache ({cached} is missing); "
                f"download them once online, or pass --weights PATH."
            )


def build_pretrained(build, zoo_name: str) -> nn.Module:
    """Call `build()` with the hub offline; a missing cached file becomes a ZooError."""
    try:
        with offline_hub():
            return build()
    except ZooError:
        raise
    except Exception as error:  # hub, torch hub and timm raise many kinds for a missing file
        raise ZooError(
            f"No ImageNet weights for {zoo_name} in the local cache, looked in "
            f"{hub_cache_dirs()}; download them once online (or point HF_HOME at a folder that "
            f"has them), or pass --weights PATH."
        ) from error


# ----------------------------------------------------------------------------- timm


def keep_resolution_stem(model: nn.Module) -> int:
    """Make the stem of a ResNet / EfficientNet / MobileNetV3 keep small inputs' resolution, and
    return the factor by which that divides the total stride (1 = model left unchanged).

    ResNets: no max-pool (total stride 32 -> 16); the stride-2 first conv stays, since a
    stride-1 one too (the "CIFAR stem") costs 4x the multiply-adds in every later stage for
    little accuracy at 28x28. The 7x7 kernel is kept, so ImageNet weights still load.
    EfficientNet/MobileNetV3: stride-1 `conv_stem` (32 -> 16).
    """
    from timm.models.efficientnet import EfficientNet
    from timm.models.mobilenetv3 import MobileNetV3
    from timm.models.resnet import ResNet

    if isinstance(model, ResNet):
        model.maxpool = nn.Identity()
        return 2
    if isinstance(model, EfficientNet | MobileNetV3):
        model.conv_stem.stride = (1, 1)
        return 2
    return 1


class TimmClassifier(nn.Module):
    """A timm classifier made to work on small (e.g. 28x28 grey) images.

    Per family: ResNets, EfficientNets and MobileNetV3s keep resolution in their stem (see
    `keep_resolution_stem`). Then, for every model, an input whose shorter side is below twice
    the total stride is bilinearly upsampled to it, so the last feature map is at least 2x2:
    28x28 becomes 32x32 for a ResNet, EfficientNet or MobileNetV3 (stride 16) and 64x64 for a
    ConvNeXt (stride 32). Models with a fixed input size (ViTs) are built for
    64x64 and always resized to it.
    Grey input is native: timm builds the first conv with `in_chans` channels.
    """

    def __init__(
        self,
        timm_name: str,
        num_classes: int,
        in_chans: int,
        pretrained: bool = False,
        **kwargs,
    ):
        super().__init__()
        import timm

        zoo_name = f"timm/{timm_name}"
        cfg = timm.models.get_pretrained_cfg(timm_name)
        self.fixed_side = FIXED_INPUT_SIDE if getattr(cfg, "fixed_input_size", False) else None
        if self.fixed_side is not None:
            kwargs.setdefault("img_size", self.fixed_side)

        def build() -> nn.Module:
            return timm.create_model(
                timm_name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                **kwargs,
            )  # fmt: skip

        if pretrained:
            require_timm_weights(timm_name, zoo_name)
            self.model = build_pretrained(build, zoo_name)
        else:
            self.model = build()
        feature_info = getattr(self.model, "feature_info", None) or [{"reduction": 32}]
        total_stride = feature_info[-1]["reduction"] // keep_resolution_stem(self.model)
        self.min_side = 2 * total_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if self.fixed_side is not None:
            if (height, width) != (self.fixed_side, self.fixed_side):
                x = F.interpolate(x, size=(self.fixed_side,) * 2, mode="bilinear")
        elif min(height, width) < self.min_side:
            scale = self.min_side / min(height, width)
            size = (math.ceil(height * scale), math.ceil(width * scale))
            x = F.interpolate(x, size=size, mode="bilinear")
        return self.model(x)


def timm_classifier(
    num_classes: int = 10, in_chans: int = 1, pretrained: bool = False, *, timm_name: str, **kwargs
) -> TimmClassifier:
    """The zoo factory of `timm/<timm_name>`: Fashion-MNIST shapes by default."""
    return TimmClassifier(timm_name, num_classes, in_chans, pretrained, **kwargs)


def resolve_timm(name: str) -> Entry:
    """`timm/<name>` -> an Entry building TimmClassifier; unknown names fail with close matches."""
    import timm

    timm_name = name.removeprefix("timm/")
    if not timm.is_model(timm_name):
        raise MODELS.unknown(name, [f"timm/{n}" for n in timm.list_models()])
    description = f"timm {timm_name}, on demand"
    return Entry(
        name,
        "classification",
        "fashion-mnist",
        description,
        timm_classifier,
        arguments={"timm_name": timm_name},
    )


# ----------------------------------------------------------------------------- smp


class SmpSegmenter(nn.Module):
    """An smp model that takes any input size: pads H and W up to a multiple of the encoder's
    output stride (zeros, i.e. the dataset mean after normalisation) and crops the logits back.

    Grey input is native: smp builds the encoder's first conv with `in_chans` channels.
    """

    def __init__(
        self,
        arch: str,
        encoder: str,
        num_classes: int,
        in_chans: int,
        pretrained: bool = False,
        **kwargs,
    ):
        super().__init__()
        import segmentation_models_pytorch as smp

        zoo_name = f"smp/{arch}-{encoder}"

        weights_tag = True if encoder.startswith("tu-") else "imagenet"  # smp's spelling for tu-

        def build() -> nn.Module:
            return smp.create_model(
                arch, encoder, encoder_weights=weights_tag if pretrained else None,
                in_channels=in_chans, classes=num_classes, **kwargs,
            )  # fmt: skip

        if pretrained:
            if encoder.startswith("tu-"):
                require_timm_weights(encoder.removeprefix("tu-"), zoo_name)
            elif "imagenet" not in smp.encoders.encoders[encoder]["pretrained_settings"]:
                raise ZooError(
                    f"smp has no ImageNet weights for the {encoder} encoder of {zoo_name}; "
                    f"drop --imagenet or pass --weights PATH."
                )
            self.model = build_pretrained(build, zoo_name)
        else:
            self.model = build()
        self.stride = self.model.encoder.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, size = pad_to_multiple(x, self.stride)
        return crop_to(self.model(x), size)


def smp_names() -> tuple[list[str], list[str]]:
    """smp's architecture names and encoder names."""
    import segmentation_models_pytorch as smp

    return list(smp.MODEL_ARCHITECTURES_MAPPING), smp.encoders.get_encoder_names()


def resolve_smp(name: str) -> Entry:
    """`smp/<arch>-<encoder>` -> an Entry building SmpSegmenter; bad names fail with close matches.

    The architecture is the longest smp architecture name before a '-', so encoders that contain
    '-' themselves (`tu-convnext_atto`, `efficientnet-b0`) split correctly.
    """
    import timm

    archs, encoders = smp_names()
    rest = name.removeprefix("smp/")
    arch = next((a for a in sorted(archs, key=len, reverse=True) if rest.startswith(f"{a}-")), None)
    encoder = rest[len(arch) + 1 :] if arch else ""
    valid = encoder in encoders or (
        encoder.startswith("tu-") and timm.is_model(encoder.removeprefix("tu-"))
    )
    if arch is None or not valid:
        if arch is None:
            guess = rest.partition("-")[0]
            close = difflib.get_close_matches(guess, archs, n=3, cutoff=0.5)
            encoder_guess = rest.partition("-")[2] or "resnet34"  # "smp/unet" lacks the encoder
            candidates = [f"smp/{a}-{encoder_guess}" for a in close or archs]
        else:
            pool = encoders + [f"tu-{n}" for n in timm.list_models()]
            candidates = [f"smp/{arch}-{e}" for e in pool]
        raise MODELS.unknown(name, candidates)

    description = f"smp {arch}, {encoder} encoder, on demand"
    return Entry(
        name,
        "segmentation",
        SEGMENTATION_DATASET,
        description,
        smp_segmenter,
        arguments={"arch": arch, "encoder": encoder},
    )


def smp_segmenter(
    num_classes: int = 5,
    in_chans: int = 3,
    pretrained: bool = False,
    *,
    arch: str,
    encoder: str,
    **kwargs,
) -> SmpSegmenter:
    """The zoo factory of `smp/<arch>-<encoder>`: 5 classes, RGB (mini-facade) by default."""
    return SmpSegmenter(arch, encoder, num_classes, in_chans, pretrained, **kwargs)
