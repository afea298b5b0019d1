"""`zoo compare`: run records and bench rows, joined per dataset into comparison tables.

    compare(folder, ...)    records (through zoo.results.load_runs) grouped by model and recipe,
                            runs that differ only in their seed summarised as mean +- std, n,
                            joined with `zoo bench` rows by model and dataset
    markdown / csv / rich   the tables; zoo/report.py draws the HTML report from the same rows

A "recipe" is the run's TrainConfig without the fields that do not change what is learned
(seed, output and data folders, device, evaluation batch size, compile, memory format, and the
autocast dtype of a run without --amp).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from zoo.config import TRACKING_FIELDS, Task, TrainConfig, option, plain_choices, to_flags
from zoo.errors import ZooError
from zoo.results import METRIC_LABELS, TASK_METRICS, RunRecord, load_runs

NOT_RECIPE = (
    "seed", "out", "data_dir", "device", "eval_batch_size", "compile", "channels_last",
    *TRACKING_FIELDS,
)  # fmt: skip
COLUMNS = ("model", "recipe", "n", "params", "train_img_s", "bench_img_s", "latency_ms", "mfu")


@dataclass(frozen=True)
class Selection:
    """Which runs `zoo compare` compares, and in what order; each field is one of its options."""

    task: str | None = option(None, "Only this task.", choices=Task)
    dataset: str | None = option(None, "Only this dataset.")
    model: str | None = option(None, "Only models matching this pattern.")
    sort: str | None = option(
        None,
        "model, n, params, train_img_s, bench_img_s, latency_ms, mfu, val or test (default: test "
        "score, best first).",
    )
    baseline: str | None = option(
        None, "Show each row's difference to this model (Welch's t-test)."
    )
    trials: bool = option(True, "Include sweep trials (tagged runs).")

    def __post_init__(self) -> None:
        plain_choices(self)


SELECTION = tuple(vars(Selection()))  # the selection's field names, each an option of zoo compare


@dataclass
class Row:
    """One model and recipe on one dataset: its runs, their scores, the bench figures."""

    dataset: str
    task: str
    model: str
    recipe: str  # the options that differ from `zoo train MODEL`'s defaults, e.g. "--augment"
    runs: list[RunRecord]
    bench: dict[str, dict] = field(default_factory=dict)  # mode -> bench row
    baseline: Row | None = None

    @property
    def class_names(self) -> list[str]:
        return self.runs[0].class_names

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int]:
        return sorted(run.config.seed for run in self.runs)

    @property
    def headline(self) -> str:
        return TASK_METRICS[self.task].scores[0]

    def values(self, split: str, name: str) -> list[float]:
        return [v for run in self.runs if (v := run.score(split, name)) is not None]

    def mean(self, split: str, name: str) -> float | None:
        values = self.values(split, name)
        return statistics.fmean(values) if values else None

    def std(self, split: str, name: str) -> float | None:
        values = self.values(split, name)
        return statistics.stdev(values) if len(values) > 1 else None

    def per_class(self, split: str, name: str) -> dict[str, float | None]:
        """Mean per-class score over the runs, by class name."""
        result = {}
        for class_name in self.class_names:
            values = [
                v
                for run in self.runs
                if (v := run.per_class(split, name).get(class_name)) is not None
            ]
            result[class_name] = statistics.fmean(values) if values else None
        return result

    @property
    def params(self) -> int | None:
        return self.runs[0].num_parameters

    @property
    def train_images_per_second(self) -> float | None:
        """The median over the runs of each run's median epoch throughput (from its history when
        the record predates the field)."""
        values = []
        for run in self.runs:
            epochs = [r["train_images_per_second"] for r in run.history]
            value = run.train_images_per_second or (statistics.median(epochs) if epochs else None)
            if value:
                values.append(value)
        return statistics.median(values) if values else None

    @property
    def precision(self) -> str:
        return self.runs[0].precision

    def versus_baseline(self) -> dict | None:
        """The difference of the headline test score to the baseline's, whether it exceeds the
        seed spread, and Welch's t-test p-value where both have 2+ runs."""
        if self.baseline is None or self.baseline is self:
            return None
        mine, theirs = (
            self.values("test", self.headline),
            self.baseline.values("test", self.headline),
        )
        if not mine or not theirs:
            return None
        difference = statistics.fmean(mine) - statistics.fmean(theirs)
        spreads = [statistics.stdev(v) for v in (mine, theirs) if len(v) > 1]
        p_value = None
        if len(mine) > 1 and len(theirs) > 1:
            from scipy.stats import ttest_ind

            p_value = float(ttest_ind(mine, theirs, equal_var=False).pvalue)
        return {
            "difference": difference,
            "spread": max(spreads) if spreads else None,
            "exceeds_spread": bool(spreads) and abs(difference) > max(spreads),
            "p_value": p_value if p_value is None or math.isfinite(p_value) else None,
        }


def recipe_fields(config: TrainConfig) -> dict:
    """The fields that change what is learned: not NOT_RECIPE's, nor --amp-dtype without --amp."""
    unused = NOT_RECIPE if config.amp else (*NOT_RECIPE, "amp_dtype")
    return {k: v for k, v in config.to_dict().items() if k not in unused}


def recipe_key(config: TrainConfig) -> tuple:
    return tuple(recipe_fields(config).items())


def recipe_summary(config: TrainConfig, task: str, default_dataset: str) -> str:
    """The options that differ from `zoo train MODEL`'s defaults, as you would type them."""
    defaults = TrainConfig(model=config.model).resolve(task, default_dataset).to_dict()
    flags = to_flags(recipe_fields(config), against=defaults, skip=("model", "dataset"), digits=6)
    return " ".join(flags) or "defaults"


@dataclass
class Comparison:
    rows: dict[str, list[Row]]  # dataset -> rows
    bench: list[dict]  # every bench row read
    skipped: list[str]  # one warning per file or run left out
    folder: Path


def compare(
    folder: str | Path,
    *,
    task: str | None = None,
    dataset: str | None = None,
    model: str | None = None,
    sort: str | None = None,
    baseline: str | None = None,
    trials: bool = True,
) -> Comparison:
    """Read the run records and bench rows under `folder` and make the rows, per dataset."""
    from zoo.benchfiles import load_bench_rows
    from zoo.registry import get_model_entry

    folder = Path(folder)
    if not folder.is_dir():
        raise ZooError(f"{folder} does not exist; pass a results folder such as results/.")
    records, skipped = load_runs(folder)
    bench, bench_skipped = load_bench_rows(folder)
    skipped += bench_skipped
    if not records and not bench:
        raise ZooError(f"{folder} holds no run records or bench files; train or bench first.")
    chosen = []
    for record in records:
        if not selected(record, task, dataset, model, trials):
            continue
        if record.status == "completed":
            chosen.append(record)
        else:
            skipped.append(f"Left out {record.run_dir}: status {record.status}, not evaluated.")
    groups: dict[tuple, list[RunRecord]] = {}
    for record in chosen:
        groups.setdefault((record.dataset, record.model, recipe_key(record.config)), []).append(
            record
        )
    rows: dict[str, list[Row]] = {}
    for (dataset_name, model_name, _), runs in groups.items():
        entry = get_model_entry(model_name)
        runs.sort(key=lambda r: r.config.seed)
        row = Row(
            dataset=dataset_name,
            task=runs[0].task,
            model=model_name,
            recipe=recipe_summary(runs[0].config, entry.task, entry.dataset),
            runs=runs,
            bench=bench_for(bench, model_name, dataset_name, runs[0]),
        )
        rows.setdefault(dataset_name, []).append(row)
    for dataset_rows in rows.values():
        sort_rows(dataset_rows, sort)
        if baseline is not None:
            set_baseline(dataset_rows, baseline)
    return Comparison(rows=dict(sorted(rows.items())), bench=bench, skipped=skipped, folder=folder)


def selected(record: RunRecord, task, dataset, model, trials: bool) -> bool:
    return (
        (task is None or record.task == task)
        and (dataset is None or record.dataset == dataset)
        and (model is None or fnmatch.fnmatch(record.model, model))
        and (trials or "trial" not in record.tags)
    )


def bench_for(bench: list[dict], model: str, dataset: str, run: RunRecord) -> dict[str, dict]:
    """The bench rows (per mode) that best match a run: same model and dataset, no error, the
    run's device type and precision if measured, else fp32 on the same device type, else any;
    compiled if the run was, else eager."""
    device_type = run.environment.get("device", "cpu").split(":")[0]
    found = {}
    for mode in ("infer", "train"):
        candidates = [
            b for b in bench
            if b["model"] == model and b["dataset"] == dataset and b["mode"] == mode
            and not b["error"]
        ]  # fmt: skip

        def rank(b: dict) -> tuple:
            same_device = b["device"].split(":")[0] == device_type
            return (
                same_device and b["precision"] == run.precision,
                same_device,
                b["precision"] == "fp32",
                bool(b["compiled"]) == bool(run.config.compile),
            )

        if candidates:
            found[mode] = max(candidates, key=rank)
    return found


SORT_KEYS = (
    "model",
    "n",
    "params",
    "train_img_s",
    "bench_img_s",
    "latency_ms",
    "mfu",
    "val",
    "test",
)


def sort_rows(rows: list[Row], sort: str | None) -> None:
    """Sort by a column; the default is the headline test score, best first."""
    sort = sort or "test"
    if sort not in SORT_KEYS:
        raise ZooError(f"Unknown --sort column {sort!r}; choose one of {', '.join(SORT_KEYS)}.")

    def key(row: Row):
        value = {
            "model": row.model,
            "n": row.n,
            "params": row.params,
            "train_img_s": row.train_images_per_second,
            "bench_img_s": (row.bench.get("infer") or {}).get("images_per_second"),
            "latency_ms": (row.bench.get("infer") or {}).get("latency_ms_median"),
            "mfu": (row.bench.get("train") or {}).get("mfu"),
            "val": row.mean("val", row.headline),
            "test": row.mean("test", row.headline),
        }[sort]
        return (value is None, value if sort in ("model", "latency_ms") else -(value or 0))

    rows.sort(key=key)


def set_baseline(rows: list[Row], model: str) -> None:
    """Each row's baseline: `model`'s row with the most runs (its default recipe first)."""
    candidates = [row for row in rows if row.model == model]
    if not candidates:
        return
    chosen = max(candidates, key=lambda row: (row.n, row.recipe == "defaults"))
    for row in rows:
        row.baseline = chosen


# ----------------------------------------------------------------------------- formatting


def score_text(row: Row, split: str, name: str, digits: int = 4) -> str:
    mean, std = row.mean(split, name), row.std(split, name)
    if mean is None:
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def number(value: float | None, fmt: str = ",.0f") -> str:
    return "" if value is None else format(value, fmt)


def rate(value: float | None) -> str:
    """Images/s: whole numbers, but one decimal below 100 (a U-Net on a CPU: ~10 images/s)."""
    return number(value, ".1f" if value is not None and value < 100 else ",.0f")


def main_columns(task: str, with_baseline: bool) -> list[str]:
    scores = TASK_METRICS[task].scores
    columns = ["model", "recipe", "n"]
    columns += [f"val {METRIC_LABELS[s]}" for s in scores[:1]]
    columns += [f"test {METRIC_LABELS[s]}" for s in scores]
    columns += ["parameters", "GFLOPs/img", "train img/s", "bench img/s", "latency ms", "peak MB"]
    columns += ["MFU"]
    if with_baseline:
        columns += ["Δ test vs baseline", "p (Welch)"]
    return columns


def main_cells(row: Row, with_baseline: bool) -> list[str]:
    scores = TASK_METRICS[row.task].scores
    infer, train = row.bench.get("infer") or {}, row.bench.get("train") or {}
    cells = [row.model, row.recipe, str(row.n)]
    cells += [score_text(row, "val", s) for s in scores[:1]]
    cells += [score_text(row, "test", s) for s in scores]
    flops = infer.get("flops_per_image")
    cells += [
        number(row.params),
        number(flops / 1e9, ".3f") if flops else "",
        rate(row.train_images_per_second),
        rate(infer.get("images_per_second")),
        number(infer.get("latency_ms_median"), ".2f"),
        number(train.get("peak_memory_mb") or infer.get("peak_memory_mb"), ",.0f"),
        number(train.get("mfu") * 100, ".1f") + "%" if train.get("mfu") is not None else "",
    ]
    if with_baseline:
        versus = row.versus_baseline()
        if versus is None:
            cells += ["baseline" if row.baseline is row else "", ""]
        else:
            mark = " (> spread)" if versus["exceeds_spread"] else ""
            p = versus["p_value"]
            cells += [f"{versus['difference']:+.4f}{mark}", "" if p is None else f"{p:.3g}"]
    return cells


def main_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The main table of one dataset's rows, without the columns that are empty in every row
    (no bench rows yet, no baseline)."""
    with_baseline = any(row.baseline is not None for row in rows)
    header = main_columns(rows[0].task, with_baseline)
    body = [main_cells(row, with_baseline) for row in rows]
    keep = [i for i in range(len(header)) if any(cells[i] for cells in body)]
    return [header[i] for i in keep], [[cells[i] for i in keep] for cells in body]


def per_class_columns(rows: list[Row]) -> list[str]:
    return rows[0].class_names


def per_class_metrics(task: str) -> tuple[str, ...]:
    return TASK_METRICS[task].per_class


def markdown_table(header: list[str], body: list[list[str]], right_from: int = 2) -> str:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "| " + " | ".join("---" if i < right_from else "---:" for i in range(len(header))) + " |"
    )
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body
    ]
    return "\n".join(lines)


PER_CLASS_CHOICES = ("all", "none", "accuracy", "ap", "iou")


def per_class_choice(text: str) -> tuple[str, ...]:
    """`--per-class` ("ap,iou", "all", "none") as the per-class metrics it names ("all": ())."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in PER_CLASS_CHOICES:
            raise ZooError(
                f"--per-class {name!r} is not a per-class table; use all, none, or a comma list "
                "of accuracy, ap and iou."
            )
    return () if "all" in names else names


def to_markdown(comparison: Comparison, *, per_class: str = "all", per_run: bool = False) -> str:
    """Per dataset: the main table, then one models x classes table per per-class metric (those
    `per_class` names: "all", "none", or e.g. "ap,iou"); or with `per_run`, one table of every
    run."""
    chosen = per_class_choice(per_class)
    if per_run:
        return markdown_table(*run_rows(comparison), right_from=99) + "\n"
    parts = []
    for dataset, rows in comparison.rows.items():
        task = rows[0].task
        parts.append(f"#### {dataset}\n")
        parts.append(markdown_table(*main_table(rows)) + "\n")
        for metric in per_class_metrics(task):
            if not chosen or metric in chosen:
                header = ["model", "recipe", *per_class_columns(rows)]
                body = [
                    [row.model, row.recipe]
                    + [number(v, ".3f") for v in row.per_class("test", metric).values()]
                    for row in rows
                ]
                parts.append(f"Test {METRIC_LABELS[metric]} per class:\n")
                parts.append(markdown_table(header, body) + "\n")
    return "\n".join(parts)


def setting(row: dict) -> str:
    """A bench row's precision, and "compiled" when it ran under torch.compile: "fp32",
    "bf16", "fp32 compiled", ..."""
    return row["precision"] + (" compiled" if row["compiled"] else "")


def bench_speedups(bench: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The bench rows side by side, one table per device and memory format: each model's
    images/s in every precision (and compiled setting) measured, per mode, and the speed-up
    over eager fp32."""
    groups: dict[tuple, list[dict]] = {}
    for row in bench:
        key = (row["device_name"], row["device"].split(":")[0], row["memory_format"])
        groups.setdefault(key, []).append(row)
    tables = []
    for (name, device, layout), rows in sorted(groups.items()):
        precisions = sorted({setting(r) for r in rows}, key=lambda p: (p != "fp32", p))
        faster = [p for p in precisions if p != "fp32" and "fp32" in precisions]
        modes = [m for m in ("infer", "train") if any(r["mode"] == m for r in rows)]
        found = {(r["model"], r["mode"], setting(r)): r for r in rows}
        header = ["model", "batch", "GFLOPs/img"]
        for mode in modes:
            header += [f"{mode} img/s {p}" for p in precisions]
            header += [f"{mode} {p}/fp32" for p in faster]
        body = []
        for model in sorted({r["model"] for r in rows}):
            measured = [r for r in rows if r["model"] == model and not r["error"]]
            infer = [r for r in measured if r["mode"] == "infer" and r["flops_per_image"]]
            flops = infer[0]["flops_per_image"] / 1e9 if infer else None
            batch = str(measured[0]["batch_size"] or "") if measured else ""
            cells = [model, batch, number(flops, ".3f")]
            for mode in modes:
                speed = {}
                for precision in precisions:
                    row = found.get((model, mode, precision))
                    speed[precision] = (
                        row["images_per_second"] if row and not row["error"] else None
                    )
                    cells.append("error" if row and row["error"] else rate(speed[precision]))
                for precision in faster:
                    new, old = speed[precision], speed["fp32"]
                    cells.append(f"{new / old:.2f}x" if new and old else "")
            body.append(cells)
        tables.append((f"{name} ({device}), {layout}", header, body))
    return tables


def bench_markdown(bench: list[dict]) -> str:
    return "\n".join(
        f"#### {title}\n\n{markdown_table(header, body, right_from=1)}\n"
        for title, header, body in bench_speedups(bench)
    )


def run_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """One row per run (not per recipe): where it is, what it ran, its code, its scores."""
    header = ["run", "model", "recipe", "seed", "commit", "device, precision", "test scores"]
    body = []
    for rows in comparison.rows.values():
        for row in rows:
            for run in row.runs:
                env = run.environment
                scores = ", ".join(
                    f"{METRIC_LABELS[name]} {value:.4f}"
                    for name in TASK_METRICS[run.task].scores
                    if (value := run.score("test", name)) is not None
                )
                body.append(
                    [
                        f"`{run.run_dir.relative_to(comparison.folder).as_posix()}`",
                        run.model,
                        row.recipe,
                        str(run.config.seed),
                        f"`{env.get('git_commit')}`" if env.get("git_commit") else "",
                        f"{env.get('device', '?')}, {run.precision}",
                        scores,
                    ]
                )
    return header, body


def to_csv(comparison: Comparison) -> str:
    """One flat row per model and recipe, per-class scores as `test_<metric>[<class>]`."""
    rows_out, header = [], []
    for rows in comparison.rows.values():
        for row in rows:
            record = {
                "dataset": row.dataset, "task": row.task, "model": row.model,
                "recipe": row.recipe, "n": row.n, "seeds": " ".join(map(str, row.seeds)),
                "params": row.params, "precision": row.precision,
                "train_images_per_second": row.train_images_per_second,
            }  # fmt: skip
            for split in ("val", "test"):
                for name in TASK_METRICS[row.task].scores:
                    record[f"{split}_{name}_mean"] = row.mean(split, name)
                    record[f"{split}_{name}_std"] = row.std(split, name)
            for metric in per_class_metrics(row.task):
                for class_name, value in row.per_class("test", metric).items():
                    record[f"test_{metric}[{class_name}]"] = value
            for mode, bench in row.bench.items():
                for key in ("images_per_second", "latency_ms_median", "peak_memory_mb",
                            "flops_per_image", "mfu", "precision"):  # fmt: skip
                    record[f"bench_{mode}_{key}"] = bench.get(key)
            versus = row.versus_baseline()
            if versus:
                record |= {f"baseline_{k}": v for k, v in versus.items()}
            header += [key for key in record if key not in header]
            rows_out.append(record)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows_out)
    return buffer.getvalue()


def to_rich(comparison: Comparison, *, per_run: bool = False, width: int = 80) -> list:
    """The main tables as rich renderables that fit `width` columns, one table per dataset (or
    one table of every run), each followed by its notes (recipe keys, columns left out)."""
    if per_run:
        header, body = run_rows(comparison)
        body = [[cell.strip("`") for cell in cells] for cells in body]
        wrap, first = ("device, precision", "test scores"), ("run", "test scores", "recipe", "seed")
        return fitted_table("runs", header, body, width, wrap=wrap, first=first)
    parts = []
    for dataset, rows in comparison.rows.items():
        parts += fitted_table(f"{dataset} ({rows[0].task})", *main_table(rows), width)
    return parts


# Kept first when a terminal is too narrow for every column; the others follow in table order.
FIRST_COLUMNS = ("model", "n", "recipe", "Δ test vs baseline", "p (Welch)")


def fitted_table(
    title: str,
    header: list[str],
    body: list[list[str]],
    width: int,
    wrap: tuple = (),
    first: tuple = FIRST_COLUMNS,
    wider: str = "widen the terminal, or use --format markdown or csv",
) -> list:
    """A rich Table of `header`/`body` no wider than `width`, with no number or name split
    across lines: recipes longer than a key become keys (a, b, ...) explained under the
    table, only the `wrap` columns wrap (at spaces), a mean's "± std" goes on the line under
    it, and the columns that do not fit are left out and named under the table, with `wider`:
    how to see them. Returns the table and its notes."""
    import textwrap

    from rich.table import Table
    from rich.text import Text

    body = [list(cells) for cells in body]
    notes = []
    if "recipe" in header:
        column = header.index("recipe")
        recipes = list(dict.fromkeys(cells[column] for cells in body))
        if max(map(len, recipes)) > 8:
            keys = {
                recipe: chr(ord("a") + i) if i < 26 else str(i) for i, recipe in enumerate(recipes)
            }
            for cells in body:
                cells[column] = keys[cells[column]]
            notes += [f"{key}: {recipe}" for recipe, key in keys.items()]

    def words(text: str) -> int:
        return max((len(word) for word in text.split()), default=0)

    def wraps(name: str, text: str) -> bool:  # a figure and its unit ("6.2 MB") stay on one line
        return name in wrap and not text[:1].isdigit()

    def spread_below(text: str) -> str:  # "0.6670 ± 0.0508": the ± on a line of its own
        return text.replace(" ± ", "\n± ")

    def lines(text: str) -> int:
        return max(map(len, spread_below(text).splitlines()), default=0)

    widths = [
        max([words(name)] + [words(c[i]) if wraps(name, c[i]) else lines(c[i]) for c in body])
        for i, name in enumerate(header)
    ]
    order = sorted(
        (i for i, name in enumerate(header) if name in first), key=lambda i: first.index(header[i])
    )
    order += [i for i, name in enumerate(header) if name.startswith("test ") and i not in order]
    order += [i for i in range(len(header)) if i not in order]
    kept, used = [], 1  # the table's left border
    for i in order:
        if used + widths[i] + 3 <= width:  # padding on both sides and a border
            kept.append(i)
            used += widths[i] + 3
    kept.sort()
    table = Table(title=title)
    for i in kept:
        name = header[i]
        table.add_column(
            textwrap.fill(name, widths[i]) if name not in wrap else name,
            justify="left" if name in ("run", "model", "recipe", "state", *wrap) else "right",
            no_wrap=name not in wrap,
            min_width=widths[i],
        )
    for cells in body:
        table.add_row(*(spread_below(cells[i]) for i in kept))
    left_out = [header[i] for i in range(len(header)) if i not in kept]
    if left_out:
        notes.append(f"Not shown at this width: {', '.join(left_out)} ({wider}).")
    return [table, *(Text(note) for note in notes)]


def rich_table(title: str, header: list[str], body: list[list[str]], left: int = 2):
    """A rich Table: the first `left` columns left-aligned, the figures right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i < left else "right", overflow="fold")
    for cells in body:
        table.add_row(*cells)
    return table


def render_tables(
    comparison: Comparison, *, per_run: bool = False, bench: bool = False, width: int = 80
) -> list:
    """What `zoo compare` prints, as rich renderables no wider than `width`: the main tables,
    or with `bench` the bench speed-ups per device."""
    if bench:
        require_bench(comparison)
        parts = []
        for title, header, body in bench_speedups(comparison.bench):
            parts += fitted_table(title, header, body, width)
        return parts
    return to_rich(comparison, per_run=per_run, width=width)


def render(
    comparison: Comparison,
    format: str,
    *,
    per_run: bool = False,
    bench: bool = False,
    per_class: str = "all",
) -> str:
    """The comparison as `markdown`, `csv` or `html` text (with `bench`: Markdown only)."""
    if bench:
        require_bench(comparison)
        if format != "markdown":
            raise ZooError("--bench shows tables: use --format table or markdown.")
        return bench_markdown(comparison.bench)
    if format == "html":
        from zoo import report

        return report.render(comparison)
    if format == "markdown":
        return to_markdown(comparison, per_run=per_run, per_class=per_class)
    return to_csv(comparison)


def require_bench(comparison: Comparison) -> None:
    if not comparison.bench:
        raise ZooError(f"{comparison.folder} holds no bench files; run `zoo bench` first.")


# ----------------------------------------------------------------------------- tables in files

MARKER = "<!-- zoo compare"
END_MARKER = "<!-- /zoo compare -->"


def markdown_from_options(options: dict) -> str:
    """The Markdown text of `zoo compare` with these parsed options (its parameters by name)."""
    comparison = compare(options["results_dir"], **{name: options[name] for name in SELECTION})
    return render(
        comparison, "markdown", per_run=options["per_run"], bench=options["bench"],
        per_class=options["per_class"],
    )  # fmt: skip


def refresh(path: Path, run_compare) -> bool:
    """Replace every block between `<!-- zoo compare ARGS -->` and `<!-- /zoo compare -->` in
    `path` with `run_compare(ARGS)` (Markdown); True when the file changed."""
    from zoo.results import atomic_write_bytes

    text = Path(path).read_text()
    out, position, changed = [], 0, False
    while (start := text.find(MARKER, position)) != -1:
        head_end = text.index("-->", start) + 3
        end = text.find(END_MARKER, head_end)
        if end == -1:
            raise ZooError(f"{path}: a `{MARKER} ...-->` block has no `{END_MARKER}` after it.")
        args = text[start + len(MARKER) : head_end - 3].split()
        block = "\n" + run_compare(args).strip() + "\n"
        out += [text[position:head_end], block]
        changed |= text[head_end:end] != block
        position = end
    out.append(text[position:])
    if changed:
        atomic_write_bytes(Path(path), "".join(out).encode())
    return changed
