"""The `zoo` command line: thin Typer commands that parse options, call one function of the
module that owns the work, and print what it returns."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zoo import progress, tables
from zoo.bench import Setting as BenchSetting
from zoo.compare import Selection
from zoo.config import Task as TaskName
from zoo.config import TrainConfig, config_options, parse_seeds, read_recipe, recipe_yaml, to_flags
from zoo.errors import ZooError
from zoo.sweep import Search

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: fits 80 columns and pipes, no option cut short
    help="zoo: train, evaluate and compare small-image vision models.",
)
out = Console()
err = Console(stderr=True)


def choices(name: str, *values: str) -> type[Enum]:
    """An Enum of an option's choices, each member named and valued as typed."""
    return Enum(name, {value: value for value in values}, type=str)


Checkpoint = choices("Checkpoint", "best", "last")
RowFormat = choices("RowFormat", "table", "csv", "json")
# "all" and zoo.explain.METHODS (a test keeps them equal)
ExplainMethod = choices("ExplainMethod", "all", "saliency", "integrated-gradients", "gradcam",
                        "activation-max", "confused")  # fmt: skip
CompareFormat = choices("CompareFormat", "table", "markdown", "csv", "html")
StorageDtype = choices("StorageDtype", "auto", "float32", "float16")
ExportFormat = choices("ExportFormat", "onnx", "pt2", "hub")

# Arguments and options several commands share.
SourceArgument = Annotated[
    str,
    typer.Argument(
        help="A run folder written by `zoo train`, or a model name with published weights "
        "(e.g. unet-small, unet-small:cmp-facade; see `zoo weights`)."
    ),
]
CheckpointOption = Annotated[
    Checkpoint | None, typer.Option(help="A run folder's best or last checkpoint; default best.")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Data root; default: $ZOO_DATA, else ~/.cache/zoo/data.")
]
TaskOption = Annotated[TaskName | None, typer.Option(help="Only this task.")]
FormatOption = Annotated[RowFormat, typer.Option(help="table, or csv/json for scripts.")]
PatternArgument = Annotated[
    str, typer.Argument(help="Shell-style filter, e.g. 'unet*'; plain words match anywhere.")
]
StorageOption = Annotated[
    str | None, typer.Option(help="SQLAlchemy URL; default: sqlite file under OUT/sweeps/STUDY/.")
]


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"zoo {version('zoo')}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    context: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Print it."),
    ] = False,
) -> None:
    """zoo: train, evaluate and compare small-image vision models."""
    progress.show_warnings(err)  # a ZooWarning as one line
    context.with_resource(progress.reporting(err))  # every command's phases, on stderr


def say(text: str, console: Console = out) -> None:
    """One line as it is: no markup, no highlighting, no wrapping (paths stay whole)."""
    console.print(text, highlight=False, markup=False, soft_wrap=True)


def print_rows(rows: list[dict], format: RowFormat, table) -> None:
    """`rows` as the rich table `table(rows)` builds, or as CSV/JSON for scripts."""
    if format is RowFormat.table:
        out.print(table(rows))
    else:
        out.print(tables.rows_text(rows, format.value), end="", highlight=False, markup=False,
                  soft_wrap=True)  # fmt: skip


def user_errors(command):
    """Print a ZooError as one sentence on stderr and exit 1, instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ZooError as error:
            err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


say_err = functools.partial(say, console=err)


def warn(text: str) -> None:
    err.print(f"[yellow]Warning:[/yellow] {text}", highlight=False, soft_wrap=True)


def report_errors(errors: list) -> None:
    """Each error as one line on stderr; exit 1 when there was any."""
    for error in errors:
        err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(1)


def checkpoint_file(checkpoint: Checkpoint | None) -> str | None:
    return f"{checkpoint.value}.safetensors" if checkpoint else None


def text_or_none(path: Path | None) -> str | None:
    return str(path) if path else None


def anywhere(pattern: str) -> str:
    """A plain word matches anywhere in a name; a pattern with * ? [ is used as it is."""
    return pattern if any(char in pattern for char in "*?[") else f"*{pattern}*"


def given_options(context: typer.Context, options: dict) -> dict:
    """The options typed on the command line (not left at their defaults)."""
    return {
        name: value
        for name, value in options.items()
        if context.get_parameter_source(name).name == "COMMANDLINE"
    }


# ----------------------------------------------------------------------------- train, eval


@app.command()
@user_errors
@config_options
def train(
    context: typer.Context,
    model: Annotated[
        str | None, typer.Argument(help="Registry name, e.g. baseline-cnn (see `zoo list`).")
    ] = None,
    *,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Go on with this run folder from its last saved epoch, with its own recipe "
            "(--epochs may grow)."
        ),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(help="Train with N processes on this machine (torchrun; gloo on CPU)."),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds: the same recipe once per seed (e.g. 0,1,2)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="Recipe file (YAML/JSON, or a run's config.json); options override."),
    ] = None,
    print_config: Annotated[
        bool, typer.Option("--print-config", help="Print the resolved recipe as YAML; no run.")
    ] = False,
    **options,
):
    """Train MODEL and write its run record: config, history, metrics, figures, checkpoints."""
    from zoo.registry import get_model_entry

    given = given_options(context, options)
    if config is not None:
        if resume is not None:
            raise ZooError("--resume goes on with the run's own recipe: drop --config.")
        recipe = read_recipe(config)
        model = model or recipe.get("model")
        given = {**{k: v for k, v in recipe.items() if k != "model"}, **given}
        options = {**options, **given}
    if model is None and resume is None:
        raise ZooError("Name the model to train (e.g. `zoo train baseline-cnn`), or pass --resume.")
    if model is None and print_config:
        raise ZooError("--print-config prints a new run's recipe: name the model, not --resume.")
    if model is not None:
        entry = get_model_entry(model)  # a misspelt name: its close matches, before any work
    if print_config:
        resolved = TrainConfig(model=model, **options).resolve(entry.task, entry.dataset)
        out.print(recipe_yaml(resolved), end="", highlight=False, markup=False)
        return
    if seeds is not None and ("seed" in given or resume is not None):
        raise ZooError("--seeds runs one run per seed: drop --seed and --resume with it.")
    codes = []
    for seed in [None] if seeds is None else parse_seeds(seeds):
        if seed is not None:
            options, given = {**options, "seed": seed}, {**given, "seed": seed}
        if nproc is not None and nproc > 1:
            from zoo.distributed import launch

            again = [model] * bool(model) + ["--resume", str(resume)] * bool(resume)
            codes.append(launch(nproc, ["train", *again, *to_flags(given)]))
        else:
            codes.append(train_once(model, resume, options, given))
    raise typer.Exit(max(codes, key=lambda code: (code != 0, code)))


def train_once(model: str | None, resume: Path | None, options: dict, given: dict) -> int:
    """One run (or one process of a torchrun job); the exit status for the shell."""
    from zoo.run import train_or_resume

    record, is_main = train_or_resume(model, resume, options, given, console=err)
    if not is_main:
        return 0 if record.status == "completed" else 1
    if record.status != "completed":
        err.print(f"[red]{record.message}[/red]", highlight=False, soft_wrap=True)
        return 130 if record.status == "interrupted" else 1
    print_metrics(record)
    out.print(f"Run record: {record.run_dir}")
    return 0


def print_metrics(record) -> None:
    """A run's per-class table and overall scores, and what the reader should know about them."""
    out.print(tables.metrics_table(record))
    if record.test.get("ap_method", "exact") != "exact":
        out.print(f"AP computed from {record.test['ap_method']}, not exactly.")
    if record.skipped_samples:
        out.print(f"{len(record.skipped_samples)} bad samples were left out (see metrics.json).")


@app.command("eval")
@user_errors
def eval_(
    source: SourceArgument,
    checkpoint: CheckpointOption = None,
    device: Annotated[
        str | None,
        typer.Option(help="Default: the run's device setting; published weights: the CPU."),
    ] = None,
    data_dir: DataDirOption = None,
):
    """Evaluate a run's checkpoint on val and test (rewriting its metrics.json and figures), or
    score published weights on the test split again and compare with the published metrics
    (exit status 1 when they differ)."""
    from zoo.runtime import resolve_device
    from zoo.weights import source_weights

    resolved = resolve_device(device) if device else None
    found = source_weights(source)
    if found is None:
        from zoo.evaluate import evaluate_run

        record = evaluate_run(
            source, checkpoint=checkpoint_file(checkpoint or Checkpoint.best), device=resolved,
            data_dir=text_or_none(data_dir), console=err,
        )  # fmt: skip
        return print_metrics(record)
    if checkpoint is not None:
        raise ZooError(
            f"--checkpoint picks a run folder's checkpoint, and {source} is published weights "
            "(one file); drop --checkpoint."
        )
    from zoo.publish import rescore

    say_err(f"Scoring {found.ref} on the {found.dataset} test split...")
    rescored = rescore(found, device=resolved, data_dir=text_or_none(data_dir))
    out.print(tables.rescored_table(rescored))
    if not rescored.reproduced:
        raise ZooError(rescored.verdict())
    say(rescored.verdict())


@app.command()
@user_errors
def predict(
    source: SourceArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files to predict.")],
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Where masks go; default RUN_DIR/predictions (published: predictions/)."
        ),
    ] = None,
    checkpoint: CheckpointOption = None,
    top_k: Annotated[int, typer.Option(help="Classes shown per image (classification).")] = 5,
    device: DeviceOption = "auto",
):
    """Predict IMAGES with a run's checkpoint or published weights: top-k classes, or a
    colour-coded mask + overlay."""
    from zoo.predict import predict_files
    from zoo.runtime import resolve_device

    predictions, errors = predict_files(
        source, images, out_dir=out_dir, checkpoint=checkpoint_file(checkpoint),
        device=resolve_device(device), top_k=top_k,
    )  # fmt: skip
    for prediction in predictions:
        say(str(prediction))
    report_errors(errors)


# ----------------------------------------------------------------------------- listings


@app.command("list")
@user_errors
def list_(
    pattern: PatternArgument = "*", task: TaskOption = None, format: FormatOption = RowFormat.table
):
    """List the registered models."""
    from zoo.registry import list_models

    names = list_models(anywhere(pattern), task.value if task else None)
    print_rows(tables.model_rows(names), format, tables.models_table)


@app.command()
@user_errors
def datasets(format: FormatOption = RowFormat.table):
    """List the registered datasets."""
    from zoo.data import list_datasets

    print_rows(tables.dataset_rows(list_datasets()), format, tables.datasets_table)


@app.command()
@user_errors
def summary(
    model: Annotated[str, typer.Argument(help="Registry name (see `zoo list`).")],
    batch_size: Annotated[int, typer.Option(help="Batch size of the summary's input.")] = 1,
    input_size: Annotated[
        int | None, typer.Option(help="Square input side; default: the dataset's.")
    ] = None,
    depth: Annotated[int, typer.Option(help="Nesting depth of the layer table.")] = 3,
):
    """Layer table with output shapes, parameter counts and memory sizes (torchinfo)."""
    say(tables.model_summary(model, batch_size, input_size, depth))


# ----------------------------------------------------------------------------- sweep


class DefaultCommandGroup(typer.core.TyperGroup):
    """A group whose `default` subcommand may go unnamed: `zoo sweep MODEL ...` is `zoo sweep
    run MODEL ...` and `zoo weights [PATTERN]` is `zoo weights list ...`, while a named
    subcommand (`zoo sweep show STUDY`) is itself."""

    default = ""

    def parse_args(self, context, args):
        if (args or not self.no_args_is_help) and (
            not args or args[0] not in (*self.commands, "--help", "-h")
        ):
            args = [self.default, *args]
        return super().parse_args(context, args)


class SweepGroup(DefaultCommandGroup):
    default = "run"


sweep_app = typer.Typer(
    cls=SweepGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Tune a recipe with Optuna (`zoo sweep MODEL ...`), or report a study (`show`).",
)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("run")
@user_errors
@config_options(searchable=True)
@config_options(config=Search, into="search")
def sweep_run(
    model: Annotated[str, typer.Argument(help="Registry name to tune (see `zoo list`).")],
    search: Search,
    **options,
):
    """Tune MODEL's recipe with Optuna: every option takes a value, a range or choices; each
    trial is a normal run record. `zoo sweep MODEL` is short for `zoo sweep run MODEL`."""
    from zoo.sweep import run_sweep

    spec = search.spec(model, {name: value for name, value in options.items() if value is not None})
    say_err(spec.describe())
    interrupted = run_sweep(spec, workers=search.workers, console=err)
    show_study(spec.study, spec.storage, spec.base.out)
    if interrupted:
        err.print("[red]Interrupted by Ctrl-C; the finished trials are saved. Run the same "
                  "command to go on.[/red]", highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(130)


@sweep_app.command("show")
@user_errors
def sweep_show(
    study: Annotated[str, typer.Argument(help="Its name, e.g. baseline-cnn-fashion-mnist.")],
    storage: StorageOption = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="The results folder the sweep wrote to.")
    ] = Path("results"),
):
    """The study's trials, its best trial as a `zoo train` command, and Optuna's figures."""
    show_study(study, storage, out_dir)


def show_study(name: str, storage: str | None, out_dir: str | Path) -> None:
    from zoo.sweep import report_study

    report = report_study(name, storage, out_dir)
    out.print(tables.study_table(report.rows, report.title))
    for line in report.lines:
        say(line)


# ----------------------------------------------------------------------------- compare, bench


@app.command("compare")
@user_errors
@config_options(config=Selection, into="selection")
def compare_(
    results_dir: Annotated[
        Path, typer.Argument(help="A folder of run records and bench files.")
    ] = Path("results"),
    format: Annotated[CompareFormat, typer.Option(help="Output format.")] = CompareFormat.table,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of stdout (html: required).")
    ] = None,
    per_run: Annotated[
        bool, typer.Option(help="One row per run (folder, seed, commit) instead of per recipe.")
    ] = False,
    bench: Annotated[
        bool,
        typer.Option(
            "--bench",
            help="The bench rows instead: per device, each model's images/s in every precision "
            "measured and the speed-up over fp32.",
        ),
    ] = False,
    refresh: Annotated[
        list[Path] | None,
        typer.Option(help="Regenerate the `<!-- zoo compare ARGS -->` tables in this file."),
    ] = None,
    *,
    selection: Selection,
):
    """Compare runs and bench rows per dataset: scores (mean ± std over seeds), per-class
    scores, parameters, FLOPs, throughput, memory; as a table, Markdown, CSV or an HTML report."""
    from zoo import compare as comparing

    for path in refresh or []:
        changed = comparing.refresh(path, markdown_for)
        say_err(f"{path}: {'updated' if changed else 'up to date'}")
    if refresh:
        return
    if format is CompareFormat.html and out_file is None:
        raise ZooError("--format html writes a file: pass --out report.html.")
    comparison = comparing.compare(results_dir, **vars(selection))
    for line in comparison.skipped:
        warn(line)
    if format is CompareFormat.table:
        for part in comparing.render_tables(comparison, per_run=per_run, bench=bench,
                                            width=out.width):  # fmt: skip
            out.print(part)
        return
    text = comparing.render(comparison, format.value, per_run=per_run, bench=bench)
    if out_file is None:
        return say(text)
    from zoo.results import atomic_write_bytes

    atomic_write_bytes(out_file, text.encode())
    say_err(f"Wrote {out_file}")


def markdown_for(args: list[str]) -> str:
    """`zoo compare ARGS --format markdown`'s text, for the tables kept in README files: ARGS
    are parsed by the compare command's own options, so the two cannot disagree."""
    from zoo import compare as comparing

    group = typer.main.get_command(app)
    command = group.get_command(typer.Context(group), "compare")
    try:
        options = command.make_context("zoo compare", list(args)).params
    except typer.BadParameter.__base__ as error:  # click's UsageError, whichever click Typer uses
        raise ZooError(f"`zoo compare {' '.join(args)}`: {error.format_message()}") from None
    selection = {name: options[name] for name in vars(Selection())}
    comparison = comparing.compare(options["results_dir"], **selection)
    return comparing.render(
        comparison, "markdown", per_run=options["per_run"], bench=options["bench"]
    )


@app.command()
@user_errors
def explain(
    source: SourceArgument,
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Images to explain; default: the test examples of the run's figures."),
    ] = None,
    method: Annotated[ExplainMethod, typer.Option(help="What to draw.")] = ExplainMethod.all,
    layer: Annotated[
        str | None,
        typer.Option(help="Conv layer for Grad-CAM and channel images; default: the last conv."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Class (name or index) to explain; default: the predicted one (segmentation: "
            "the class with the lowest test AP)."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where figures go; default RUN_DIR/figures/explain (published: explain/MODEL).",
        ),
    ] = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "auto",
    data_dir: DataDirOption = None,
    steps: Annotated[
        int, typer.Option(min=1, help="Gradient-ascent steps of activation-max.")
    ] = 200,
):
    """What a trained network looks at (saliency, integrated gradients, Grad-CAM with Captum),
    what its classes and channels respond to (activation maximisation), and which classes it
    confuses."""
    from zoo.explain import explain_run
    from zoo.runtime import resolve_device

    done = explain_run(
        source, images or [], method=method.value, layer=layer, target=target, out=out_dir,
        checkpoint=checkpoint_file(checkpoint), device=resolve_device(device),
        data_dir=text_or_none(data_dir), steps=steps,
    )  # fmt: skip
    for line in [*done.lines, *(f"Figure: {path}" for path in done.figures)]:
        say(line)
    report_errors(done.errors)


@app.command()
@user_errors
@config_options(config=BenchSetting, into="setting")
def bench(
    models: Annotated[
        list[str] | None, typer.Argument(help="Registry names; or --all.", show_default=False)
    ] = None,
    *,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered model.")] = False,
    task: Annotated[TaskName | None, typer.Option(help="With --all: only this task.")] = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Bench files' folder (rows merge into existing files).")
    ] = Path("results/bench"),
    setting: BenchSetting,
):
    """Throughput, latency (median, p90, p99, IQR), peak memory, FLOPs and FLOP utilisation of
    models on synthetic input, each in a fresh process; rows are merged into one CSV/JSON per
    setting."""
    from zoo import bench as benching

    names = benching.select_models(models, all_models, task, setting.dataset)

    def on_row(row: dict) -> None:
        err.print(benching.progress_line(row), style="red" if row["error"] else None,
                  highlight=False, markup=False)  # fmt: skip

    try:
        rows = benching.run_bench(
            names, setting, out_dir, on_row=on_row, on_note=say_err, on_warning=warn
        )
    except KeyboardInterrupt:
        err.print("[red]Interrupted: the rows measured so far are in the bench files; rows not "
                  "reached are unchanged.[/red]")  # fmt: skip
        raise typer.Exit(130) from None
    out.print(benching.result_table(rows, width=out.width))


# ----------------------------------------------------------------------------- weights, export


class WeightsGroup(DefaultCommandGroup):
    default = "list"


weights_app = typer.Typer(
    cls=WeightsGroup,
    rich_markup_mode=None,
    help="zoo's published weights: list them (`zoo weights [PATTERN]`), or publish a run's.",
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@user_errors
def weights_list(
    pattern: PatternArgument = "*",
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version, not only the newest.")
    ] = False,
    format: FormatOption = RowFormat.table,
):
    """The published weights, one table per dataset: test metric, parameters, GFLOPs, file
    size and dtype (or "train to get weights"), and the recipe that trained them."""
    from zoo.weights import list_weights, published_root

    rows = tables.weights_rows(list_weights(anywhere(pattern), all_versions=all_versions))
    if format is not RowFormat.table:
        return print_rows(rows, format, None)
    if not rows:
        out.print(f"No published weights match {anywhere(pattern)!r} (in {published_root()}).")
    for part in tables.weights_tables(rows, width=out.width) if rows else []:
        out.print(part)


@weights_app.command("publish")
@user_errors
def weights_publish(
    run_dir: Annotated[Path, typer.Argument(help="A completed run folder with best.safetensors.")],
    note: Annotated[str, typer.Option(help="What changed in this version (for the changelog).")],
    dtype: Annotated[
        StorageDtype,
        typer.Option(
            help="auto: float16 when its test scores are within 0.001 of float32's, else float32."
        ),
    ] = StorageDtype.auto,
    file: Annotated[
        bool,
        typer.Option(help="--no-file lists the version with its recipe and metrics only."),
    ] = True,
    data_dir: DataDirOption = None,
    to: Annotated[
        Path | None, typer.Option(help="Published-weights folder; default zoo/published/.")
    ] = None,
):
    """Publish a run's best checkpoint as the next version of its model's weights: scored on the
    test split (CPU, fp32), written with its metadata, and added to the changelog. An existing
    version is never replaced."""
    from zoo.publish import publish, published_line

    found = publish(
        run_dir, note, dtype=dtype.value, with_file=file, root=to, on_progress=say_err,
        data_dir=text_or_none(data_dir),
    )  # fmt: skip
    say(published_line(found))


@app.command("export")
@user_errors
def export_(
    source: SourceArgument,
    format: Annotated[
        ExportFormat,
        typer.Option(help="onnx, pt2 (torch.export: C++, mobile) or hub (Hugging Face folder)."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the export goes to.")],
    checkpoint: CheckpointOption = None,
    push: Annotated[
        str | None,
        typer.Option(help="With --format hub: upload the folder to this Hub repo (needs a token)."),
    ] = None,
):
    """Export a run's checkpoint or published weights: ONNX (checked with onnxruntime), a
    torch.export program (.pt2), or a folder the Hugging Face Hub takes as it is."""
    from zoo.export import export

    say_err(f"Exporting {source} as {format.value}...")
    done = export(source, format.value, out_dir, checkpoint=checkpoint_file(checkpoint),
                  push_to=push)  # fmt: skip
    for line in done.lines:
        say(line)
