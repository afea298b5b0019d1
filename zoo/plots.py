"""Every figure zoo draws: each a small function taking arrays and returning a matplotlib Figure."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.lines  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from zoo.metrics import per_image_mean_iou, predicted_labels  # noqa: E402
from zoo.progress import phase  # noqa: E402


def save_figure(fig: Figure, path: Path) -> None:
    """Write a PNG atomically and release the figure's memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


SPLIT_COLOURS = {"train": "C0", "val": "C1"}  # the same in every panel


def plot_curves(history: list[dict], metric: str = "accuracy") -> Figure:
    """Train-vs-val loss and `metric` per epoch, plus val mean AP and mean IoU when the history
    has them (segmentation runs, where pixel accuracy says little about the small classes)."""
    epochs = [row["epoch"] for row in history]
    panels = ["loss", metric] + [
        key for key in ("mean_ap", "mean_iou") if f"val_{key}" in history[0]
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, key in zip(axes, panels, strict=True):
        splits = [split for split in ("train", "val") if f"{split}_{key}" in history[0]]
        for split in splits:
            values = [row[f"{split}_{key}"] for row in history]
            ax.plot(epochs, values, "o-", label=split, ms=3, color=SPLIT_COLOURS[split])
        ax.set(xlabel="epoch", ylabel=key, title=f"{key}: {' vs '.join(splits)}")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # no epoch 2.5
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_per_class(values: dict[str, dict[str, float | None]], ylabel: str) -> Figure:
    """Grouped bars: `values[split][class_name]`, one bar group per class, one colour per split.

    None (a score undefined on that split, e.g. AP of an absent class) leaves a gap."""
    splits = list(values)
    names = list(values[splits[0]])
    x = np.arange(len(names))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names)), 3.8))
    for i, split in enumerate(splits):
        # An undefined score (None: the class is absent from the split) gets no bar.
        heights = [np.nan if values[split][n] is None else values[split][n] for n in names]
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, heights, width, label=split)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set(ylabel=ylabel, ylim=(0, 1.08), title=f"per-class {ylabel}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never hides a bar
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def plot_confusion(matrix: list[list[int]], class_names: list[str], title: str) -> Figure:
    """Row-normalised confusion matrix (rows: true class) annotated with counts."""
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.6 + 0.6 * n))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    return fig


def plot_filters(weight: torch.Tensor) -> Figure:
    """First-layer conv filters (out, in, k, k): grey per filter, or RGB when in == 3."""
    weight = weight.detach().float().cpu()
    count = weight.shape[0]
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        w = weight[i]
        w = (w - w.min()) / (w.max() - w.min() + 1e-8)  # each filter on its own scale
        if w.shape[0] == 3:
            ax.imshow(w.permute(1, 2, 0).numpy())
        else:
            ax.imshow(w.mean(0).numpy(), cmap="gray")
    fig.suptitle(f"first conv layer: {count} learned {weight.shape[-2]}x{weight.shape[-1]} filters")
    fig.tight_layout()
    return fig


def plot_examples(
    images: torch.Tensor,
    targets: torch.Tensor,
    predictions: torch.Tensor,
    class_names: list[str],
    per_class: int = 4,
) -> Figure:
    """One row per class: `per_class` correctly classified images, then as many misclassified ones
    (images whose true class is the row's), titled with the predicted class.

    The images are tiles of one picture in one Axes, grey ones each stretched to its own range
    as imshow shows a single image: 80 Axes took most of a short classification run's figures."""
    n, columns = len(class_names), 2 * per_class
    height, width = images.shape[-2:]
    pitch_x, pitch_y = round(width * 1.15), round(height * 1.45)  # room for the titles above
    grey = images.shape[1] == 1
    mosaic = np.ones((n * pitch_y, columns * pitch_x) + (() if grey else (3,)))  # white
    fig, ax = plt.subplots(figsize=(columns * 1.15, n * 1.3))
    for c, name in enumerate(class_names):
        of_class = targets == c
        correct = torch.nonzero(of_class & (predictions == c)).flatten()[:per_class].tolist()
        wrong = torch.nonzero(of_class & (predictions != c)).flatten()[:per_class].tolist()
        top = (c + 1) * pitch_y - height
        ax.text(-0.1 * width, top + height / 2, name, fontsize=8, rotation=90, ha="right",
                va="center")  # fmt: skip
        for column, index in [*enumerate(correct), *enumerate(wrong, start=per_class)]:
            image = images[index].float().numpy()
            if grey:
                low, high = image.min(), image.max()
                tile = (image[0] - low) / max(high - low, 1e-6)
            else:
                tile = image.transpose(1, 2, 0) / 255
            left = column * pitch_x + (pitch_x - width) // 2
            mosaic[top : top + height, left : left + width] = tile
            title = f"pred: {class_names[predictions[index]]}"
            colour = "green" if column < per_class else "red"
            ax.text(left + width / 2, top - 0.06 * height, title, fontsize=6, color=colour,
                    ha="center", va="bottom")  # fmt: skip
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    fig.suptitle("test examples per true class: correct (left) | incorrect (right)")
    fig.tight_layout()
    return fig


def first_conv_weight(model: torch.nn.Module) -> torch.Tensor | None:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.weight
    return None


def per_class_values(record, metric: str) -> dict[str, dict[str, float | None]]:
    """A RunRecord's per-class `metric` for val and test, as `plot_per_class` takes them."""
    return {split: record.per_class(split, metric) for split in ("val", "test")}


def class_palette(info) -> tuple[tuple[int, int, int], ...]:
    """The dataset's own class colours, else distinct ones: black, then matplotlib's tab20."""
    if info.palette is not None:
        return info.palette
    colours = [(0, 0, 0)] + [
        tuple(int(255 * c) for c in matplotlib.colormaps["tab20"](i % 20)[:3])
        for i in range(info.num_classes - 1)
    ]
    return tuple(colours[: info.num_classes])


def save_run_figures(record, model, test_split, test_predictions) -> list[Path]:
    """Draw a finished run's figures into `record.run_dir / "figures"` and list them in
    `record.figures`: the record's metrics and history, the test split (on the CPU) with its
    predictions, and the model's first conv filters."""
    folder = record.run_dir / "figures"
    with phase("drawing figures", unit="figures") as advance:
        if record.task == "segmentation":
            figures = segmentation_figures(record, test_split, test_predictions.probs)
        else:
            figures = classification_figures(record, model, test_split, test_predictions.probs)
        if record.history:
            figures["curves.png"] = plot_curves(record.history)
        for filename, fig in figures.items():
            save_figure(fig, folder / filename)
            advance()
    record.figures = sorted(f"figures/{name}" for name in figures)
    return [folder / filename for filename in figures]


def classification_figures(record, model, test_split, test_probs) -> dict[str, Figure]:
    names = record.class_names
    figures = {
        "per_class_accuracy.png": plot_per_class(per_class_values(record, "accuracy"), "accuracy"),
        "per_class_ap.png": plot_per_class(per_class_values(record, "ap"), "average precision"),
        "confusion_matrix.png": plot_confusion(
            record.test["confusion_matrix"], names, "test confusion matrix"
        ),
        "examples.png": plot_examples(
            test_split.images, test_split.targets, predicted_labels(test_probs), names
        ),
    }
    weight = first_conv_weight(model)
    if weight is not None:
        figures["filters.png"] = plot_filters(weight)
    return figures


def colorize(mask: torch.Tensor, palette: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB in the dataset's palette."""
    return np.asarray(palette, dtype=np.uint8)[mask.long().numpy()]


def plot_segmentation_examples(
    images: torch.Tensor,
    predictions: torch.Tensor,
    targets: torch.Tensor,
    indices: list[int],
    labels: list[str],
    class_names: list[str],
    palette: tuple[tuple[int, int, int], ...],
) -> Figure:
    """One row per chosen image: input | prediction | ground truth, colour-coded by class, each
    row labelled (e.g. "best 1, IoU 0.81"), with a legend of the class colours."""
    rows = len(indices)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.4 * rows + 0.6), squeeze=False)
    for row, (index, label) in enumerate(zip(indices, labels, strict=True)):
        panels = (
            images[index].permute(1, 2, 0).numpy(),
            colorize(predictions[index], palette),
            colorize(targets[index], palette),
        )
        for col, (ax, panel) in enumerate(zip(axes[row], panels, strict=True)):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(("input", "prediction", "ground truth")[col], fontsize=9)
        axes[row][0].set_ylabel(label, fontsize=8)
    handles = [
        matplotlib.patches.Patch(color=np.asarray(colour) / 255, label=name)
        for name, colour in zip(class_names, palette, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def segmentation_figures(record, test_split, test_probs) -> dict[str, Figure]:
    """`examples.png` shows the test images with the highest and the lowest mean IoU."""
    from zoo.data.base import get_dataset_info

    names = record.class_names
    palette = class_palette(get_dataset_info(record.dataset))
    predictions = predicted_labels(test_probs)
    scores = per_image_mean_iou(predictions, test_split.targets, len(names))
    order = scores.nan_to_num(-1.0).argsort(descending=True).tolist()
    count = min(3, len(order) // 2) or 1
    chosen = order[:count] + order[::-1][:count][::-1]
    labels = [f"best {k + 1}" for k in range(count)] + [f"worst {count - k}" for k in range(count)]
    labels = [f"{label}, IoU {scores[i]:.2f}" for label, i in zip(labels, chosen, strict=True)]
    return {
        "per_class_ap.png": plot_per_class(per_class_values(record, "ap"), "average precision"),
        "per_class_iou.png": plot_per_class(per_class_values(record, "iou"), "IoU"),
        "confusion_matrix.png": plot_confusion(
            record.test["confusion_matrix"], names, "test confusion matrix (pixels)"
        ),
        "examples.png": plot_segmentation_examples(
            test_split.images, predictions, test_split.targets, chosen, labels, names, palette
        ),
    }


# ----------------------------------------------------------------------------- the report's charts

KEY_WIDTH = 52  # characters per line of an entry's name in a chart's key; longer names wrap


def entry_key(number: int, name: str) -> str:
    """`3  name`, the name wrapped (never cut) under itself."""
    lines = textwrap.wrap(name, KEY_WIDTH, break_on_hyphens=False) or [""]
    return f"{number:>2}  " + "\n     ".join(lines)


CAPSIZE = 3  # an error bar's caps, in points (place_labels keeps labels off them)
LABEL_SPOTS = [(distance, angle) for distance in (5, 12, 20, 30, 42, 56, 72)
               for angle in range(0, 360, 30)]  # fmt: skip  # offsets in points, nearest first


def text_box(annotation, renderer) -> Bbox:
    """An annotation's text in pixels, without its leader line."""
    annotation.update_positions(renderer)
    return matplotlib.text.Text.get_window_extent(annotation, renderer)


def place_labels(
    ax, xs, ys, labels: list[str], fontsize: float = 8, spreads: list | None = None
) -> list:
    """Write each label beside its point at the first of LABEL_SPOTS where it overlaps no point,
    no error bar (`spreads`: each point's +- in data units, or None) and no label placed before
    it and stays inside the axes (what adjustText does, greedily), with a leader line when it had
    to move away. Call it once the axes' layout is final: the search is in pixels."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radius = 4 * ax.figure.dpi / 72  # a marker of size 40, in pixels
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    taken = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in centres]
    cap = CAPSIZE * ax.figure.dpi / 72  # an error bar's caps, in pixels
    for x, y, spread in zip(xs, ys, spreads or [None] * len(xs), strict=True):
        if spread:
            (x0, y0), (x1, y1) = ax.transData.transform([(x, y - spread), (x, y + spread)])
            taken.append(Bbox.from_extents(x0 - cap, y0 - 1, x1 + cap, y1 + 1))
    texts = []
    for x, y, label in zip(xs, ys, labels, strict=True):
        for distance, angle in LABEL_SPOTS:
            dx, dy = np.cos(np.radians(angle)), np.sin(np.radians(angle))
            text = ax.annotate(
                label, (x, y), xytext=(distance * dx, distance * dy), textcoords="offset points",
                fontsize=fontsize, ha="left" if dx > 0.3 else "right" if dx < -0.3 else "center",
                va="bottom" if dy > 0.3 else "top" if dy < -0.3 else "center",
                arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6) if distance > 12 else None,
            )  # fmt: skip
            box = text_box(text, renderer).padded(1)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                break
            text.remove()
        else:  # no free spot within reach: on the point's right, overlapping
            text = ax.annotate(label, (x, y), xytext=(5, 0), textcoords="offset points",
                               fontsize=fontsize, va="center")  # fmt: skip
            box = text_box(text, renderer)
        taken.append(box)
        texts.append(text)
    return texts


def speed_text(value: float) -> str:
    """A tick's images/s: 500, 2k, 20k, 1.5M (short, so that neighbours never touch)."""
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def plot_score_vs_speed(
    numbers: list[int],
    names: list[str],
    speeds: list[float],
    scores: list[float],
    front: list[int],
    *,
    xlabel: str,
    ylabel: str,
    spreads: list[float | None] | None = None,
) -> Figure:
    """Score against speed (log scale), one point per entry labelled with its number (as in
    the report's table), the Pareto `front` (the
    indices of the points no other is both faster and better than, by speed) dashed, and a key
    of the numbers' names beside the axes: numbers stay legible where 19 names would collide.
    An entry with a `spreads` value (the std over its seeds) gets a +- that long error bar."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    ax.scatter(speeds, scores, s=40, color="C0", zorder=3)
    spreads = spreads or [None] * len(scores)
    bars = [i for i, spread in enumerate(spreads) if spread]
    if bars:
        ax.errorbar([speeds[i] for i in bars], [scores[i] for i in bars],
                    yerr=[spreads[i] for i in bars], fmt="none", ecolor="C0", elinewidth=1,
                    capsize=CAPSIZE, zorder=3)  # fmt: skip
    ax.plot([speeds[i] for i in front], [scores[i] for i in front], "--", color="C3", zorder=2)
    ax.set_xscale("log")
    ax.margins(x=0.12, y=0.12)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: speed_text(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel=f"{xlabel}, log scale", ylabel=ylabel, title=f"{ylabel} vs speed")
    ax.grid(alpha=0.3, which="both")
    handles = [matplotlib.lines.Line2D([], [], ls="--", color="C3")]
    keys = ["Pareto front"]
    if bars:
        handles.append(matplotlib.lines.Line2D([], [], ls="none", marker="|", color="C0"))
        keys.append("± std over the seeds (n > 1)")
    handles += [matplotlib.lines.Line2D([], [], ls="none") for _ in names]
    keys += [entry_key(n, name) for n, name in zip(numbers, names, strict=True)]
    ax.legend(handles, keys, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
              handlelength=1.5, frameon=False)  # fmt: skip
    fig.tight_layout()
    place_labels(ax, speeds, scores, [str(number) for number in numbers], spreads=spreads)
    return fig


def plot_class_heatmap(
    names: list[str], class_names: list[str], values: np.ndarray, title: str
) -> Figure:
    """Entries x classes, each cell annotated with its score (NaN: blank), rows numbered as in
    the scatter's key; the colour scale starts at the lowest score rounded down to 0.05."""
    keys = [entry_key(i, name) for i, name in enumerate(names, 1)]
    lines = sum(key.count("\n") + 1 for key in keys)
    fig, ax = plt.subplots(figsize=(4.5 + 0.62 * len(class_names), 1.8 + 0.16 * lines))
    finite = np.isfinite(values)
    low = max(0.0, np.floor(20 * np.nanmin(values)) / 20) if finite.any() else 0.0
    image = ax.imshow(values, cmap="viridis", vmin=low, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            colour = "black" if value > low + 0.6 * (1 - low) else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(class_names)), class_names, rotation=40, ha="right",
                  rotation_mode="anchor")  # fmt: skip
    ax.set_yticks(range(len(names)), keys, fontsize=7, multialignment="left")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    return fig
