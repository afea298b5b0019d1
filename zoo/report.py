"""The self-contained HTML report of `zoo compare --format html`: one file that opens offline.

Tables from zoo/compare.py's rows, charts drawn here with matplotlib (an accuracy-versus-
throughput scatter per dataset with its Pareto front, a models x classes per-class heatmap),
every run's figures (zoo explain's included), the sweeps' Optuna figures, and the bench rows;
all images embedded as base64 PNG, the page rendered by the jinja2 template beside this module.
"""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime, timezone
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from zoo import compare as comparing  # noqa: E402
from zoo.results import METRIC_LABELS  # noqa: E402

TEMPLATE = "report.html.j2"
MAX_IMAGE_WIDTH = 720  # px: run figures are scaled down to this and to 256 colours, to keep
# the file small (a report of a dozen runs stays a few MB)


def figure_data(fig: Figure) -> str:
    """A matplotlib figure as a data: URI (PNG), the figure closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_data(path: Path) -> str | None:
    """A PNG file as a data: URI, scaled down to MAX_IMAGE_WIDTH; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if image.width > MAX_IMAGE_WIDTH:
                height = round(image.height * MAX_IMAGE_WIDTH / image.width)
                image = image.resize((MAX_IMAGE_WIDTH, height), Image.LANCZOS)
            buffer = io.BytesIO()
            image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (higher is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox >= x and oy >= y) and (ox > x or oy > y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def throughput(row: comparing.Row) -> tuple[float | None, str]:
    """Bench inference images/s when measured, else the run's training images/s."""
    infer = row.bench.get("infer") or {}
    if infer.get("images_per_second"):
        return infer["images_per_second"], "inference images/s (zoo bench)"
    return row.train_images_per_second, "training images/s (the runs' median)"


def plot_scatter(rows: list[comparing.Row]) -> Figure | None:
    """Headline test score against throughput, one point per model and recipe, the Pareto
    front drawn through the points no other beats on both."""
    kinds = {throughput(row)[1] for row in rows if throughput(row)[0]}
    label = (
        "inference images/s (zoo bench)"
        if len(kinds) == 1 and "zoo bench" in next(iter(kinds))
        else "training images/s (the runs' median)"
    )
    points, names = [], []
    for row in rows:
        score = row.mean("test", row.headline)
        speed = (
            (row.bench.get("infer") or {}).get("images_per_second")
            if "zoo bench" in label
            else row.train_images_per_second
        )
        if score is not None and speed:
            points.append((speed, score))
            names.append(row.model if row.recipe == "defaults" else f"{row.model} ({row.recipe})")
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    xs, ys = zip(*points, strict=True)
    ax.scatter(xs, ys, s=40, color="C0", zorder=3)
    front = pareto_front(points)
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="C3", zorder=2,
            label="Pareto front (faster and better)")  # fmt: skip
    for i, name in enumerate(names):
        short = name if len(name) <= 38 else name[:36] + "…"
        ax.annotate(short, (xs[i], ys[i]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    metric = METRIC_LABELS[rows[0].headline]
    ax.set(xlabel=f"{label}, log scale", ylabel=f"test {metric}", title=f"test {metric} vs speed")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def plot_heatmap(rows: list[comparing.Row], metric: str) -> Figure:
    """Models x classes, the mean test per-class `metric`, annotated."""
    classes = rows[0].class_names
    labels = [
        row.model if row.recipe == "defaults" else f"{row.model} ({row.recipe})" for row in rows
    ]
    values = np.array(
        [
            [np.nan if v is None else v for v in row.per_class("test", metric).values()]
            for row in rows
        ]
    )
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(classes), 1.6 + 0.42 * len(rows)))
    low = max(0.0, math.floor(20 * np.nanmin(values)) / 20) if np.isfinite(values).any() else 0
    image = ax.imshow(values, cmap="viridis", vmin=low, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(classes)):
            if not math.isnan(values[i, j]):
                colour = "black" if values[i, j] > low + 0.6 * (1 - low) else "white"
                ax.text(
                    j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour
                )
    ax.set_xticks(range(len(classes)), classes, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [lab if len(lab) <= 45 else lab[:43] + "…" for lab in labels])
    ax.set_title(f"test {METRIC_LABELS[metric]} per class")
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def run_figures(record) -> list[dict]:
    """The figures a record lists (records from before the list: the PNGs in figures/)."""
    listed = record.figures or sorted(
        p.relative_to(record.run_dir).as_posix()
        for p in (record.run_dir / "figures").rglob("*.png")
    )
    figures = []
    for relative in listed:
        data = image_data(record.run_dir / relative)
        if data is not None:
            figures.append({"name": relative.removeprefix("figures/"), "data": data})
    return figures


def sweep_figures(folder: Path) -> list[dict]:
    """The Optuna figures `zoo sweep show` wrote under folder/sweeps/<study>/figures/."""
    studies = []
    for study in sorted((folder / "sweeps").glob("*/figures")):
        images = [
            {"name": png.name, "data": data}
            for png in sorted(study.glob("*.png"))
            if (data := image_data(png)) is not None
        ]
        if images:
            studies.append({"name": study.parent.name, "figures": images})
    return studies


def render(comparison: comparing.Comparison) -> str:
    """The report's HTML."""
    datasets = []
    for dataset, rows in comparison.rows.items():
        task = rows[0].task
        columns, body = comparing.main_table(rows)
        scatter = plot_scatter(rows)
        datasets.append(
            {
                "name": dataset,
                "task": task,
                "columns": columns,
                "rows": body,
                "scatter": figure_data(scatter) if scatter else None,
                "heatmap": figure_data(plot_heatmap(rows, "ap")),
                "per_class": [
                    {
                        "metric": METRIC_LABELS[metric],
                        "classes": rows[0].class_names,
                        "rows": [
                            (row.model, row.recipe, list(row.per_class("test", metric).values()))
                            for row in rows
                        ],
                    }
                    for metric in comparing.per_class_metrics(task)
                ],
                "runs": [
                    {
                        "title": f"{row.model} — {row.recipe} — seed {run.config.seed}",
                        "path": str(run.run_dir),
                        "figures": run_figures(run),
                    }
                    for row in rows
                    for run in row.runs
                ],
            }
        )
    return template().render(
        title=f"zoo report: {comparison.folder}",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        datasets=datasets,
        bench=bench_tables(comparison.bench),
        sweeps=sweep_figures(comparison.folder),
        skipped=comparison.skipped,
    )


def template():
    import jinja2

    loader = jinja2.FileSystemLoader(Path(__file__).parent / "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["score"] = lambda v: "" if v is None else f"{v:.3f}"
    return env.get_template(TEMPLATE)


BENCH_SHOWN = (
    ("model", "model"), ("dataset", "dataset"), ("batch_size", "batch"),
    ("images_per_second", "images/s"), ("latency_ms_median", "latency ms"),
    ("latency_ms_iqr", "IQR ms"), ("peak_memory_mb", "peak MB"),
    ("flops_per_image", "GFLOPs/img"), ("mfu", "MFU"), ("error", "error"),
)  # fmt: skip


def bench_tables(rows: list[dict]) -> list[dict]:
    """The bench rows, one table per device, precision, memory format and mode."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (
            row["device_name"],
            row["device"],
            row["precision"],
            row["memory_format"],
            row["mode"],
        )
        groups.setdefault(key, []).append(row)
    tables = []
    for (name, device, precision, layout, mode), members in sorted(groups.items()):
        body = []
        for row in sorted(members, key=lambda r: -(r["images_per_second"] or 0)):
            cells = []
            for key, _ in BENCH_SHOWN:
                value = row.get(key)
                if key == "flops_per_image" and value:
                    value = f"{value / 1e9:.3f}"
                elif key == "mfu" and value is not None:
                    value = f"{100 * value:.1f}%"
                elif isinstance(value, float):
                    value = f"{value:,.1f}"
                cells.append("" if value is None else str(value))
            body.append(cells)
        title = f"{mode}, {precision}, {layout}, {name} ({device})"
        tables.append({"title": title, "columns": [c for _, c in BENCH_SHOWN], "rows": body})
    return tables
