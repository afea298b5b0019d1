"""The `zoo` command line: thin Typer commands that parse options, call one function of the
module that owns the work, and print what it returns."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zoo import options, progress, tables
from zoo.bench import Setting as BenchSetting
from zoo.compare import Selection
from zoo.config import Task, config_options, new_run_recipe, recipe_yaml, train_arguments
from zoo.console import err, out, print_rows, report_errors, say, say_err, user_errors, warn
from zoo.errors import ZooError
from zoo.options import anywhere, checkpoint_file, given_options, parse_command, text_or_none
from zoo.sweep import Search

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: fits 80 columns and pipes, no option cut short
    help="zoo: train, evaluate and compare small-image vision models.",
)


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


# ----------------------------------------------------------------------------- train, eval


@app.command()
@user_errors
@config_options
def train(
    context: typer.Context,
    model: options.TrainModelArgument = None,
    *,
    resume: options.ResumeOption = None,
    nproc: options.NprocOption = None,
    seeds: options.SeedsOption = None,
    config: options.RecipeFileOption = None,
    print_config: options.PrintConfigOption = False,
    **recipe,
):
    """Train MODEL and write its run record: config, history, metrics, figures, checkpoints."""
    model, recipe, given = train_arguments(
        model, recipe, given_options(context, recipe), recipe_file=config, resume=resume,
        print_config=print_config,
    )  # fmt: skip
    if print_config:
        text = recipe_yaml(new_run_recipe(model, recipe))
        return out.print(text, end="", highlight=False, markup=False)
    from zoo.run import train_seeds

    status = train_seeds(model, resume, recipe, given, seeds=seeds, nproc=nproc, console=err,
                         report=report_run)  # fmt: skip
    raise typer.Exit(status)


def report_run(record, is_main: bool) -> int:
    """A run done in this process (one of a torchrun job's, or the only one): its metrics, or
    why it stopped, from rank 0; the exit status for the shell."""
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
    source: options.SourceArgument,
    checkpoint: options.CheckpointOption = None,
    device: options.EvalDeviceOption = None,
    data_dir: options.DataDirOption = None,
):
    """Evaluate a run's checkpoint on val and test (rewriting its metrics.json and figures), or
    score published weights on the test split again and compare with the published metrics
    (exit status 1 when they differ)."""
    from zoo.publish import Rescored, evaluate_source

    result = evaluate_source(
        source, checkpoint=checkpoint_file(checkpoint), device=device,
        data_dir=text_or_none(data_dir), console=err, on_note=say_err,
    )  # fmt: skip
    if not isinstance(result, Rescored):
        return print_metrics(result)
    out.print(tables.rescored_table(result))
    if not result.reproduced:
        raise ZooError(result.verdict())
    say(result.verdict())


@app.command()
@user_errors
def predict(
    source: options.SourceArgument,
    images: Annotated[list[Path], typer.Argument(help="Image files to predict.")],
    out_dir: options.PredictOutOption = None,
    checkpoint: options.CheckpointOption = None,
    top_k: Annotated[int, typer.Option(help="Classes shown per image (classification).")] = 5,
    device: options.DeviceOption = "auto",
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
    pattern: options.PatternArgument = "*",
    task: options.TaskOption = None,
    format: options.FormatOption = options.RowFormat.table,
):
    """List the registered models."""
    from zoo.registry import list_models

    names = list_models(anywhere(pattern), task.value if task else None)
    print_rows(tables.model_rows(names), format, tables.models_table)


@app.command()
@user_errors
def datasets(format: options.FormatOption = options.RowFormat.table):
    """List the registered datasets."""
    from zoo.data import list_datasets

    print_rows(tables.dataset_rows(list_datasets()), format, tables.datasets_table)


@app.command()
@user_errors
def summary(
    model: Annotated[str, typer.Argument(help="Registry name (see `zoo list`).")],
    batch_size: Annotated[int, typer.Option(help="Batch size of the summary's input.")] = 1,
    input_size: options.InputSizeOption = None,
    depth: Annotated[int, typer.Option(help="Nesting depth of the layer table.")] = 3,
):
    """Layer table with output shapes, parameter counts and memory sizes (torchinfo)."""
    say(tables.model_summary(model, batch_size, input_size, depth))


# ----------------------------------------------------------------------------- sweep


sweep_app = typer.Typer(
    cls=options.SweepGroup,
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
    **space,
):
    """Tune MODEL's recipe with Optuna: every option takes a value, a range or choices; each
    trial is a normal run record. `zoo sweep MODEL` is short for `zoo sweep run MODEL`."""
    from zoo.sweep import run_sweep

    spec = search.spec(model, {name: value for name, value in space.items() if value is not None})
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
    storage: options.StorageOption = None,
    out_dir: options.SweepOutOption = Path("results"),
):
    """The study's trials, its best trial as a `zoo train` command, and Optuna's figures."""
    show_study(study, storage, out_dir)


def show_study(name: str, storage: str | None, out_dir: str | Path) -> None:
    from zoo.sweep import report_study

    report = report_study(name, storage, out_dir)
    for part in tables.study_table(report.rows, report.title, width=out.width):
        out.print(part)
    for line in report.lines:
        say(line)


# ----------------------------------------------------------------------------- compare, bench


@app.command("compare")
@user_errors
@config_options(config=Selection, into="selection")
def compare_(
    results_dir: options.ResultsDirArgument = Path("results"),
    format: options.CompareFormatOption = options.CompareFormat.table,
    out_file: options.CompareOutOption = None,
    per_run: options.PerRunOption = False,
    per_class: options.PerClassOption = "all",
    bench: options.BenchRowsOption = False,
    refresh: options.RefreshOption = None,
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
    if format is options.CompareFormat.html and out_file is None:
        raise ZooError("--format html writes a file: pass --out report.html.")
    comparison = comparing.compare(results_dir, **vars(selection))
    for line in comparison.skipped:
        warn(line)
    if format is options.CompareFormat.table:
        for part in comparing.render_tables(comparison, per_run=per_run, bench=bench,
                                            width=out.width):  # fmt: skip
            out.print(part)
        return
    text = comparing.render(
        comparison, format.value, per_run=per_run, bench=bench, per_class=per_class
    )
    if out_file is None:
        return say(text)
    from zoo.results import atomic_write_bytes

    atomic_write_bytes(out_file, text.encode())
    say_err(f"Wrote {out_file}")


def markdown_for(args: list[str]) -> str:
    """`zoo compare ARGS --format markdown`'s text, for the tables kept in README files: ARGS
    are parsed by the compare command's own options, so the two cannot disagree."""
    from zoo.compare import markdown_from_options

    return markdown_from_options(parse_command(app, "compare", args))


@app.command()
@user_errors
def explain(
    source: options.SourceArgument,
    images: options.ExplainImagesArgument = None,
    method: options.MethodOption = options.ExplainMethod.all,
    layer: options.LayerOption = None,
    target: options.TargetOption = None,
    out_dir: options.ExplainOutOption = None,
    checkpoint: options.CheckpointOption = None,
    device: options.DeviceOption = "auto",
    data_dir: options.DataDirOption = None,
    steps: options.StepsOption = 200,
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
    models: options.BenchModelsArgument = None,
    *,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered model.")] = False,
    task: Annotated[Task | None, typer.Option(help="With --all: only this task.")] = None,
    out_dir: options.BenchOutOption = Path("results/bench"),
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


weights_app = typer.Typer(
    cls=options.WeightsGroup,
    rich_markup_mode=None,
    help="zoo's published weights: list them (`zoo weights [PATTERN]`), or publish a run's.",
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@user_errors
def weights_list(
    pattern: options.PatternArgument = "*",
    all_versions: options.AllVersionsOption = False,
    format: options.FormatOption = options.RowFormat.table,
):
    """The published weights, one table per dataset: test metric, parameters, GFLOPs, file
    size and dtype (or "train to get weights"), and the recipe that trained them."""
    from zoo.weights import list_weights, published_root

    rows = tables.weights_rows(list_weights(anywhere(pattern), all_versions=all_versions))
    if format is not options.RowFormat.table:
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
    dtype: options.DtypeOption = options.StorageDtype.auto,
    file: options.FileOption = True,
    data_dir: options.DataDirOption = None,
    to: options.PublishToOption = None,
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
    source: options.SourceArgument,
    format: options.ExportFormatOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the export goes to.")],
    checkpoint: options.CheckpointOption = None,
    push: options.PushOption = None,
):
    """Export a run's checkpoint or published weights: ONNX (checked with onnxruntime), a
    torch.export program (.pt2), or a folder the Hugging Face Hub takes as it is."""
    from zoo.export import export

    say_err(f"Exporting {source} as {format.value}...")
    done = export(source, format.value, out_dir, checkpoint=checkpoint_file(checkpoint),
                  push_to=push)  # fmt: skip
    for line in done.lines:
        say(line)
