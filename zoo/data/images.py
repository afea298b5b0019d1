"""The one image reader of zoo: dataset photos and masks, and `zoo predict`'s files.

Images are decoded fully here, so a truncated file fails when it is read, with a sentence
naming it, and never halfway through an epoch. Any mode PIL reads is accepted: 16-bit grey is
scaled to 8 bits (PIL's own `convert` would clip it to white), palette images go through RGBA
(PIL's advice for their transparency), CMYK and the rest through PIL's `convert`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import ZooError

GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
DEFAULT_CROP_PCT = 0.875  # timm's evaluation crop: resize to side / 0.875, centre-crop side


class BadImage(ZooError):
    """A file that cannot be used as an image or mask; the message names the file."""


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` as "RGB" or "L", with 16-bit grey scaled (not clipped) to 8 bits."""
    if image.mode in SIXTEEN_BIT_MODES:
        levels = np.asarray(image).astype(np.float32) / 257  # 0..65535 -> 0..255
        image = Image.fromarray(levels.clip(0, 255).round().astype(np.uint8), mode="L")
    elif image.mode == "P":
        image = image.convert("RGBA")
    return image if image.mode == mode else image.convert(mode)


def read_image(
    path: Path, mode: str = "RGB", *, draft: tuple[int, int] | None = None
) -> Image.Image:
    """The fully decoded image at `path`, converted to `mode` ("RGB" or "L").

    With `draft` (width, height), a JPEG is decoded at the smallest power-of-two reduction
    still at least that large (PIL's `draft`), so a 50-megapixel photo never sits in memory
    at full size; other formats are decoded whole.
    """
    try:
        with Image.open(path) as image:
            if draft is not None and image.format == "JPEG":
                image.draft(image.mode, draft)
            image.load()
            return to_mode(image, mode)
    except Image.DecompressionBombError:
        raise BadImage(
            f"{path} has more pixels than PIL decodes safely ({Image.MAX_IMAGE_PIXELS}); "
            "downscale it, or save it as a JPEG, which zoo decodes at reduced size"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "not an image"
        if path.is_file() and path.stat().st_size == 0:
            raise BadImage(f"{path} is an empty (0-byte) file, not an image") from None
        raise BadImage(f"{path} is not a readable image ({error})") from None


def is_grey(path: Path) -> bool:
    """Whether the image at `path` has one channel (read from its header only)."""
    with Image.open(path) as image:
        return image.mode in GREY_MODES


def fit_square(image: Image.Image, side: int, crop_pct: float = DEFAULT_CROP_PCT) -> Image.Image:
    """timm's evaluation transform: resize the shorter side to `side / crop_pct` (bilinear,
    reducing by whole factors first, as `Image.thumbnail` does), then centre-crop side x side."""
    short = max(side, int(side / crop_pct))
    width, height = image.size
    scale = short / min(width, height)
    size = (max(short, round(width * scale)), max(short, round(height * scale)))
    image = image.resize(size, Image.BILINEAR, reducing_gap=3.0)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return image.crop((left, top, left + side, top + side))


def read_square(path: Path, side: int, mode: str, crop_pct: float = DEFAULT_CROP_PCT) -> np.ndarray:
    """One sample as the models see it: uint8 (C, side, side), C = 1 for mode "L", else 3.

    The per-file decode of `imagefolder:` datasets (and of a streaming loader): JPEGs are
    drafted down to about the size `fit_square` needs before they are decoded.
    """
    short = max(side, int(side / crop_pct))
    image = fit_square(read_image(path, mode, draft=(short, short)), side, crop_pct)
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_mask(path: Path) -> Image.Image:
    """A single-channel PNG whose pixel values are class ids."""
    if not path.is_file():
        raise BadImage(f"{path} is missing: every photo needs a same-name PNG mask")
    try:
        with Image.open(path) as mask:
            mask.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImage(f"{path} is not a readable PNG mask ({error})") from None
    if mask.mode not in ("L", "P", "I", "I;16"):
        raise BadImage(
            f"{path} is a {mask.mode} image, not a single-channel PNG whose pixels are class ids"
        )
    return mask
