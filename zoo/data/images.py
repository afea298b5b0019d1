"""The one image reader of zoo: dataset photos and masks, and `zoo predict`'s files.

Images are decoded fully here, so a truncated file fails when it is read, with a sentence
naming it, and never halfway through an epoch.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from zoo.errors import ZooError


class BadImage(ZooError):
    """A file that cannot be used as an image or mask; the message names the file."""


def read_image(path: Path, mode: str = "RGB") -> Image.Image:
    """The fully decoded image at `path`, converted to `mode` ("RGB" or "L")."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode)
    except (OSError, SyntaxError, ValueError) as error:  # PIL's ways of saying "not an image"
        raise BadImage(f"{path} is not a readable image ({error})") from None


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
