"""The tables zoo's commands print: functions that build rich `Table`s or text and never print.

Each table fits 80 columns: numbers and names never wrap (`no_wrap`); only description cells
wrap. `--format csv|json` gives scripts the same rows without boxes (`rows_text`).
"""

from __future__ import annotations

import csv
import io
import json

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


def study_table(rows: list[dict], title: str) -> Table:
    """`zoo sweep show`'s trials, one row each (columns: every key any row has)."""
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="left" if column == "state" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(format_cell(row.get(column)) for column in columns))
    return table
