"""`zoo explain`: what a trained network looks at, and what its units respond to.

- Attribution maps with Captum: vanilla saliency, integrated gradients and Grad-CAM, for
  classification (the predicted or a chosen class) and segmentation (one class summed over a
  region: the pixels predicted as that class), on given images or on the test examples the
  run's figures show.
- Activation maximisation (Yosinski et al., "Understanding Neural Networks Through Deep
  Visualization", ICML 2015): the input that maximises each class logit and each channel of a
  conv layer, found by gradient ascent from noise with jitter, Gaussian blur and L2 decay, the
  regularisers that keep small images readable.
- The most confused pairs of classes from the test confusion matrix, with examples of each
  direction, and the classes never confused with each other.

Figures go to RUN_DIR/figures/explain/ and are listed in the run record.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoo.data.base import DatasetInfo
from zoo.errors import ZooError
from zoo.progress import phase

METHODS = ("saliency", "integrated-gradients", "gradcam", "activation-max", "confused")
ATTRIBUTIONS = ("saliency", "integrated-gradients", "gradcam")
EXPLAIN_FOLDER = "figures/explain"


@dataclass
class Explained:
    figures: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one sentence per input that failed
    lines: list[str] = field(default_factory=list)  # what to print (the confused pairs)


# ----------------------------------------------------------------------------- choosing things


def conv_layers(model: torch.nn.Module) -> list[str]:
    """Names of the model's conv layers, in order (the candidates for Grad-CAM and channels)."""
    return [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]


def spatial_conv_layers(model: torch.nn.Module, convs: list[str], sample: torch.Tensor):
    """Those of `convs` whose output for `sample` has more than one pixel. A conv after global
    pooling (timm MobileNetV3's conv_head, squeeze-excitation convs) has a 1x1 output, and
    Grad-CAM on it paints one flat value over the whole image."""
    modules = dict(model.named_modules())
    pixels = {}

    def hook_for(name: str):
        def hook(module, inputs, output) -> None:  # returns None: the output is left as it is
            pixels.setdefault(name, output[0, 0].numel())

        return hook

    hooks = [modules[name].register_forward_hook(hook_for(name)) for name in convs]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    return [name for name in convs if pixels.get(name, 0) > 1]


def find_layer(
    model: torch.nn.Module,
    name: str | None,
    *,
    default_last: bool = True,
    sample: torch.Tensor | None = None,
):
    """(name, module) of `name`, or of the last (or middle) conv layer, among those with a
    spatial output for `sample` when one is given; ZooError listing the valid names."""
    convs = conv_layers(model)
    if not convs:
        raise ZooError("This model has no conv layer for Grad-CAM or channel images.")
    if name is None:
        spatial = spatial_conv_layers(model, convs, sample) if sample is not None else []
        candidates = spatial or convs
        name = candidates[-1] if default_last else candidates[len(candidates) // 2]
    modules = dict(model.named_modules())
    if name not in modules:
        import difflib

        close = difflib.get_close_matches(name, convs, n=5, cutoff=0.4)
        shown = close or (convs if len(convs) <= 12 else convs[:6] + ["..."] + convs[-3:])
        raise ZooError(
            f"The model has no layer {name!r}; conv layers are e.g. {', '.join(shown)} "
            "(all modules: `zoo summary MODEL --depth 9`)."
        )
    return name, modules[name]


def resolve_target(target: str | None, info: DatasetInfo) -> int | None:
    """A class by name or index; ZooError listing the classes when it is not one of them."""
    if target is None:
        return None
    names = list(info.class_names)
    if target in names:
        return names.index(target)
    if target.isdigit() and int(target) < len(names):
        return int(target)
    raise ZooError(
        f"{target!r} is not a class of {info.name}; use a name or index 0-{len(names) - 1}: "
        f"{', '.join(names)}."
    )


class RegionLogit(torch.nn.Module):
    """A segmentation model as a classifier of one number per image: the sum of class `c`'s
    logits over a region (a (B, H, W) mask), so attribution methods explain "why these pixels
    are c". Output (B, num_classes) with the class's column filled, so targets work as usual."""

    def __init__(self, model: torch.nn.Module, mask: torch.Tensor):
        super().__init__()
        self.model, self.mask = model, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)  # (B, C, H, W)
        # Integrated gradients feed whole copies of the batch, one per step along the path.
        mask = self.mask.repeat(len(x) // len(self.mask), 1, 1)
        mask = mask.to(logits.dtype).unsqueeze(1)
        return (logits * mask).sum((2, 3)) / mask.sum((2, 3)).clamp(min=1)


# ----------------------------------------------------------------------------- attributions


def attributions(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: list[int],
    layer: torch.nn.Module,
    methods: tuple[str, ...],
    *,
    steps: int = 32,
) -> dict[str, torch.Tensor]:
    """(N, H, W) maps per method, each image's map for its target class, on the CPU."""
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

    target = torch.tensor(targets, device=images.device)
    images = images.detach().clone().requires_grad_(True)
    maps = {}
    with torch.enable_grad():
        if "saliency" in methods:
            with phase(f"saliency of {len(images)} images"):
                found = Saliency(model).attribute(images, target=target, abs=True)
                maps["saliency"] = found.sum(1)
        if "integrated-gradients" in methods:
            # The baseline is the all-zero normalised image: the dataset's mean colour.
            with phase(f"integrated gradients of {len(images)} images ({steps} steps)"):
                found = IntegratedGradients(model).attribute(
                    images, baselines=torch.zeros_like(images), target=target, n_steps=steps,
                    internal_batch_size=len(images),  # a step of the path at a time: less memory
                )  # fmt: skip
                maps["integrated-gradients"] = found.abs().sum(1)
        if "gradcam" in methods:
            with phase(f"Grad-CAM of {len(images)} images"):
                found = LayerGradCam(model, layer).attribute(
                    images, target=target, relu_attributions=True
                )
                found = LayerAttribution.interpolate(found, images.shape[-2:], "bilinear")
                maps["gradcam"] = found[:, 0]
    return {name: value.detach().float().cpu() for name, value in maps.items()}


def normalized(heat: torch.Tensor) -> np.ndarray:
    """A map scaled to [0, 1] by its 99th percentile (one hot pixel does not wash it out)."""
    heat = heat.numpy()
    top = np.percentile(heat, 99) if heat.max() > 0 else 1.0
    return np.clip(heat / (top or 1.0), 0, 1)


def display(image: torch.Tensor, info: DatasetInfo) -> np.ndarray:
    """A normalised (C, H, W) input back to an (H, W[, 3]) picture in [0, 1]."""
    mean = torch.tensor(info.mean).view(-1, 1, 1)
    std = torch.tensor(info.std).view(-1, 1, 1)
    picture = (image.float().cpu() * std + mean).clamp(0, 1)
    return picture[0].numpy() if picture.shape[0] == 1 else picture.permute(1, 2, 0).numpy()


def plot_attributions(images, maps, labels, info, methods, regions=None, per_row: int = 2):
    """`per_row` examples side by side, each as its input and each method's map over it;
    `regions` (segmentation: the explained pixels) are outlined in cyan on the input."""
    import matplotlib.pyplot as plt

    group = 1 + len(methods)
    rows = math.ceil(len(images) / per_row)
    columns = group * per_row
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.7 * columns, 2.0 * rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for index in range(len(images)):
        row, first = index // per_row, (index % per_row) * group
        picture = display(images[index], info)
        grey = picture if picture.ndim == 2 else picture.mean(-1)
        axes[row][first].imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        axes[row][first].set_title(labels[index], fontsize=7)
        if regions is not None and 0 < regions[index].float().mean() < 1:
            outline = regions[index].float().numpy()
            axes[row][first].contour(outline, levels=[0.5], colors="cyan", linewidths=0.7)
        for j, method in enumerate(methods, start=1):
            ax = axes[row][first + j]
            ax.imshow(grey, cmap="gray")
            ax.imshow(normalized(maps[method][index]), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            ax.set_title(method, fontsize=7)
    fig.suptitle("where the evidence for the class is (brighter: more), by method", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    return fig


# ----------------------------------------------------------------------------- activation max


def valid_range(info: DatasetInfo) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values a real image can take, per channel: -mean/std to (1 - mean)/std."""
    mean, std = torch.tensor(info.mean), torch.tensor(info.std)
    return ((0 - mean) / std).view(1, -1, 1, 1), ((1 - mean) / std).view(1, -1, 1, 1)


def maximize(
    objective: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple[int, ...],
    info: DatasetInfo,
    *,
    steps: int = 200,
    lr: float = 0.05,
    jitter: int = 2,
    blur_every: int = 4,
    l2: float = 1e-3,
    seed: int = 0,
    device: torch.device | None = None,
    description: str = "activation maximisation",
) -> torch.Tensor:
    """Gradient ascent on the input from low noise: `objective(x)` -> (B,) values to raise
    (`description` names it in the progress).

    Regularisers (Yosinski et al. 2015): a random jitter (roll) of up to `jitter` pixels each
    step, a Gaussian blur every `blur_every` steps, L2 decay, and clipping to the range of real
    images, so the result stays a picture rather than adversarial noise.
    """
    from torchvision.transforms.functional import gaussian_blur

    generator = torch.Generator().manual_seed(seed)
    device = device or torch.device("cpu")
    low, high = (bound.to(device) for bound in valid_range(info))
    x = (0.1 * torch.randn(shape, generator=generator)).to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    with torch.enable_grad(), phase(description, total=steps, unit="steps") as advance:
        for step in range(steps):
            advance()
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=generator))
            value = objective(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))
            loss = -value.sum() + l2 * x.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                if blur_every and step % blur_every == blur_every - 1 and step < steps - 1:
                    x.copy_(gaussian_blur(x, [3, 3], [0.5, 0.5]))
                x.copy_(torch.maximum(torch.minimum(x, high), low))
    return x.detach()


def class_objective(model: torch.nn.Module, classes: list[int], segmentation: bool):
    """Each image's own class logit (a segmentation model: the class's mean logit)."""
    index = torch.tensor(classes)

    def objective(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        if segmentation:
            logits = logits.mean((2, 3))
        return logits.gather(1, index.to(logits.device).view(-1, 1))[:, 0]

    return objective


def channel_objective(model: torch.nn.Module, layer: torch.nn.Module, channels: list[int]):
    """Each image's own channel of `layer`, averaged over its positions."""
    index = torch.tensor(channels)
    captured = {}

    def hook(module, inputs, output):
        captured["value"] = output

    def objective(x: torch.Tensor) -> torch.Tensor:
        handle = layer.register_forward_hook(hook)
        try:
            model(x)
        finally:
            handle.remove()
        activation = captured["value"].mean((2, 3))
        return activation.gather(1, index.to(activation.device).view(-1, 1))[:, 0]

    return objective


def plot_grid(images: torch.Tensor, titles: list[str], info: DatasetInfo, suptitle: str):
    import matplotlib.pyplot as plt

    count = len(images)
    columns = min(count, 8 if count > 10 else 5)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.7 * columns, 1.9 * rows + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        picture = stretched(display(image, info))
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
        ax.set_title(title, fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def stretched(picture: np.ndarray) -> np.ndarray:
    """Contrast stretched to the 1st-99th percentiles, so faint patterns are visible."""
    low, high = np.percentile(picture, (1, 99))
    return np.clip((picture - low) / max(high - low, 1e-6), 0, 1)


# ----------------------------------------------------------------------------- confusion


def confused_pairs(confusion: list[list[int]], names: list[str], top: int = 5):
    """The `top` pairs of classes mixed up most often (both directions together), each as
    (a -> b count, a, b, b -> a count) with a -> b the larger; and the pairs of classes never
    mistaken for each other in either direction."""
    matrix = np.asarray(confusion)
    n = len(names)
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            a, b = (i, j) if matrix[i, j] >= matrix[j, i] else (j, i)
            if matrix[a, b]:
                pairs.append((int(matrix[a, b]), a, b, int(matrix[b, a])))
    pairs.sort(key=lambda pair: pair[0] + pair[3], reverse=True)
    never = [
        (names[i], names[j])
        for i in range(n)
        for j in range(i + 1, n)
        if matrix[i, j] == matrix[j, i] == 0
    ]
    return pairs[:top], never


def plot_confused(pairs, never, info, examples) -> object:
    """One row per confused pair: examples of true -> predicted on the left, of the reverse
    direction on the right. `examples[(a, b)]` are (N, H, W[, 3]) pictures."""
    import matplotlib.pyplot as plt

    per_side = 4
    rows = max(len(pairs), 1)
    fig, axes = plt.subplots(
        rows, 2 * per_side, figsize=(1.6 * 2 * per_side, 1.8 * rows + 1.0), squeeze=False
    )
    names = info.class_names
    for ax in axes.flat:
        ax.axis("off")
    for row, (count, a, b, back) in enumerate(pairs):
        for side, (i, j) in enumerate(((a, b), (b, a))):
            for k, picture in enumerate(examples.get((i, j), [])[:per_side]):
                ax = axes[row][side * per_side + k]
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None)
                if k == 0:
                    ax.set_title(f"true {names[i]}\n→ {names[j]}", fontsize=7, loc="left")
        unit = "pixels" if info.task == "segmentation" else "images"
        axes[row][0].text(
            -0.15, 0.5, f"{count:,} | {back:,} {unit}", transform=axes[row][0].transAxes,
            rotation=90,
            va="center", ha="right", fontsize=8,
        )  # fmt: skip
    never_text = ", ".join(f"{x}/{y}" for x, y in never[:12]) + (" ..." if len(never) > 12 else "")
    fig.suptitle(
        "most confused pairs on the test split (left: true → predicted, right: the reverse)"
        + (f"\nnever confused either way: {never_text}" if never else ""),
        fontsize=9,
    )
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the command


def to_batch(paths: list[Path], info: DatasetInfo, device: torch.device):
    """Readable image files as one normalised batch at the dataset's size; one error sentence
    per file that cannot be read (the others are still used)."""
    from zoo.data.images import read_image
    from zoo.predict import to_input

    tensors, names, errors = [], [], []
    for path in paths:
        try:
            image = read_image(Path(path), "RGB" if info.in_chans == 3 else "L")
        except ZooError as error:
            errors.append(f"{str(error).rstrip('.')}; it was left out.")
            continue
        tensors.append(to_input(image, info, device))
        names.append(Path(path).name)
    return (torch.cat(tensors) if tensors else None), names, errors


def test_examples(model, record, info: DatasetInfo, device, data_dir, region_class: int):
    """The test examples to explain, with labels, predictions for them, the test split and its
    predictions. Classification: per class the first correctly and the first wrongly classified
    image (as examples.png picks them). Segmentation: the 3 images where the most pixels are
    predicted as `region_class`, and the 3 where most of its true pixels are missed."""
    from zoo.data.base import run_data_options
    from zoo.data.splits import load_dataset, normalize
    from zoo.evaluate import predict
    from zoo.runtime import resolve_precision

    config = record.config
    data = load_dataset(
        config.dataset, data_dir or config.data_dir, val_fraction=config.val_fraction,
        split_seed=config.split_seed, skip_bad=config.skip_bad_samples,
        options=run_data_options(config),
    )  # fmt: skip
    precision = resolve_precision(device, False, "float16")
    found = predict(
        model, data.test, info, name="test", device=device, precision=precision,
        batch_size=config.eval_batch_size, channels_last=False,
    )  # fmt: skip
    predictions = found.probs.argmax(1)
    targets = data.test.targets.long()
    chosen, labels = [], []
    if info.task == "segmentation":
        name = info.class_names[region_class]
        predicted = (predictions == region_class).flatten(1).sum(1)
        missed = ((targets == region_class) & (predictions != region_class)).flatten(1).sum(1)
        for order, what in ((predicted, "predicted"), (missed, "missed")):
            for i in order.argsort(descending=True)[:3].tolist():
                if order[i] > 0 and i not in chosen:
                    chosen.append(i)
                    labels.append(f"test {i}: {int(order[i]):,} {name}\npixels {what}")
    else:
        for c, name in enumerate(info.class_names):
            of_class = targets == c
            for hits in (of_class & (predictions == c), of_class & (predictions != c)):
                index = torch.nonzero(hits).flatten()[:1].tolist()
                chosen += index
                labels += [f"{name}\n→ {info.class_names[predictions[i]]}" for i in index]
    images = normalize(data.test.images[chosen].to(device), info)
    return images, labels, predictions[chosen], data.test, predictions


def explain_run(
    run_dir: str | Path,
    image_paths: list[Path] = (),
    *,
    method: str = "all",
    layer: str | None = None,
    target: str | None = None,
    out: Path | None = None,
    checkpoint: str | None = None,
    device: torch.device | None = None,
    data_dir: str | None = None,
    steps: int = 200,
) -> Explained:
    """Every figure `method` asks for, into RUN_DIR/figures/explain/ (or `out`). `run_dir` may
    also name published weights (`unet-small`): their figures go to explain/<model>/."""
    from zoo import results
    from zoo.plots import save_figure
    from zoo.weights import folder_name, load_source

    if method not in ("all", *METHODS):
        raise ZooError(f"Unknown --method {method!r}; choose all or one of {', '.join(METHODS)}.")
    methods = METHODS if method == "all" else (method,)
    device = device or torch.device("cpu")
    with phase("loading the model"):
        loaded = load_source(run_dir, checkpoint=checkpoint, device=device, channels_last=False)
    model, info, record = loaded.model, loaded.info, loaded.record
    model.requires_grad_(False)  # gradients flow to the input only
    target_index = resolve_target(target, info)
    segmentation = info.task == "segmentation"
    if layer is not None:
        find_layer(model, layer)  # an unknown name is refused before any work
    if out is not None:
        folder = Path(out)
    elif record.run_dir is not None:
        folder = record.run_dir / EXPLAIN_FOLDER
    else:  # published weights have no run folder
        folder = Path("explain") / folder_name(record.model)
    done = Explained()

    def save(fig, name: str) -> None:
        with phase(f"saving {name}"):
            save_figure(fig, folder / name)
        done.figures.append(folder / name)

    need_examples = any(m in methods for m in (*ATTRIBUTIONS, "confused"))
    region_class = target_index if target_index is not None else weakest_class(record, info)
    test_split = test_predictions = images = None
    if need_examples and not image_paths:
        images, labels, predicted, test_split, test_predictions = test_examples(
            model, record, info, device, data_dir, region_class
        )
    elif need_examples:
        images, names, done.errors = to_batch(list(image_paths), info, device)
        if images is not None:
            with torch.no_grad():
                predicted = model(images).argmax(1).cpu()
            labels = (
                names
                if segmentation
                else [
                    f"{name}\n→ {info.class_names[p]}"
                    for name, p in zip(names, predicted, strict=True)
                ]
            )

    # Classifiers: the last conv layer (Grad-CAM's usual choice); segmentation nets end in a
    # 1x1 or 3x3 head that is nearly the output itself, so their middle conv layer. Either among
    # the layers whose output keeps more than one pixel for the images explained.
    sample = (
        images[:1]
        if images is not None
        else torch.zeros(1, info.in_chans, *info.image_size, device=device)
    )
    layer_name, layer_module = find_layer(
        model, layer, default_last=not segmentation, sample=sample
    )
    chosen = [m for m in ATTRIBUTIONS if m in methods]
    suffix = "" if len(chosen) == len(ATTRIBUTIONS) else "_" + "_".join(chosen)
    if chosen and images is not None:
        if segmentation:
            cls = region_class
            region = predicted == cls
            empty = region.flatten(1).sum(1) == 0
            region[empty] = True  # no pixel predicted as the class: explain the whole image
            labels = [
                f"{label}\n(none predicted: whole image)" if none else label
                for label, none in zip(labels, empty.tolist(), strict=True)
            ]
            explained = RegionLogit(model, region.to(device))
            maps = attributions(
                explained, images, [cls] * len(images), layer_module, chosen, steps=32
            )
            save(
                plot_attributions(images, maps, labels, info, chosen, regions=region.cpu()),
                f"attributions{suffix}_{info.class_names[cls]}.png",
            )
        else:
            classes = [target_index if target_index is not None else int(p) for p in predicted]
            maps = attributions(model, images, classes, layer_module, chosen, steps=32)
            save(plot_attributions(images, maps, labels, info, chosen), f"attributions{suffix}.png")

    if "activation-max" in methods:
        side = info.image_size if not segmentation else (96, 96)
        classes = list(range(info.num_classes)) if target_index is None else [target_index]
        shape = (len(classes), info.in_chans, *side)
        found = maximize(
            class_objective(model, classes, segmentation), shape, info, steps=steps, device=device,
            description=f"activation maximisation of {len(classes)} classes",
        )  # fmt: skip
        titles = [info.class_names[c] for c in classes]
        save(
            plot_grid(found.cpu(), titles, info, "inputs that maximise each class"),
            "activation_max_classes.png",
        )
        channels = list(range(min(16, layer_module.out_channels)))
        found = maximize(
            channel_objective(model, layer_module, channels), (len(channels), info.in_chans, *side),
            info, steps=steps, device=device, seed=1,
            description=f"activation maximisation of {len(channels)} channels of {layer_name}",
        )  # fmt: skip
        titles = [f"channel {c}" for c in channels]  # the layer is in the title above
        save(
            plot_grid(found.cpu(), titles, info, f"inputs that maximise channels of {layer_name}"),
            "activation_max_channels.png",
        )

    if "confused" in methods and record.test:
        pairs, never = confused_pairs(record.test["confusion_matrix"], list(info.class_names))
        done.lines += [
            f"{count:>8,} {'pixels' if segmentation else 'images'} true {info.class_names[a]} "
            f"predicted {info.class_names[b]}, {back:,} the other way"
            for count, a, b, back in pairs
        ]
        done.lines.append(
            "never confused either way: "
            + (", ".join(f"{x}/{y}" for x, y in never) if never else "none")
        )
        if test_split is not None:
            examples = confusion_examples(pairs, test_split, test_predictions, info)
            save(plot_confused(pairs, never, info, examples), "confused_pairs.png")

    if out is None and done.figures and record.run_dir:  # a run's record lists its figures
        listed = [p.relative_to(record.run_dir).as_posix() for p in done.figures]
        # A record from before the figure list: its figures are the PNGs under figures/.
        earlier = record.figures or [
            p.relative_to(record.run_dir).as_posix()
            for p in (record.run_dir / results.FIGURES).rglob("*.png")
        ]
        record.figures = sorted(set(earlier) | set(listed))
        results.write_metrics(record)
    return done


def weakest_class(record, info: DatasetInfo) -> int:
    """The class with the lowest test AP (pillar on Mini Facade): the one worth explaining."""
    per_class = record.per_class("test", "ap")
    scored = [
        (v, i) for i, name in enumerate(info.class_names) if (v := per_class.get(name)) is not None
    ]
    return min(scored)[1] if scored else 0


def confusion_examples(pairs, test_split, predictions, info) -> dict:
    """Pictures for each direction of each pair: images of true a predicted b (classification),
    or the photos with the most a -> b pixels, those pixels marked in red (segmentation)."""
    targets = test_split.targets.long()
    images = test_split.images
    examples = {}
    for _, a, b, _ in pairs:
        for i, j in ((a, b), (b, a)):
            if info.task == "segmentation":
                wrong = (targets == i) & (predictions == j)
                counts = wrong.flatten(1).sum(1)
                order = counts.argsort(descending=True)[:4].tolist()
                pictures = []
                for k in order:
                    if counts[k] == 0:
                        continue
                    photo = images[k].permute(1, 2, 0).float().numpy() / 255
                    photo[wrong[k].numpy()] = 0.5 * photo[wrong[k].numpy()] + 0.5 * np.array(
                        [1.0, 0, 0]
                    )
                    pictures.append(photo)
            else:
                index = torch.nonzero((targets == i) & (predictions == j)).flatten()[:4].tolist()
                pictures = [images[k, 0].float().numpy() / 255 for k in index]
            examples[(i, j)] = pictures
    return examples
