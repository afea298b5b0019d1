"""The tables zoo's commands print: functions that build rich `Table`s or text and never print.

Each table fits 80 columns: numbers and names never wrap (`no_wrap`); only description cells
wrap. `--format csv|json` gives scripts the same rows without boxes (`rows_text`).
"""

from __future__ import annotations

import csv
import io
import json
import re

from rich.table import Table

COLUMN_LABELS = {"accuracy": "acc", "ap": "AP", "iou": "IoU"}  # "val acc", "test AP", ...


def format_score(value: float | None, digits: int = 3) -> str:
    """A score for a table; None is a score undefined on that split (e.g. AP of an absent class)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rows_text(rows: list[dict], format: str) -> str:
    """`rows` (dicts with the same keys) as CSV or JSON text."""
    if format == "json":
        return json.dumps(rows, indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def model_rows(names: list[str]) -> list[dict]:
    """`zoo list`'s rows: name, task, default dataset, parameters, description."""
    from zoo.registry import count_parameters, get_model_entry

    rows = []
    for name in names:
        entry = get_model_entry(name)
        rows.append(
            {
                "name": name,
                "task": entry.task,
                "dataset": entry.dataset,
                "parameters": count_parameters(name),
                "description": entry.description,
            }
        )
    return rows


def models_table(rows: list[dict]) -> Table:
    """`zoo list`: the task is left out (the default dataset names it, and --task filters)."""
    table = Table("name", "dataset", "params", "description")
    for column in table.columns[:3]:
        column.no_wrap = True
    table.columns[2].justify = "right"
    for row in rows:
        table.add_row(row["name"], row["dataset"], f"{row['parameters']:,}", row["description"])
    return table


def dataset_rows(names: list[str]) -> list[dict]:
    """`zoo datasets`' rows: name, task, classes, input shape, description."""
    from zoo.data import get_dataset_info

    rows = []
    for name in names:
        info = get_dataset_info(name)
        rows.append(
            {
                "name": name,
                "task": info.task,
                "classes": info.num_classes,
                "input": f"{info.in_chans}x{info.image_size[0]}x{info.image_size[1]}",
                "description": info.description,
            }
        )
    return rows


def datasets_table(rows: list[dict]) -> Table:
    table = Table("name", "task", "classes", "input", "description")
    for column in table.columns[:4]:
        column.no_wrap = True
    table.columns[2].justify = "right"
    for row in rows:
        table.add_row(*(str(row[key]) for key in ("name", "task", "classes", "input")),
                      row["description"])  # fmt: skip
    return table


def metrics_table(record) -> Table:
    """A run's per-class scores (val and test, in the task's metrics) and its overall row."""
    per_class, overall = record.metrics.per_class, record.metrics.scores
    splits = ("val", "test")
    table = Table(title=f"{record.model} on {record.dataset} ({record.checkpoint})")
    table.add_column("class", no_wrap=True)
    for split in splits:
        for key in per_class:
            table.add_column(f"{split} {COLUMN_LABELS[key]}", justify="right", no_wrap=True)
    for name in record.class_names:
        scores = [record.per_class(s, key)[name] for s in splits for key in per_class]
        table.add_row(name, *map(format_score, scores))
    table.add_section()
    table.add_row(
        "[bold]overall", *(format_score(record.score(s, k), 4) for s in splits for k in overall)
    )
    return table


def model_summary(name: str, batch_size: int = 1, input_size: int | None = None, depth: int = 3):
    """torchinfo's layer table of model `name` (output shapes, parameters, mult-adds, memory) on
    its dataset's input, 80 columns wide, its units spelt as torchinfo means them ("M")."""
    import torchinfo
    from torchinfo.enums import Units

    from zoo.data import get_dataset_info
    from zoo.registry import create_model, get_model_entry

    info = get_dataset_info(get_model_entry(name).dataset)
    height, width = (input_size, input_size) if input_size else info.image_size
    stats = torchinfo.summary(
        create_model(name),
        input_size=(batch_size, info.in_chans, height, width),
        col_names=("output_size", "num_params"),
        col_width=20,  # the layer column's 40 + 2 x 20 = 80
        depth=depth,
        verbose=0,
    )
    # torchinfo formats its str enum with f"{unit}", which Python 3.11+ spells Units.MEGABYTES
    return re.sub(r"Units\.([A-Z]+)", lambda match: Units[match[1]].value, str(stats))


def study_table(rows: list[dict], title: str, width: int = 80) -> list:
    """`zoo sweep show`'s trials, one row each (columns: every key any row has), no wider than
    `width`: the searched options' names wrap at their underscores, and the columns that still
    do not fit are named under the table (compare.fitted_table). Returns the table and notes."""
    from zoo.compare import fitted_table

    columns = list(dict.fromkeys(key for row in rows for key in row))
    header = [column.replace("_", " ") for column in columns]
    body = [[format_cell(row.get(column)) for column in columns] for row in rows]
    first = ("trial", "state", "value", "epochs")
    return fitted_table(title, header, body, width, first=first, wider="widen the terminal")


# ----------------------------------------------------------------------------- published weights


def short_count(n: int) -> str:
    """466k, 1.68M, 24.4M: a parameter count for a narrow column."""
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    return f"{n / 1e3:.3g}k" if n >= 1e3 else str(n)


def weights_rows(found: list) -> list[dict]:
    """`zoo weights`' rows, one per published version (zoo.weights.Weights), for csv/json."""
    rows = []
    for weights in found:
        metric, score = weights.headline()
        rows.append(
            {
                "name": weights.name,
                "model": weights.model,
                "dataset": weights.dataset,
                "version": weights.version,
                "task": weights.task,
                "metric": metric,
                "score": score,
                "mean_iou": weights.metrics.get("mean_iou"),
                "parameters": weights.num_parameters,
                "gflops": weights.gflops,
                "size_bytes": weights.file_size,
                "dtype": weights.dtype if weights.file else None,
                "weights": "published" if weights.file else "train to get weights",
                "recipe": weights.recipe,
                "recipe_file": weights.recipe_file,
                "seed": weights.config.get("seed", 0),
                "run_id": weights.run_id,
                "sha256": weights.sha256,
                "published": weights.published,
            }
        )
    return rows


def recipe_text(row: dict) -> str:
    """A published version's recipe: its recipes/ file (and seed), else its command."""
    if not row["recipe_file"]:
        return row["recipe"]
    return row["recipe_file"] + (f" --seed {row['seed']}" if row["seed"] else "")


def weights_tables(rows: list[dict], width: int = 80) -> list:
    """`zoo weights`: one table per dataset, as torchvision's weights pages list them per task,
    no wider than `width` (compare.fitted_table: long recipes become keys under the table)."""
    from zoo.compare import fitted_table

    parts = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        chosen = [row for row in rows if row["dataset"] == dataset]
        segmentation = chosen[0]["task"] == "segmentation"
        scores = ("mAP", "mIoU") if segmentation else ("acc",)
        header = ["model", *scores, "params", "GFLOPs", "size", "dtype", "recipe"]
        body = []
        for row in chosen:
            values = (row["score"], row["mean_iou"]) if segmentation else (row["score"],)
            size = f"{row['size_bytes'] / 1e6:.1f} MB" if row["size_bytes"] else row["weights"]
            version = f" v{row['version']}" if row["version"] > 1 else ""
            body.append(
                [f"{row['model']}{version}", *(format_score(v) for v in values),
                 short_count(row["parameters"]), f"{row['gflops']:.3g}", size,
                 {"float16": "fp16", "float32": "fp32"}.get(row["dtype"], ""),
                 recipe_text(row)]
            )  # fmt: skip
        title = f"{dataset} ({chosen[0]['task']}, test split)"
        first = ("model", scores[0], "size", "recipe")
        wider = "widen the terminal, or use --format csv or json"
        parts += fitted_table(title, header, body, width, wrap=("size",), first=first, wider=wider)
    return parts


def rescored_table(rescored) -> Table:
    """`zoo eval NAME`: the published weights' per-class test scores as scored now, then the
    overall scores now and as published (the task's overall scores line up with its per-class
    columns: accuracy / mean AP, or mean AP / mIoU / pixel accuracy)."""
    from zoo.results import TASK_METRICS

    found, metrics = rescored.weights, rescored.metrics
    task = TASK_METRICS[found.task]
    table = Table(title=f"{found.ref} on {found.dataset} test ({found.dtype} weights)")
    table.add_column("class", no_wrap=True)
    for key in task.per_class:
        table.add_column(f"test {COLUMN_LABELS[key]}", justify="right", no_wrap=True)
    for name in found.class_names:
        per_class = metrics.get("per_class", {}).get(name, {})
        table.add_row(name, *(format_score(per_class.get(key)) for key in task.per_class))
    table.add_section()
    table.add_row("[bold]overall", *(format_score(metrics.get(key), 4) for key in task.scores))
    table.add_row("published", *(format_score(found.metrics.get(key), 4) for key in task.scores))
    return table
