"""zoo's models, declared: name, task, default dataset, the "module:function" of the factory,
a description and the parameter count that `zoo list` shows.

Declaring imports nothing: a family module (and torch, timm or smp with it) is imported when one
of its models is built, so `zoo list` and the answer to a misspelt name never wait for torch
(transformers' auto classes map names to classes as strings for the same reason). The classes
and factories live in one file per family: cnn.py, fcn.py, unet.py, external.py (timm, smp).
The parameter counts are for the default dataset; tests/test_models.py checks each.
"""

from zoo.registry import MODELS, declare_model

declare_model(
    "baseline-cnn",
    "zoo.models.cnn:baseline_cnn",
    task="classification",
    dataset="fashion-mnist",
    description="The reports' net: 2x (3x3 conv 32, ReLU, max-pool), FC 128, FC.",
    num_parameters=211_690,
)
declare_model(
    "wide-leaky-cnn",
    "zoo.models.cnn:wide_leaky_cnn",
    task="classification",
    dataset="fashion-mnist",
    description="Wider (64/128) with LeakyReLU, batch norm and dropout; beats baseline-cnn.",
    num_parameters=1_683_146,
)
declare_model(
    "fcn",
    "zoo.models.fcn:fcn",
    task="segmentation",
    dataset="mini-facade",
    description="The reports' FCN: BN-ReLU conv blocks, 2 max-pools down, 2 bilinear ups.",
    num_parameters=379_973,
)
declare_model(
    "strided-net",
    "zoo.models.fcn:strided_net",
    task="segmentation",
    dataset="mini-facade",
    description="Stride-2 convs down (x8), learned transposed convs up, no pooling.",
    num_parameters=755_525,
)
declare_model(
    "unet-small",
    "zoo.models.unet:unet_small",
    task="segmentation",
    dataset="mini-facade",
    description="The reports' small U-Net: 14 convs, no BN, additive skips (466k params).",
    num_parameters=465_857,
)
declare_model(
    "unet",
    "zoo.models.unet:unet",
    task="segmentation",
    dataset="mini-facade",
    description="Full U-Net: 4 levels, 32-512 channels, batch norm, concatenated skips.",
    num_parameters=7_763_173,
)

# Any timm classifier or smp segmentation model, by name: `timm/<name>`, `smp/<arch>-<encoder>`
# (docs/timm-and-smp.md). The resolvers check the name against timm's and smp's own lists.
MODELS.register_prefix("timm", "zoo.models.external:resolve_timm")
MODELS.register_prefix("smp", "zoo.models.external:resolve_smp")


def _timm(timm_name: str, num_parameters: int, description: str) -> None:
    """A curated `timm/<timm_name>`: listed by `zoo list`, built as any timm/ name is."""
    declare_model(
        f"timm/{timm_name}",
        "zoo.models.external:timm_classifier",
        task="classification",
        dataset="fashion-mnist",
        description=description,
        num_parameters=num_parameters,
        timm_name=timm_name,
    )


def _smp(arch: str, encoder: str, num_parameters: int, description: str) -> None:
    """A curated `smp/<arch>-<encoder>`: listed by `zoo list`, built as any smp/ name is."""
    declare_model(
        f"smp/{arch}-{encoder}",
        "zoo.models.external:smp_segmenter",
        task="segmentation",
        dataset="mini-facade",
        description=description,
        num_parameters=num_parameters,
        arch=arch,
        encoder=encoder,
    )


_timm("resnet18", 11_175_370, "timm ResNet-18, stem without max-pool for small inputs.")
_timm("resnet50", 23_522_250, "timm ResNet-50, stem without max-pool for small inputs.")
_timm("efficientnet_b0", 4_019_782, "timm EfficientNet-B0, stride-1 stem for small inputs.")
_timm("mobilenetv3_small_100", 1_527_818, "timm MobileNetV3-Small, stride-1 stem.")
_timm("convnext_atto", 3_376_450, "timm ConvNeXt-Atto, input upsampled to 64x64.")
_timm("regnetx_002", 2_318_906, "timm RegNetX-200MF, input upsampled to 64x64.")

_smp("unet", "resnet18", 14_328_789, "smp U-Net, ResNet-18 encoder.")
_smp("unet", "resnet34", 24_436_949, "smp U-Net, ResNet-34 encoder.")
_smp("fpn", "resnet18", 13_047_749, "smp FPN, ResNet-18 encoder.")
_smp("linknet", "resnet18", 11_663_909, "smp LinkNet, ResNet-18 encoder.")
_smp("deeplabv3plus", "resnet34", 22_438_485, "smp DeepLabV3+, ResNet-34 encoder, stride 16.")
_smp("unet", "tu-convnext_atto", 5_775_053, "smp U-Net, timm ConvNeXt-Atto encoder.")
_smp("upernet", "resnet18", 19_492_549, "smp UPerNet, ResNet-18 encoder.")
