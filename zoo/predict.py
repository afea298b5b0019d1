"""`zoo predict`: run a trained checkpoint on image files, as `zoo train` preprocessed its data.

Segmentation runs write a colour-coded mask and an overlay per image, at the photo's own size;
classification runs return the top-k classes with their probabilities. One unreadable file is
reported and the others are still processed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zoo.data.base import DatasetInfo
from zoo.data.images import fit_square, read_image
from zoo.data.splits import normalize
from zoo.errors import ZooError
from zoo.progress import phase
from zoo.results import atomic_write_bytes
from zoo.weights import load_source

OVERLAY_ALPHA = 0.5  # share of the mask colour in the overlay


@dataclass
class Prediction:
    image: Path
    top_classes: list[tuple[str, float]] = field(default_factory=list)  # classification
    mask: Path | None = None  # segmentation: colour-coded class map
    overlay: Path | None = None  # segmentation: photo blended with the mask

    def __str__(self) -> str:
        if self.mask is not None:
            return f"{self.image}: {self.mask}, {self.overlay}"
        return f"{self.image}: " + ", ".join(f"{name} {p:.3f}" for name, p in self.top_classes)


def save_png(array: np.ndarray, path: Path) -> None:
    """`array` as a PNG at `path`, written to a temporary name and renamed into place."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def to_input(image: Image.Image, info: DatasetInfo, device: torch.device) -> torch.Tensor:
    """Resize (imagefolder: and centre-crop) to the dataset's sample size and normalise, as the
    training batches were."""
    height, width = info.image_size
    if info.crop_pct is not None:
        resized = np.asarray(fit_square(image, width, info.crop_pct))
    else:
        resized = np.asarray(image.resize((width, height), Image.BILINEAR))
    array = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    tensor = torch.from_numpy(np.array(array))[None].to(device)  # a writable copy
    return normalize(tensor, info)


@torch.inference_mode()
def predict_image(
    model, path: Path, info: DatasetInfo, device: torch.device, out_dir: Path, top_k: int
) -> Prediction:
    image = read_image(path, "RGB" if info.in_chans == 3 else "L")
    logits = model(to_input(image, info, device)).float()
    if info.task == "classification":
        probs = logits.softmax(1)[0].cpu()
        values, indices = probs.topk(min(top_k, len(probs)))
        top = [
            (info.class_names[i], p) for i, p in zip(indices.tolist(), values.tolist(), strict=True)
        ]
        return Prediction(path, top_classes=top)
    # Back to the photo's own size before the argmax, so class borders stay smooth.
    logits = F.interpolate(logits, size=(image.height, image.width), mode="bilinear")
    classes = logits.argmax(1)[0].cpu().numpy()
    from zoo.plots import class_palette

    palette = np.asarray(class_palette(info), dtype=np.uint8)
    colours = palette[classes]
    photo = np.asarray(image.convert("RGB"), dtype=np.float32)
    overlay = (1 - OVERLAY_ALPHA) * photo + OVERLAY_ALPHA * colours
    out_dir.mkdir(parents=True, exist_ok=True)
    mask_path, overlay_path = (
        out_dir / f"{path.stem}_mask.png",
        out_dir / f"{path.stem}_overlay.png",
    )
    save_png(colours, mask_path)
    save_png(overlay.round().astype(np.uint8), overlay_path)
    return Prediction(path, mask=mask_path, overlay=overlay_path)


def predict_files(
    source: str | Path,
    images: list[Path],
    *,
    out_dir: Path | None = None,
    checkpoint: str | None = None,
    device: torch.device | None = None,
    top_k: int = 5,
) -> tuple[list[Prediction], list[str]]:
    """Predict every image with a run folder's checkpoint (default best), a hub folder, or
    published weights by name (`unet-small`); returns the predictions and one error sentence per
    failed file. Masks go to `out_dir`, default RUN_DIR/predictions (published: predictions/)."""
    device = device or torch.device("cpu")
    # Single images: the channels-last memory format gains nothing.
    with phase("loading the model"):
        loaded = load_source(source, checkpoint=checkpoint, device=device, channels_last=False)
    model, info, run_dir = loaded.model, loaded.info, loaded.record.run_dir
    out_dir = out_dir or (run_dir / "predictions" if run_dir else Path("predictions"))
    predictions, errors = [], []
    with phase("predicting", total=len(images), unit="images") as advance:
        for path in images:
            try:
                predictions.append(predict_image(model, Path(path), info, device, out_dir, top_k))
            except ZooError as error:
                errors.append(str(error).rstrip(".") + ".")
            advance()
    return predictions, errors
