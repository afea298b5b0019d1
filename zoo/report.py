"""The self-contained HTML report of `zoo compare --format html`: one file that opens offline.

One tab per dataset (the one with the most runs open first): the main table, a numbered
score-versus-throughput scatter with its Pareto front and a per-class heatmap (zoo/plots.py), the
per-class tables, and per entry its runs' files and figures as small embedded thumbnails that link
to the full PNGs in the run folders; then the bench rows and the sweeps' Optuna figures. Tables
sort by a click on their header (a few lines of inline JavaScript); the page is rendered by the
jinja2 template beside this module.
"""

from __future__ import annotations

import base64
import io
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from zoo import compare as comparing
from zoo import plots
from zoo.results import METRIC_LABELS

TEMPLATE = "report.html.j2"
THUMBNAIL_SIZE = (180, 240)  # px, the most a run figure's thumbnail takes, in 16 colours: a
# report of 19 entries on each of three datasets stays under 3 MB (issue 20)
THUMBNAIL_COLOURS = 16


def png_data(image, colours: int = 256) -> str:
    """A PIL image as a data: URI, a PNG in `colours` colours."""
    buffer = io.BytesIO()
    image.convert("RGB").quantize(colours).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure_data(fig: Figure) -> str:
    """A matplotlib figure as a data: URI (PNG), the figure closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plots.plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail(path: Path) -> str | None:
    """A PNG file as a THUMBNAIL_SIZE data: URI; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.thumbnail(THUMBNAIL_SIZE, Image.LANCZOS)
            return png_data(image, THUMBNAIL_COLOURS)
    except OSError:
        return None


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


def entry_name(row: comparing.Row) -> str:
    return row.model if row.recipe == "defaults" else f"{row.model} ({row.recipe})"


def plot_scatter(rows: list[comparing.Row]) -> Figure | None:
    """Headline test score against throughput, the points numbered as the rows are: bench
    inference images/s when every row was benched, else the runs' training images/s; a row of
    several seeds has their std as an error bar."""
    benched = all((row.bench.get("infer") or {}).get("images_per_second") for row in rows)
    numbers, speeds, scores, spreads = [], [], [], []
    for number, row in enumerate(rows, 1):
        score = row.mean("test", row.headline)
        speed = row.bench["infer"]["images_per_second"] if benched else row.train_images_per_second
        if score is not None and speed:
            numbers.append(number)
            speeds.append(speed)
            scores.append(score)
            spreads.append(row.std("test", row.headline))
    if not numbers:
        return None
    return plots.plot_score_vs_speed(
        numbers, [entry_name(rows[n - 1]) for n in numbers], speeds, scores,
        pareto_front(list(zip(speeds, scores, strict=True))),
        xlabel="inference images/s (zoo bench)" if benched else "training images/s (runs' median)",
        ylabel=f"test {METRIC_LABELS[rows[0].headline]}", spreads=spreads,
    )  # fmt: skip


def plot_heatmap(rows: list[comparing.Row], metric: str) -> Figure:
    """Rows x classes, the mean test per-class `metric`."""
    values = np.array(
        [list(row.per_class("test", metric).values()) for row in rows], dtype=float
    )  # None (a class absent from the test split) becomes NaN
    return plots.plot_class_heatmap(
        [entry_name(row) for row in rows], rows[0].class_names, values,
        f"test {METRIC_LABELS[metric]} per class",
    )  # fmt: skip


def link(path: Path, report_dir: Path) -> str:
    """`path` relative to the report's folder, as a link from the report."""
    return Path(os.path.relpath(path, report_dir)).as_posix()


def run_files(record, report_dir: Path, thumbnails: bool) -> dict:
    """A run's folder, files and figures as links from the report; with `thumbnails`, the
    figures' thumbnails too (the ones a record lists, else the PNGs in its figures/)."""
    listed = record.figures or sorted(
        p.relative_to(record.run_dir).as_posix()
        for p in (record.run_dir / "figures").rglob("*.png")
    )
    figures = []
    for relative in listed:
        path = record.run_dir / relative
        if path.is_file():
            data = thumbnail(path) if thumbnails else None
            name = relative.removeprefix("figures/")
            figures.append({"name": name, "href": link(path, report_dir), "data": data})
    return {
        "title": f"seed {record.config.seed}",
        "href": link(record.run_dir, report_dir) + "/",
        "files": [
            {"name": p.name, "href": link(p, report_dir)}
            for p in sorted(record.run_dir.iterdir())
            if p.is_file()
        ],
        "figures": figures,
    }


def dataset_tab(dataset: str, rows: list[comparing.Row], report_dir: Path) -> dict:
    """One dataset's tab: tables, charts, and per entry (row) its runs; the first run of each
    entry shows its figures as thumbnails, the others (other seeds) link them."""
    task = rows[0].task
    columns, body = comparing.main_table(rows)
    scatter = plot_scatter(rows)
    entries = [
        {
            "id": f"{dataset}-{number}",
            "number": number,
            "name": entry_name(row),
            "cells": cells,
            "runs": [run_files(run, report_dir, i == 0) for i, run in enumerate(row.runs)],
        }
        for number, (row, cells) in enumerate(zip(rows, body, strict=True), 1)
    ]
    return {
        "name": dataset,
        "task": task,
        "run_count": sum(row.n for row in rows),
        "columns": columns,
        "entries": entries,
        "scatter": figure_data(scatter) if scatter else None,
        "heatmap": figure_data(plot_heatmap(rows, "ap")),
        "per_class": [
            {
                "metric": METRIC_LABELS[metric],
                "classes": rows[0].class_names,
                "rows": [
                    (number, row.model, row.recipe, list(row.per_class("test", metric).values()))
                    for number, row in enumerate(rows, 1)
                ],
            }
            for metric in comparing.per_class_metrics(task)
        ],
    }


def sweep_figures(folder: Path, report_dir: Path) -> list[dict]:
    """The Optuna figures `zoo sweep show` wrote under folder/sweeps/<study>/figures/."""
    studies = []
    for study in sorted((folder / "sweeps").glob("*/figures")):
        images = [
            {"name": png.name, "href": link(png, report_dir), "data": data}
            for png in sorted(study.glob("*.png"))
            if (data := thumbnail(png)) is not None
        ]
        if images:
            studies.append({"name": study.parent.name, "figures": images})
    return studies


def render(comparison: comparing.Comparison, report_dir: Path | None = None) -> str:
    """The report's HTML; its links to run folders are relative to `report_dir`, the folder
    the report is written to (default: the compared folder, as `make report` does)."""
    report_dir = Path(report_dir or comparison.folder)
    datasets = [dataset_tab(dataset, rows, report_dir) for dataset, rows in comparison.rows.items()]
    bench = bench_tables(comparison.bench)
    sweeps = sweep_figures(comparison.folder, report_dir)
    tabs = [d["name"] for d in datasets] + ["bench"] * bool(bench) + ["sweeps"] * bool(sweeps)
    most_runs = max(datasets, key=lambda d: d["run_count"], default=None)
    return template().render(
        title=f"zoo report: {comparison.folder}",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        datasets=datasets,
        bench=bench,
        sweeps=sweeps,
        skipped=comparison.skipped,
        tabs=tabs,
        opened=most_runs["name"] if most_runs else tabs[0],
    )


def recipe_html(recipe: str):
    """A recipe's options each unbreakable (`--lr 0.003`), so a narrow column wraps between
    options and never after a `--`."""
    from markupsafe import Markup, escape

    options = re.split(r" (?=--)", recipe)
    return Markup(" ".join(f'<span class="option">{escape(option)}</span>' for option in options))


def template():
    import jinja2

    loader = jinja2.FileSystemLoader(Path(__file__).parent / "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["score"] = lambda v: "" if v is None else f"{v:.3f}"
    env.filters["recipe"] = recipe_html
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
