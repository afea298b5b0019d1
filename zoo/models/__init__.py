"""Model families: importing a family module registers its entries."""

from zoo.models import (
    cnn,  # noqa: F401  (registers baseline-cnn, wide-leaky-cnn)
    external,  # noqa: F401  (registers the timm/ and smp/ prefixes and the curated entries)
    fcn,  # noqa: F401  (registers fcn, strided-net)
    unet,  # noqa: F401  (registers unet-small, unet)
)
