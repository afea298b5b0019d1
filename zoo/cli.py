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
from rich.table import Table

from zoo.config import TrainConfig
from zoo.errors import ZooError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="zoo: train, evaluate and compare small-image vision models.",
)
out = Console()
err = Console(stderr=True)
DATA_DIR_HELP = "Data root; default: $ZOO_DATA, else ~/.cache/zoo/data."


class TaskName(str, Enum):
    classification = "classification"
    segmentation = "segmentation"


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
    **options,
):
    """Train MODEL and write its run record: config, history, metrics, figures, checkpoints."""
    given = given_options(context, options)
    if resume is None and model is None:
        raise ZooError("Name the model to train (e.g. `zoo train baseline-cnn`), or pass --resume.")
    seed_list = parse_seeds(seeds, given, resume)
    codes = []
    for seed in seed_list:
        if seed is not None:
            options, given = {**options, "seed": seed}, {**given, "seed": seed}
        if nproc is not None and nproc > 1:
            from zoo.distributed import launch

            codes.append(launch(nproc, train_argv(model, resume, given)))
        else:
            codes.append(train_once(model, resume, options, given))
    raise typer.Exit(max(codes, key=lambda code: (code != 0, code)))


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


def train_argv(model: str | None, resume: Path | None, given: dict) -> list[str]:
    """`zoo train`'s arguments for the same run, as each launched process gets them."""
    argv = ["train"] + ([model] if model else []) + (["--resume", str(resume)] if resume else [])
    for name, value in given.items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            argv.append(flag if value else f"--no-{name.replace('_', '-')}")
        elif value is not None:
            argv += [flag, str(value.value if isinstance(value, Enum) else value)]
    return argv


@app.command("eval")
@user_errors
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zoo train`.")],
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    device: Annotated[str | None, typer.Option(help="Default: the run's device setting.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
):
    """Evaluate a run's checkpoint on val and test; rewrite metrics.json and the figures."""
    from zoo.evaluate import evaluate_run
    from zoo.runtime import resolve_device

    if checkpoint not in ("best", "last"):
        raise ZooError(f"--checkpoint must be best or last, got {checkpoint!r}.")
    record = evaluate_run(
        run_dir,
        checkpoint=f"{checkpoint}.safetensors",
        device=resolve_device(device) if device else None,
        data_dir=str(data_dir) if data_dir else None,
        console=err,
    )
    print_metrics(record)


@app.command()
@user_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zoo train`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files to predict.")],
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Where masks go; default RUN_DIR/predictions.")
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    top_k: Annotated[int, typer.Option(help="Classes shown per image (classification).")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
):
    """Predict IMAGES with a run's checkpoint: top-k classes, or a colour-coded mask + overlay."""
    from zoo.predict import predict_files
    from zoo.runtime import resolve_device

    if checkpoint not in ("best", "last"):
        raise ZooError(f"--checkpoint must be best or last, got {checkpoint!r}.")
    predictions, errors = predict_files(
        run_dir,
        images,
        out_dir=out_dir,
        checkpoint=f"{checkpoint}.safetensors",
        device=resolve_device(device),
        top_k=top_k,
    )
    for prediction in predictions:
        if prediction.mask is not None:
            out.print(f"{prediction.image}: {prediction.mask}, {prediction.overlay}")
        else:
            top = ", ".join(f"{name} {p:.3f}" for name, p in prediction.top_classes)
            out.print(f"{prediction.image}: {top}", highlight=False)
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
    task: Annotated[TaskName | None, typer.Option(help="Only this task.")] = None,
):
    """List the registered models."""
    from zoo.registry import count_parameters, get_model_entry, list_models

    if not any(char in pattern for char in "*?["):
        pattern = f"*{pattern}*"
    table = Table()
    for column in ("name", "task", "default dataset"):  # never cut a name short
        table.add_column(column, no_wrap=True)
    table.add_column("parameters", no_wrap=True, justify="right")
    table.add_column("description")
    for name in list_models(pattern, task.value if task else None):
        entry = get_model_entry(name)
        count = count_parameters(name)
        table.add_row(name, entry.task, entry.dataset, f"{count:,}", entry.description)
    out.print(table)


@app.command()
@user_errors
def datasets():
    """List the registered datasets."""
    from zoo.data import get_dataset_info, list_datasets

    table = Table("name", "task", "classes", "input", "description")
    for name in list_datasets():
        info = get_dataset_info(name)
        size = f"{info.in_chans}x{info.image_size[0]}x{info.image_size[1]}"
        table.add_row(name, info.task, str(info.num_classes), size, info.description)
    out.print(table)


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


def format_score(value: float | None, digits: int = 3) -> str:
    """A score for a table; None is a score undefined on that split (e.g. AP of an absent class)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_metrics(record) -> None:
    """Per-class table (val and test) plus the overall scores of a run record, in the task's
    metrics (results.TASK_METRICS)."""
    per_class, overall = record.metrics.per_class, record.metrics.scores
    splits = ("val", "test")
    table = Table(title=f"{record.model} on {record.dataset} ({record.checkpoint})")
    table.add_column("class")
    for split in splits:
        for key in per_class:
            table.add_column(f"{split} {COLUMN_LABELS[key]}", justify="right")
    for name in record.class_names:
        scores = [record.per_class(s, key)[name] for s in splits for key in per_class]
        table.add_row(name, *map(format_score, scores))
    table.add_section()
    table.add_row(
        "[bold]overall", *(format_score(record.score(s, k), 4) for s in splits for k in overall)
    )
    out.print(table)
    if record.test.get("ap_method", "exact") != "exact":
        out.print(f"AP computed from {record.test['ap_method']}, not exactly.")
    if record.skipped_samples:
        out.print(f"{len(record.skipped_samples)} bad samples were left out (see metrics.json).")


COLUMN_LABELS = {"accuracy": "acc", "ap": "AP", "iou": "IoU"}  # "val acc", "test AP", ...


@app.command()
@user_errors
@config_options(searchable=True)
def sweep(
    model: Annotated[
        str, typer.Argument(help="Registry name to tune; or `show` to report the study STUDY.")
    ],
    study_to_show: Annotated[
        str | None, typer.Argument(metavar="[STUDY]", help="With `show`: the study's name.")
    ] = None,
    *,
    trials: Annotated[int, typer.Option(help="Finished trials the study should have.")] = 20,
    space: Annotated[
        Path | None, typer.Option(help="JSON/YAML file: option -> range or choices.")
    ] = None,
    sampler: Annotated[str, typer.Option(help="tpe, random or grid (choices only).")] = "tpe",
    pruner: Annotated[str, typer.Option(help="median or none.")] = "median",
    metric: Annotated[
        str | None,
        typer.Option(help="Validation column to optimise; default: the task's (val_accuracy)."),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name; an existing one is joined. Default MODEL-DATA.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL; default: sqlite file under OUT/sweeps/STUDY/."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes on this machine.")] = 1,
    **options,
):
    """Tune MODEL's recipe with Optuna: every option takes a value, a range or choices; each
    trial is a normal run record. `zoo sweep show STUDY` reports a study."""
    from zoo import sweep as sweeps

    given = {name: value for name, value in options.items() if value is not None}
    if model == "show":
        if study_to_show is None:
            raise ZooError("Name the study to show: `zoo sweep show STUDY`.")
        show_study(study_to_show, storage, given.get("out", "results"))
        return
    if study_to_show is not None:
        raise ZooError(f"Unexpected argument {study_to_show!r}; options are written --name value.")
    spec = sweeps.make_spec(
        model, given, space_file=space, trials=trials, sampler=sampler, pruner=pruner,
        metric=metric, study=study, storage=storage,
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


def show_study(name: str, storage: str | None, out_dir: str) -> None:
    """The trials table, the best trial as a `zoo train` command, and Optuna's figures."""
    from zoo import sweep as sweeps

    storage = storage or f"sqlite:///{sweeps.study_folder(out_dir, name) / 'study.db'}"
    found = sweeps.load_study(name, storage)
    rows = sweeps.trial_rows(found)
    table = Table(title=f"study {name}: {found.user_attrs.get('metric')} ({found.direction.name})")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="right" if column != "state" else "left")
    for row in rows:
        table.add_row(*(format_cell(row.get(column)) for column in columns))
    out.print(table)
    if sweeps.best_value(found) is None:
        out.print("No trial has completed yet.")
        return
    best = found.best_trial
    out.print(f"Best: trial {best.number}, {found.user_attrs.get('metric')} {best.value:.4f}")
    out.print(sweeps.train_command(found, best), highlight=False, soft_wrap=True)
    folder = sweeps.study_folder(out_dir, name) / "figures"
    for path in sweeps.write_figures(found, folder):
        out.print(f"Figure: {path}", highlight=False, soft_wrap=True)


def format_cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
    task: Annotated[TaskName | None, typer.Option(help="Only this task.")] = None,
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
    comparison = comparing.compare(
        results_dir, task=task.value if task else None, dataset=dataset, model=model, sort=sort,
        baseline=baseline, trials=trials,
    )  # fmt: skip
    for line in comparison.skipped:
        err.print(f"[yellow]Warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    if bench:
        if not comparison.bench:
            raise ZooError(f"{results_dir} holds no bench files; run `zoo bench` first.")
        if format not in (CompareFormat.table, CompareFormat.markdown):
            raise ZooError("--bench shows tables: use --format table or markdown.")
        if format is CompareFormat.markdown:
            out.print(
                comparing.bench_markdown(comparison.bench),
                highlight=False, markup=False, soft_wrap=True,
            )  # fmt: skip
        for title, header, body in comparing.bench_speedups(comparison.bench):
            if format is CompareFormat.table:
                out.print(comparing.rich_table(title, header, body, left=1))
        return
    if format is CompareFormat.table:
        for table in comparing.to_rich(comparison, per_run=per_run):
            out.print(table)
        return
    if format is CompareFormat.html:
        from zoo import report

        if out_file is None:
            raise ZooError("--format html writes a file: pass --out report.html.")
        text = report.render(comparison)
    else:
        text = (
            comparing.to_markdown(comparison, per_run=per_run)
            if format is CompareFormat.markdown
            else comparing.to_csv(comparison)
        )
    if out_file is None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)
    else:
        from zoo.results import atomic_write_bytes

        atomic_write_bytes(out_file, text.encode())
        err.print(f"Wrote {out_file}", highlight=False)


def markdown_for(args: list[str]) -> str:
    """`zoo compare ARGS --format markdown`'s text, for the tables kept in README files."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["compare", *args, "--format", "markdown"])
    if result.exit_code != 0:
        raise ZooError(f"`zoo compare {' '.join(args)}` failed: {result.output.strip()}")
    return result.stdout


@app.command()
@user_errors
def explain(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `zoo train`.")],
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Images to explain; default: the test examples of the run's figures."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="all, saliency, integrated-gradients, gradcam, activation-max or confused."
        ),
    ] = "all",
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
        typer.Option("--out", help="Where figures go; default RUN_DIR/figures/explain."),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or last.")] = "best",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP)] = None,
    steps: Annotated[int, typer.Option(help="Gradient-ascent steps of activation-max.")] = 200,
):
    """What a trained network looks at (saliency, integrated gradients, Grad-CAM with Captum),
    what its classes and channels respond to (activation maximisation), and which classes it
    confuses."""
    from zoo.explain import explain_run
    from zoo.runtime import resolve_device

    if checkpoint not in ("best", "last"):
        raise ZooError(f"--checkpoint must be best or last, got {checkpoint!r}.")
    if steps < 1:
        raise ZooError(f"--steps must be at least 1, got {steps}.")
    done = explain_run(
        run_dir, images or [], method=method, layer=layer, target=target, out=out_dir,
        checkpoint=f"{checkpoint}.safetensors", device=resolve_device(device),
        data_dir=str(data_dir) if data_dir else None, steps=steps,
    )  # fmt: skip
    for line in done.lines:
        out.print(line, highlight=False, soft_wrap=True)
    for path in done.figures:
        out.print(f"Figure: {path}", highlight=False, soft_wrap=True)
    for error in done.errors:
        err.print(f"[red]Error:[/red] {error}", highlight=False, soft_wrap=True)
    if done.errors:
        raise typer.Exit(1)


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
    amp_dtype: Annotated[str, typer.Option(help="float16 or bfloat16.")] = "float16",
    channels_last: Annotated[bool, typer.Option(help="NHWC memory format.")] = True,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile (its time reported apart).")
    ] = False,
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch; default 128, segmentation 8.")
    ] = None,
    img_size: Annotated[
        int | None, typer.Option(help="Square input side; default the dataset's.")
    ] = None,
    mode: Annotated[
        BenchMode, typer.Option(help="Inference, training step, or both.")
    ] = BenchMode.both,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    repeats: Annotated[int, typer.Option(help="Timed repeats; all iterations are kept.")] = 3,
    budget: Annotated[
        float,
        typer.Option(
            help="Seconds of timed iterations per model and mode (at least 5 "
            "iterations per repeat whatever the budget)."
        ),
    ] = 6.0,
    retry: Annotated[bool, typer.Option(help="Halve the batch on CUDA out-of-memory.")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the bench files go.")] = Path(
        "results/bench"
    ),
):
    """Throughput, latency (median, p90, p99, IQR), peak memory, FLOPs and FLOP utilisation of
    models on synthetic input, each in a fresh process; rows go to one CSV/JSON per setting."""
    from zoo import bench as benching
    from zoo.config import AmpDtype
    from zoo.registry import get_model_entry, list_models
    from zoo.results import check_writable
    from zoo.runtime import resolve_device, resolve_precision

    if all_models == bool(models):
        raise ZooError("Name the models to bench, or pass --all (not both).")
    if amp_dtype not in [d.value for d in AmpDtype]:
        raise ZooError(f"Unknown --amp-dtype {amp_dtype!r}; choose float16 or bfloat16.")
    for name, value, low in (("--repeats", repeats, 1), ("--budget", budget, 0)):
        if value < low:
            raise ZooError(f"{name} must be at least {low}, got {value}.")
    if batch_size is not None and batch_size < 1:
        raise ZooError(f"--batch-size must be at least 1, got {batch_size}.")
    chosen_task = task.value if task else None
    if dataset is not None:
        from zoo.data import get_dataset_info

        chosen_task = get_dataset_info(dataset).task
    names = list_models("*", chosen_task) if all_models else list(models)
    for name in names:
        get_model_entry(name)  # unknown names: one sentence with close matches, before any work
    resolved = resolve_device(device)
    precision = resolve_precision(resolved, amp, amp_dtype)
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
        device=str(resolved), amp=amp, amp_dtype=amp_dtype, channels_last=channels_last,
        compile=compile, batch_size=batch_size, img_size=img_size, dataset=dataset,
        repeats=repeats, budget=budget, retry=retry,
    )  # fmt: skip

    def progress(row):
        if row["error"]:
            err.print(
                f"{row['mode']:>5} {row['model']}: [red]{row['error']}[/red]", highlight=False
            )
        else:
            err.print(
                f"{row['mode']:>5} {row['model']}: {row['images_per_second']:,.1f} img/s, "
                f"{row['latency_ms_median']:.2f} ms/batch of {row['batch_size']}",
                highlight=False,
            )

    try:
        rows = benching.run_bench(names, setting, modes, out_dir, on_row=progress)
    except KeyboardInterrupt:
        err.print("[red]Interrupted: the rows measured so far are in the bench files.[/red]")
        raise typer.Exit(130) from None
    table = Table("mode", "model", "batch", "images/s", "latency ms", "p90 ms", "peak MB",
                  "GFLOPs/img", "MFU", "error", title=f"zoo bench ({precision.label})")  # fmt: skip
    for row in rows:
        ok = not row["error"]
        table.add_row(
            row["mode"], row["model"], str(row["batch_size"] or ""),
            f"{row['images_per_second']:,.1f}" if ok else "",
            f"{row['latency_ms_median']:.2f}" if ok else "",
            f"{row['latency_ms_p90']:.2f}" if ok else "",
            f"{row['peak_memory_mb']:,.0f}" if ok else "",
            f"{row['flops_per_image'] / 1e9:.3f}" if ok else "",
            f"{100 * row['mfu']:.1f}%" if ok else "", row["error"] or "",
        )  # fmt: skip
    out.print(table)
