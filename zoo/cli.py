"""The `zoo` command line: thin Typer commands that parse options and call zoo's functions."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zoo import progress, tables
from zoo.config import AmpDtype, TrainConfig, read_recipe, to_flags
from zoo.errors import ZooError, ZooWarning
from zoo.sweep import Pruner, Sampler

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: fits 80 columns and pipes, no option cut short
    help="zoo: train, evaluate and compare small-image vision models.",
)
out = Console()
err = Console(stderr=True)


class TaskName(str, Enum):
    classification = "classification"
    segmentation = "segmentation"


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


class RowFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class ExplainMethod(str, Enum):  # "all" and zoo.explain.METHODS (a test keeps them equal)
    all = "all"
    saliency = "saliency"
    integrated_gradients = "integrated-gradients"
    gradcam = "gradcam"
    activation_max = "activation-max"
    confused = "confused"


# Arguments and options several commands share.
SourceArgument = Annotated[
    str,
    typer.Argument(
        help="A run folder written by `zoo train`, or a model name with published weights "
        "(e.g. unet-small, unet-small:cmp-facade; see `zoo weights`)."
    ),
]
SourceCheckpointOption = Annotated[
    Checkpoint | None, typer.Option(help="A run folder's best or last checkpoint; default best.")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Data root; default: $ZOO_DATA, else ~/.cache/zoo/data.")
]
TaskOption = Annotated[TaskName | None, typer.Option(help="Only this task.")]
FormatOption = Annotated[RowFormat, typer.Option(help="table, or csv/json for scripts.")]
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
    show_zoo_warnings_in_one_line()
    context.with_resource(progress.reporting(err))  # every command's phases, on stderr


def show_zoo_warnings_in_one_line() -> None:
    """A ZooWarning prints as `Warning: ...` on stderr; other warnings keep Python's format."""
    import warnings

    python_format = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, ZooWarning):
            err.print(f"[yellow]Warning:[/yellow] {message}", highlight=False, soft_wrap=True)
        else:
            python_format(message, category, *args, **kwargs)

    warnings.showwarning = show


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


def config_options(command=None, *, searchable: bool = False):
    """Give a Typer command one option per TrainConfig field but `model`, named as the field,
    with its type, default and help (so `zoo train --lr` is `TrainConfig.lr`, and choices are the
    config's enums). The command receives them as keyword arguments of the same names.

    `searchable=True` (zoo sweep) makes each option text that may also hold a range or choices,
    None when not given."""
    if command is None:
        return functools.partial(config_options, searchable=searchable)
    hints = typing.get_type_hints(TrainConfig)
    own_hints = typing.get_type_hints(command, include_extras=True)  # Annotated[...] kept
    parameters = [
        parameter.replace(annotation=own_hints.get(parameter.name, parameter.annotation))
        for parameter in inspect.signature(command).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":
            continue
        kind, default, help = hints[field.name], field.default, field.metadata["help"]
        if typing.get_origin(kind) is tuple:  # repeatable: --logger tensorboard --logger mlflow
            kind, default = list[str], list(default)
        if searchable:
            kind, default = str | None, None
            help += " A value, a range low:high[:log], or choices a,b,c."
        parameters.append(
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[kind, typer.Option(help=help)],
            )
        )

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, **kwargs)

    wrapper.__signature__ = inspect.Signature(parameters)
    return wrapper


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
    given = given_options(context, options)
    if config is not None:
        if resume is not None:
            raise ZooError("--resume goes on with the run's own recipe: drop --config.")
        recipe = read_recipe(config)
        model = model or recipe.get("model")
        given = {**{k: v for k, v in recipe.items() if k != "model"}, **given}
        options = {**options, **given}
    if resume is None and model is None:
        raise ZooError("Name the model to train (e.g. `zoo train baseline-cnn`), or pass --resume.")
    if print_config:
        out.print(resolved_recipe(model, options), end="", highlight=False, markup=False)
        return
    seed_list = parse_seeds(seeds, given, resume)
    codes = []
    for seed in seed_list:
        if seed is not None:
            options, given = {**options, "seed": seed}, {**given, "seed": seed}
        if nproc is not None and nproc > 1:
            from zoo.distributed import launch

            again = [model] * bool(model) + ["--resume", str(resume)] * bool(resume)
            codes.append(launch(nproc, ["train", *again, *to_flags(given)]))
        else:
            codes.append(train_once(model, resume, options, given))
    raise typer.Exit(max(codes, key=lambda code: (code != 0, code)))


def resolved_recipe(model: str, options: dict) -> str:
    """The recipe `zoo train` would run, the model's defaults filled in, as YAML."""
    import yaml

    from zoo.registry import get_model_entry

    entry = get_model_entry(model)
    config = TrainConfig(model=model, **options).resolve(entry.task, entry.dataset)
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def parse_seeds(seeds: str | None, given: dict, resume: Path | None) -> list[int | None]:
    """--seeds 0,1,2 -> [0, 1, 2]; without it one run with --seed (None: as given)."""
    if seeds is None:
        return [None]
    if "seed" in given or resume is not None:
        raise ZooError("--seeds runs one run per seed: drop --seed and --resume with it.")
    try:
        values = [int(part) for part in seeds.split(",") if part.strip()]
    except ValueError:
        raise ZooError(f"--seeds takes comma-separated integers (0,1,2), got {seeds!r}.") from None
    if not values or len(set(values)) != len(values):
        raise ZooError(f"--seeds needs distinct seeds, e.g. 0,1,2; got {seeds!r}.")
    return values


def train_once(model: str | None, resume: Path | None, options: dict, given: dict) -> int:
    """One run (or one process of a torchrun job); the exit status for the shell."""
    from zoo.distributed import Ranks
    from zoo.run import resume_run, train_run
    from zoo.runtime import resolve_device

    ranks = Ranks.from_environment(resolve_device(options["device"]).type)
    try:
        if resume is not None:
            if model is not None:
                given["model"] = model
            record = resume_run(resume, changes=given, console=err, ranks=ranks)
        else:
            record = train_run(TrainConfig(model=model, **options), console=err, ranks=ranks)
    finally:
        ranks.shutdown()
    if not ranks.is_main:
        return 0 if record.status == "completed" else 1
    if record.status != "completed":
        err.print(f"[red]{record.message}[/red]", highlight=False, soft_wrap=True)
        return 130 if record.status == "interrupted" else 1
    print_metrics(record)
    out.print(f"Run record: {record.run_dir}")
    return 0


def given_options(context: typer.Context, options: dict) -> dict:
    """The options typed on the command line (not left at their defaults)."""
    return {
        name: value
        for name, value in options.items()
        if context.get_parameter_source(name).name == "COMMANDLINE"
    }


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
    checkpoint: SourceCheckpointOption = None,
    device: Annotated[
        str | None,
        typer.Option(help="Default: the run's device setting; published weights: the CPU."),
    ] = None,
    data_dir: DataDirOption = None,
):
    """Evaluate a run's checkpoint on val and test (rewriting its metrics.json and figures), or
    score published weights on the test split again and compare with the published metrics."""
    from zoo.runtime import resolve_device
    from zoo.weights import source_weights

    resolved = resolve_device(device) if device else None
    found = source_weights(source)
    if found is not None:
        from zoo.publish import rescore

        if checkpoint is not None:
            raise ZooError(
                f"--checkpoint picks a run folder's checkpoint, and {source} is published "
                "weights (one file); drop --checkpoint."
            )
        err.print(f"Scoring {found.ref} on the {found.dataset} test split...", highlight=False)
        rescored = rescore(found, device=resolved, data_dir=str(data_dir) if data_dir else None)
        out.print(tables.rescored_table(rescored))
        out.print(rescored_verdict(rescored), highlight=False, soft_wrap=True)
        return
    from zoo.evaluate import evaluate_run

    record = evaluate_run(
        source,
        checkpoint=f"{(checkpoint or Checkpoint.best).value}.safetensors",
        device=resolved,
        data_dir=str(data_dir) if data_dir else None,
        console=err,
    )
    print_metrics(record)


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
    checkpoint: SourceCheckpointOption = None,
    top_k: Annotated[int, typer.Option(help="Classes shown per image (classification).")] = 5,
    device: DeviceOption = "auto",
):
    """Predict IMAGES with a run's checkpoint or published weights: top-k classes, or a
    colour-coded mask + overlay."""
    from zoo.predict import predict_files
    from zoo.runtime import resolve_device

    predictions, errors = predict_files(
        source,
        images,
        out_dir=out_dir,
        checkpoint=f"{checkpoint.value}.safetensors" if checkpoint else None,
        device=resolve_device(device),
        top_k=top_k,
    )
    for prediction in predictions:
        if prediction.mask is not None:
            out.print(f"{prediction.image}: {prediction.mask}, {prediction.overlay}")
        else:
            top = ", ".join(f"{name} {p:.3f}" for name, p in prediction.top_classes)
            out.print(f"{prediction.image}: {top}", highlight=False)
    report_errors(errors)


def report_errors(errors: list) -> None:
    """Each error as one line on stderr; exit 1 when there was any."""
    for error in errors:
        err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(1)


@app.command("list")
@user_errors
def list_(
    pattern: Annotated[
        str, typer.Argument(help="Shell-style filter, e.g. 'unet*'; plain words match anywhere.")
    ] = "*",
    task: TaskOption = None,
    format: FormatOption = RowFormat.table,
):
    """List the registered models."""
    from zoo.registry import list_models

    if not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    names = list_models(pattern, task.value if task else None)
    print_rows(tables.model_rows(names), format, tables.models_table)


@app.command()
@user_errors
def datasets(
    format: FormatOption = RowFormat.table,
):
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
    import torchinfo

    from zoo.data import get_dataset_info
    from zoo.registry import create_model, get_model_entry

    info = get_dataset_info(get_model_entry(model).dataset)
    height, width = (input_size, input_size) if input_size else info.image_size
    stats = torchinfo.summary(
        create_model(model),
        input_size=(batch_size, info.in_chans, height, width),
        col_names=("output_size", "num_params"),
        depth=depth,
        verbose=0,
    )
    out.print(str(stats), highlight=False)


class DefaultRunGroup(typer.core.TyperGroup):
    """A group whose `run` subcommand may go unnamed: `zoo sweep MODEL ...` is
    `zoo sweep run MODEL ...`, while `zoo sweep show STUDY` is its own subcommand."""

    def resolve_command(self, context, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().resolve_command(context, args)


sweep_app = typer.Typer(
    cls=DefaultRunGroup,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Tune a recipe with Optuna (`zoo sweep MODEL ...`), or report a study (`show`).",
)
app.add_typer(sweep_app, name="sweep")


@sweep_app.command("run")
@user_errors
@config_options(searchable=True)
def sweep_run(
    model: Annotated[str, typer.Argument(help="Registry name to tune (see `zoo list`).")],
    *,
    trials: Annotated[int, typer.Option(help="Finished trials the study should have.")] = 20,
    space: Annotated[
        Path | None, typer.Option(help="JSON/YAML file: option -> range or choices.")
    ] = None,
    sampler: Annotated[Sampler, typer.Option(help="grid searches choices only.")] = Sampler.tpe,
    pruner: Annotated[Pruner, typer.Option(help="Pruning rule.")] = Pruner.median,
    metric: Annotated[
        str | None,
        typer.Option(help="Validation column to optimise; default: the task's (val_accuracy)."),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name; an existing one is joined. Default MODEL-DATA.")
    ] = None,
    storage: StorageOption = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    **options,
):
    """Tune MODEL's recipe with Optuna: every option takes a value, a range or choices; each
    trial is a normal run record. `zoo sweep MODEL` is short for `zoo sweep run MODEL`."""
    from zoo import sweep as sweeps

    given = {name: value for name, value in options.items() if value is not None}
    spec = sweeps.make_spec(
        model, given, space_file=space, trials=trials, sampler=sampler.value,
        pruner=pruner.value, metric=metric, study=study, storage=storage,
    )  # fmt: skip
    err.print(
        f"Sweep {spec.study} ({spec.storage}): {spec.trials} trials of {spec.base.model} on "
        f"{spec.base.dataset}, {spec.sampler} sampler, {spec.pruner} pruning, "
        f"{spec.direction} {spec.metric}; searching "
        + ", ".join(f"{p.name} {p.text()}" for p in spec.params),
        highlight=False,
        soft_wrap=True,
    )
    interrupted = sweeps.run_sweep(spec, workers=workers, console=err)
    show_study(spec.study, spec.storage, spec.base.out)
    if interrupted:
        err.print(
            "[red]Interrupted by Ctrl-C; the finished trials are saved. Run the same command to "
            "go on.[/red]",
            highlight=False,
            soft_wrap=True,
        )
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
    show_study(study, storage, str(out_dir))


def show_study(name: str, storage: str | None, out_dir: str) -> None:
    from zoo import sweep as sweeps

    storage = storage or f"sqlite:///{sweeps.study_folder(out_dir, name) / 'study.db'}"
    found = sweeps.load_study(name, storage)
    title = f"study {name}: {found.user_attrs.get('metric')} ({found.direction.name})"
    out.print(tables.study_table(sweeps.trial_rows(found), title))
    if sweeps.best_value(found) is None:
        out.print("No trial has completed yet.")
        return
    best = found.best_trial
    out.print(f"Best: trial {best.number}, {found.user_attrs.get('metric')} {best.value:.4f}")
    out.print(sweeps.train_command(found, best), highlight=False, soft_wrap=True)
    folder = sweeps.study_folder(out_dir, name) / "figures"
    for path in sweeps.write_figures(found, folder):
        out.print(f"Figure: {path}", highlight=False, soft_wrap=True)


class CompareFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    csv = "csv"
    html = "html"


@app.command("compare")
@user_errors
def compare_(
    results_dir: Annotated[
        Path, typer.Argument(help="A folder of run records and bench files.")
    ] = Path("results"),
    task: TaskOption = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    model: Annotated[str | None, typer.Option(help="Only models matching this pattern.")] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            help="model, n, params, train_img_s, bench_img_s, latency_ms, "
            "mfu, val or test (default: test score, best first)."
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Show each row's difference to this model (Welch's t-test).")
    ] = None,
    format: Annotated[CompareFormat, typer.Option(help="Output format.")] = CompareFormat.table,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write here instead of stdout (html: required).")
    ] = None,
    trials: Annotated[bool, typer.Option(help="Include sweep trials (tagged runs).")] = True,
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
):
    """Compare runs and bench rows per dataset: scores (mean ± std over seeds), per-class
    scores, parameters, FLOPs, throughput, memory; as a table, Markdown, CSV or an HTML report."""
    from zoo import compare as comparing

    if refresh:
        for path in refresh:
            changed = comparing.refresh(path, markdown_for)
            err.print(f"{path}: {'updated' if changed else 'up to date'}", highlight=False)
        return
    if format is CompareFormat.html and out_file is None:
        raise ZooError("--format html writes a file: pass --out report.html.")
    comparison = comparing.compare(
        results_dir, task=task, dataset=dataset, model=model, sort=sort, baseline=baseline,
        trials=trials,
    )  # fmt: skip
    for line in comparison.skipped:
        err.print(f"[yellow]Warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    if format is CompareFormat.table:
        width = out.width
        for part in comparing.render_tables(comparison, per_run=per_run, bench=bench, width=width):
            out.print(part)
        return
    text = comparing.render(comparison, format.value, per_run=per_run, bench=bench)
    if out_file is None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)
    else:
        from zoo.results import atomic_write_bytes

        atomic_write_bytes(out_file, text.encode())
        err.print(f"Wrote {out_file}", highlight=False)


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
    filters = ("task", "dataset", "model", "sort", "baseline", "trials")
    comparison = comparing.compare(options["results_dir"], **{k: options[k] for k in filters})
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
    checkpoint: SourceCheckpointOption = None,
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
        checkpoint=f"{checkpoint.value}.safetensors" if checkpoint else None,
        device=resolve_device(device),
        data_dir=str(data_dir) if data_dir else None, steps=steps,
    )  # fmt: skip
    for line in done.lines:
        out.print(line, highlight=False, soft_wrap=True)
    for path in done.figures:
        out.print(f"Figure: {path}", highlight=False, soft_wrap=True)
    report_errors(done.errors)


class BenchMode(str, Enum):
    infer = "infer"
    train = "train"
    both = "both"


@app.command()
@user_errors
def bench(
    models: Annotated[
        list[str] | None, typer.Argument(help="Registry names; or --all.", show_default=False)
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered model.")] = False,
    task: Annotated[TaskName | None, typer.Option(help="With --all: only this task.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Input size and classes of this dataset; default: each model's."),
    ] = None,
    amp: Annotated[bool, typer.Option(help="Mixed precision (CUDA; CPU only bf16).")] = False,
    amp_dtype: Annotated[AmpDtype, typer.Option(help="Autocast dtype.")] = AmpDtype.float16,
    channels_last: Annotated[bool, typer.Option(help="NHWC memory format.")] = True,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile (its time reported apart).")
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Images per batch; default 128, segmentation 8.")
    ] = None,
    img_size: Annotated[
        int | None, typer.Option(min=1, help="Square input side; default the dataset's.")
    ] = None,
    mode: Annotated[
        BenchMode, typer.Option(help="Inference, training step, or both.")
    ] = BenchMode.both,
    device: DeviceOption = "auto",
    repeats: Annotated[int, typer.Option(min=1, help="Timed repeats; all are kept.")] = 3,
    budget: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds of timed iterations per model and mode, split evenly over the repeats; "
            "whatever the budget, each repeat times at least ceil(6/repeats) iterations.",
        ),
    ] = 6.0,
    retry: Annotated[bool, typer.Option(help="Halve the batch on CUDA out-of-memory.")] = True,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Bench files' folder (rows merge into existing files).")
    ] = Path("results/bench"),
):
    """Throughput, latency (median, p90, p99, IQR), peak memory, FLOPs and FLOP utilisation of
    models on synthetic input, each in a fresh process; rows are merged into one CSV/JSON per
    setting."""
    from zoo import bench as benching
    from zoo.results import check_writable
    from zoo.runtime import resolve_device, resolve_precision

    names = benching.select_models(models, all_models, task, dataset)
    resolved = resolve_device(device)
    precision = resolve_precision(resolved, amp, amp_dtype.value)
    if precision.warning:
        err.print(f"[yellow]Warning:[/yellow] {precision.warning}", highlight=False)
    check_writable(out_dir)
    modes = ("infer", "train") if mode is BenchMode.both else (mode.value,)
    err.print(
        f"Benchmarking {len(names)} models ({', '.join(modes)}) on {resolved}, {precision.label}, "
        f"{'nhwc' if channels_last else 'nchw'}; synthetic inputs on the device, data loading "
        f"not measured; {budget:g} s per model and mode -> {out_dir}",
        highlight=False,
        soft_wrap=True,
    )
    setting = dict(
        device=str(resolved), amp=amp, amp_dtype=amp_dtype.value, channels_last=channels_last,
        compile=compile, batch_size=batch_size, img_size=img_size, dataset=dataset,
        repeats=repeats, budget=budget, retry=retry,
    )  # fmt: skip

    def progress(row):
        if row["error"]:
            text = f"[red]{row['error']}[/red]"
        else:
            text = (
                f"{row['images_per_second']:,.1f} img/s, "
                f"{row['latency_ms_median']:.2f} ms/batch of {row['batch_size']}"
            )
        err.print(f"{row['mode']:>5} {row['model']}: {text}", highlight=False)

    def note(text: str) -> None:
        err.print(text, highlight=False, soft_wrap=True)

    try:
        rows = benching.run_bench(names, setting, modes, out_dir, on_row=progress, on_note=note)
    except KeyboardInterrupt:
        err.print(
            "[red]Interrupted: the rows measured so far are in the bench files; rows not "
            "reached are unchanged.[/red]"
        )
        raise typer.Exit(130) from None
    out.print(benching.result_table(rows, f"zoo bench ({precision.label})", width=out.width))


# ----------------------------------------------------------------------------- weights, export


def rescored_verdict(rescored) -> str:
    """One line: did scoring the published weights again give the published metrics?"""
    key, published = rescored.weights.headline()
    now = rescored.metrics.get(key)
    worst = max(rescored.differences.values(), default=0.0)
    what = f"test {key} {now:.4f}, published {published:.4f}"
    if rescored.exact:
        return f"Reproduced exactly: {what} (every score of {len(rescored.differences)} equal)."
    setting = rescored.weights.evaluation
    return (
        f"Not exactly the published scores: {what}, largest difference {worst:.2g}; published on "
        f"torch {setting.get('torch')} ({setting.get('device')}, batch {setting.get('batch_size')}"
        f"), this is torch {rescored.evaluation['torch']} ({rescored.evaluation['device']}, batch "
        f"{rescored.evaluation['batch_size']})."
    )


class DefaultListGroup(typer.core.TyperGroup):
    """A group whose `list` subcommand may go unnamed: `zoo weights [PATTERN] [--format csv]` is
    `zoo weights list ...`, while `zoo weights publish RUN_DIR` is its own subcommand."""

    def parse_args(self, context, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(context, args)


weights_app = typer.Typer(
    cls=DefaultListGroup,
    rich_markup_mode=None,
    help="zoo's published weights: list them (`zoo weights [PATTERN]`), or publish a run's.",
)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@user_errors
def weights_list(
    pattern: Annotated[
        str,
        typer.Argument(help="Shell-style model filter, e.g. 'unet*'; plain words match anywhere."),
    ] = "*",
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version, not only the newest.")
    ] = False,
    format: FormatOption = RowFormat.table,
):
    """The published weights, one table per dataset: test metric, parameters, GFLOPs, file
    size and dtype (or "train to get weights"), and the recipe that trained them."""
    from zoo.weights import list_weights, published_root

    if not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    rows = tables.weights_rows(list_weights(pattern, all_versions=all_versions))
    if format is not RowFormat.table:
        print_rows(rows, format, None)
    elif not rows:
        out.print(f"No published weights match {pattern!r} (in {published_root()}).")
    else:
        for part in tables.weights_tables(rows, width=out.width):
            out.print(part)


class StorageDtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"


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
    from zoo.publish import publish

    def progress(text: str) -> None:
        err.print(text, highlight=False, soft_wrap=True)

    found = publish(
        run_dir, note, dtype=dtype.value, with_file=file, root=to, on_progress=progress,
        data_dir=str(data_dir) if data_dir else None,
    )  # fmt: skip
    key, score = found.headline()
    stored = (
        f"{found.dtype}, {found.file_size / 1e6:.1f} MB, sha256 {found.sha256[:12]}..."
        if found.file
        else "listed without a weights file"
    )
    out.print(
        f"Published {found.ref} ({found.dataset}): test {key} {score:.4f}, {stored} -> "
        f"{found.folder}",
        highlight=False,
        soft_wrap=True,
    )


class ExportFormat(str, Enum):
    onnx = "onnx"
    pt2 = "pt2"
    hub = "hub"


@app.command("export")
@user_errors
def export_(
    source: SourceArgument,
    format: Annotated[
        ExportFormat,
        typer.Option(help="onnx, pt2 (torch.export: C++, mobile) or hub (Hugging Face folder)."),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder the export goes to.")],
    checkpoint: SourceCheckpointOption = None,
    push: Annotated[
        str | None,
        typer.Option(help="With --format hub: upload the folder to this Hub repo (needs a token)."),
    ] = None,
):
    """Export a run's checkpoint or published weights: ONNX (checked with onnxruntime), a
    torch.export program (.pt2), or a folder the Hugging Face Hub takes as it is."""
    from zoo.export import export

    err.print(f"Exporting {source} as {format.value}...", highlight=False)
    done = export(
        source, format.value, out_dir,
        checkpoint=f"{checkpoint.value}.safetensors" if checkpoint else None, push_to=push,
    )  # fmt: skip
    for line in done.lines:
        out.print(line, highlight=False, soft_wrap=True)
