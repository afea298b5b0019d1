"""Published weights: publishing a run (file, metadata, changelog, versions, the fp16 rule),
loading them (`zoo.create_model(name, pretrained=...)`, SHA-256 checked), `zoo weights`,
`zoo eval/predict/explain NAME`, the repository's storage rules, and every published entry
scored again."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_facade_pairs, write_tiny_fashion_mnist
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

import zoo
from zoo import publish as publishing
from zoo import weights
from zoo.checkpoint import looks_like_pickle
from zoo.cli import app
from zoo.config import TrainConfig, read_recipe
from zoo.errors import ZooError
from zoo.run import train_run

runner = CliRunner()
COMMITTED_UNET_RUN = Path("results/mini-facade/unet-small/20261121-121126")  # no checkpoint


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lookalikes(tmp_path_factory):
    """A data root with tiny Fashion-MNIST and Mini Facade look-alikes (as conftest's tiny_root
    and facade_root make them), kept for the whole module so that its runs train once."""
    from zoo.data import fashion_mnist, pairs

    patch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("data")
    patch.setattr(fashion_mnist, "FILES", write_tiny_fashion_mnist(root))
    patch.setattr(pairs, "SIZE", (32, 32))
    patch.setenv("XDG_CACHE_HOME", str(root / "user-cache"))
    patch.delenv("ZOO_CACHE", raising=False)
    write_facade_pairs(root / "mini-facade" / "train", 24, seed=0)
    write_facade_pairs(root / "mini-facade" / "test_dev", 6, seed=1)
    yield root
    patch.undo()


def train(root: Path, out: Path, model: str, **changes):
    options = dict(model=model, data_dir=str(root), out=str(out), epochs=1, device="cpu")
    return train_run(TrainConfig(**{**options, **changes}))


@pytest.fixture(scope="module")
def runs(lookalikes, tmp_path_factory):
    """A completed classification run and a completed segmentation run on the look-alikes."""
    out = tmp_path_factory.mktemp("runs")
    classifier = train(lookalikes, out, "baseline-cnn")
    segmenter = train(lookalikes, out, "unet-small", batch_size=8, eval_batch_size=4)
    assert classifier.status == segmenter.status == "completed"
    return {"baseline-cnn": classifier.run_dir, "unet-small": segmenter.run_dir}


@pytest.fixture(scope="module")
def published_once(runs, lookalikes, tmp_path_factory):
    """A published-weights folder holding v1 of both runs."""
    root = tmp_path_factory.mktemp("published")
    for run_dir in runs.values():
        publishing.publish(run_dir, "first version", root=root, data_dir=str(lookalikes))
    return root


@pytest.fixture
def published(published_once, tmp_path, monkeypatch, lookalikes):
    """A copy of it that a test may change, which zoo reads as its published weights."""
    root = tmp_path / "published"
    shutil.copytree(published_once, root)
    monkeypatch.setenv(weights.PUBLISHED_ENV, str(root))
    monkeypatch.setenv("ZOO_DATA", str(lookalikes))
    return root


# ----------------------------------------------------------------------------- publishing


def test_publish_writes_the_weights_their_facts_and_a_changelog_entry(published, runs):
    found = zoo.get_weights("baseline-cnn")
    assert found.folder == published / "baseline-cnn" / "fashion-mnist" / "v1"
    assert (
        found.version == 1 and found.dataset == "fashion-mnist" and found.task == "classification"
    )
    assert found.class_names[0] == "T-shirt/top" and found.input_size == (1, 28, 28)
    assert len(found.mean) == len(found.std) == 1
    assert found.run_id == "/".join(runs["baseline-cnn"].parts[-3:])
    assert found.recipe.startswith("zoo train baseline-cnn ") and "--epochs 1" in found.recipe
    assert "--data-dir" not in found.recipe and "--out" not in found.recipe
    assert set(found.metrics["per_class"]["Trouser"]) == {"accuracy", "ap"}
    assert found.metrics["accuracy"] is not None and found.metrics["mean_ap"] is not None
    assert found.num_parameters == 211_690 and found.gflops > 0
    assert found.evaluation["device"] == "cpu" and found.evaluation["precision"] == "fp32"
    assert found.zoo_version == zoo.__version__ and found.torch_version == torch.__version__
    assert found.dtype in ("float16", "float32") and found.note == "first version"
    assert found.history and found.history[0]["epoch"] == 1
    # the file: safetensors (never a pickle) whose size and SHA-256 the metadata gives
    path = found.path
    assert not looks_like_pickle(path) and path.stat().st_size == found.file_size
    assert weights.file_sha256(path) == found.sha256
    stored = load_file(str(path))
    assert {t.dtype for t in stored.values()} == {getattr(torch, found.dtype)}
    changelog = (published / weights.CHANGELOG).read_text()
    assert "## baseline-cnn v1 (fashion-mnist" in changelog and "first version" in changelog
    assert "## unet-small v1 (mini-facade" in changelog and found.sha256 in changelog
    segmenter = zoo.get_weights("unet-small")
    assert {"mean_ap", "mean_iou", "pixel_accuracy"} <= set(segmenter.metrics)
    assert set(segmenter.metrics["per_class"]["pillar"]) >= {"ap", "iou"}


def test_a_published_version_is_never_replaced(published, runs, lookalikes):
    first = zoo.get_weights("baseline-cnn")
    before = first.path.read_bytes()
    with pytest.raises(ZooError, match="already published as baseline-cnn@v1"):
        publishing.publish(runs["baseline-cnn"], "again", root=published)
    # A retrained run is a new version only when it is published, with its note.
    run = train(lookalikes, published.parent / "more-runs", "baseline-cnn", seed=1)
    second = publishing.publish(run.run_dir, "seed 1", root=published)
    assert second.version == 2 and second.ref == "baseline-cnn@v2"
    assert zoo.get_weights("baseline-cnn").version == 2
    assert zoo.get_weights("baseline-cnn@v1").path.read_bytes() == before
    changelog = (published / weights.CHANGELOG).read_text()
    assert changelog.index("baseline-cnn v2") < changelog.index("baseline-cnn v1"), "newest first"
    with pytest.raises(ZooError, match="never overwritten"):
        publishing.write_version(published, second, None)


def test_float16_storage_only_when_its_scores_stay_within_0_001(published, runs, monkeypatch):
    shutil.rmtree(published / "baseline-cnn")
    monkeypatch.setattr(publishing, "FP16_TOLERANCE", -1.0)  # no float16 copy can pass
    with pytest.raises(ZooError, match="float16 storage changes baseline-cnn's test .* --dtype"):
        publishing.publish(runs["baseline-cnn"], "fp16", dtype="float16", root=published)
    assert publishing.publish(runs["baseline-cnn"], "auto", root=published).dtype == "float32"
    shutil.rmtree(published / "baseline-cnn")
    monkeypatch.setattr(publishing, "FP16_TOLERANCE", 0.001)
    found = publishing.publish(runs["baseline-cnn"], "fp16", dtype="float16", root=published)
    assert found.dtype == "float16"
    loaded = zoo.create_model("baseline-cnn", pretrained=True)
    assert all(p.dtype == torch.float32 for p in loaded.parameters()), "float16 loads into fp32"


def test_publishing_is_refused_before_anything_is_written(published, runs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(runs["baseline-cnn"], copy)
    (copy / "best.safetensors").unlink()
    before = sorted(p.relative_to(published) for p in published.rglob("*"))
    for run_dir, note, match in (
        (runs["baseline-cnn"], " ", "--note says what changed"),
        (copy, "new", "does not exist .run checkpoints stay on the machine that trained them"),
        (COMMITTED_UNET_RUN, "new", "or list the run without a file .--no-file.."),
    ):
        with pytest.raises(ZooError, match=match):
            publishing.publish(run_dir, note, root=published)
    assert sorted(p.relative_to(published) for p in published.rglob("*")) == before


def test_an_entry_over_the_budget_is_listed_to_train(published, runs, monkeypatch):
    shutil.rmtree(published / "unet-small")
    monkeypatch.setattr(weights, "BUDGET_BYTES", publishing.budget_used(published) + 10)
    with pytest.raises(ZooError, match="over the 0 MB budget; pass --no-file"):
        publishing.publish(runs["unet-small"], "v1", root=published)
    with pytest.raises(ZooError, match="--no-file stores none; drop one"):
        publishing.publish(
            runs["unet-small"], "x", root=published, dtype="float16", with_file=False
        )
    # Listed without a file, the version describes the run's own float32 weights: no float16
    # copy is made, let alone scored.
    monkeypatch.setattr(publishing, "copy_with", lambda *args: pytest.fail("a float16 copy"))
    listed = publishing.publish(runs["unet-small"], "too big", root=published, with_file=False)
    assert listed.file is None and not list(listed.folder.glob("*.safetensors"))
    assert listed.dtype == "float32"
    result = runner.invoke(app, ["weights", "unet"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "train to" in result.stdout and "weights" in result.stdout
    fits = r"without a weights file \(it does not fit the repository's \d+ MB\); train it to get "
    with pytest.raises(ZooError, match=fits + "weights: zoo train unet-small"):
        zoo.create_model("unet-small", pretrained=True)
    with pytest.raises(ZooError, match=r"no published weights for fcn \(entries that have them: "
                       r"baseline-cnn; listed without a file: unet-small\)"):  # fmt: skip
        zoo.create_model("fcn", pretrained=True)


def test_a_run_without_its_checkpoints_is_listed_with_its_own_test_metrics(
    published, runs, tmp_path
):
    from zoo.results import read_record

    run_dir = tmp_path / "trained-elsewhere"
    shutil.copytree(runs["unet-small"], run_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    shutil.rmtree(published / "unet-small")
    with pytest.raises(ZooError) as raised:
        publishing.publish(run_dir, "v1", root=published)
    assert str(raised.value) == (
        f"{run_dir / 'best.safetensors'} does not exist (run checkpoints stay on the machine "
        "that trained them); publish from that machine, or list the run without a file "
        "(--no-file)."
    )
    assert not (published / "unet-small").exists()

    record = read_record(run_dir)
    listed = publishing.publish(run_dir, "listed", root=published, with_file=False)
    assert listed.file is None and listed.sha256 is None and listed.dtype == "float32"
    assert listed.metrics == record.test, "what the run's own evaluation recorded"
    assert listed.evaluation["source"] == "the run's own evaluation (its checkpoint was not kept)"
    assert listed.evaluation["precision"] == record.eval_precision
    assert listed.num_parameters == record.num_parameters and listed.gflops > 0
    assert listed.recipe.startswith("zoo train unet-small --epochs 1")
    assert zoo.get_weights("unet-small").run_id == listed.run_id
    with pytest.raises(ZooError) as raised:
        zoo.create_model("unet-small", pretrained=True)
    assert str(raised.value) == (
        "unet-small v1 is listed without a weights file (its run's checkpoints were not kept); "
        f"train it to get weights: {listed.recipe}"
    )
    with pytest.raises(ZooError, match="already published as unet-small@v1"):
        publishing.publish(run_dir, "again", root=published, with_file=False)
    result = runner.invoke(app, ["eval", "unet-small"])
    assert result.exit_code == 1 and "Scoring" not in result.stderr, "nothing to score"
    assert "listed without a weights file (its run's checkpoints were not kept)" in result.stderr


def test_the_recipe_links_the_recipe_file_it_matches(runs):
    from zoo.results import read_record

    record = read_record(runs["unet-small"])
    command, recipe_file = publishing.recipe_of(record.config, "segmentation")
    assert command.startswith("zoo train unet-small --epochs 1") and recipe_file is None
    values = read_recipe(Path("recipes/unet-small.yaml"))
    recipe = TrainConfig(**values).resolve("segmentation", "mini-facade")
    command, recipe_file = publishing.recipe_of(recipe, "segmentation")
    assert recipe_file == "recipes/unet-small.yaml" and "--amp-dtype bfloat16" in command
    # Another seed follows the same file; the command says which seed.
    command, recipe_file = publishing.recipe_of(dataclasses.replace(recipe, seed=3), "segmentation")
    assert recipe_file == "recipes/unet-small.yaml" and "--seed 3" in command
    command, recipe_file = publishing.recipe_of(
        dataclasses.replace(recipe, lr=recipe.lr * 2), "segmentation"
    )
    assert recipe_file is None


# ----------------------------------------------------------------------------- loading


def test_create_model_pretrained_loads_the_published_file(published):
    found = zoo.get_weights("unet-small")
    stored = load_file(str(found.path))
    for pretrained in (True, "mini-facade", "mini-facade@v1"):
        model = zoo.create_model("unet-small", pretrained=pretrained)
        state = model.state_dict()
        assert all(torch.equal(state[k], v.float()) for k, v in stored.items()), pretrained
    assert zoo.list_weights() == [zoo.get_weights("baseline-cnn"), found]


def test_rescoring_reproduces_the_published_metrics_exactly(published, lookalikes):
    for name in ("baseline-cnn", "unet-small"):
        rescored = publishing.rescore(name, data_dir=str(lookalikes))
        assert rescored.exact, (name, rescored.differences)
    result = runner.invoke(app, ["eval", "unet-small", "--data-dir", str(lookalikes)])
    assert result.exit_code == 0, result.output
    assert "Reproduced exactly: test mean_ap" in result.stdout and "pillar" in result.stdout


def test_zoo_weights_fits_80_columns_and_gives_csv_and_json(published):
    result = runner.invoke(app, ["weights"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    found = zoo.get_weights("baseline-cnn")
    text = "\n".join(lines)
    for whole in ("baseline-cnn", "unet-small", "fashion-mnist", f"{found.metrics['accuracy']:.3f}",
                  "212k", "zoo train baseline-cnn"):  # fmt: skip
        assert whole in text, whole  # never split across lines
    rows = json.loads(runner.invoke(app, ["weights", "--format", "json"]).stdout)
    assert {row["name"] for row in rows} == {"baseline-cnn", "unet-small"}
    assert rows[0]["sha256"] == found.sha256 and rows[0]["recipe"] == found.recipe
    csv = runner.invoke(app, ["weights", "unet", "--format", "csv"]).stdout.splitlines()
    assert csv[0].startswith("name,model,dataset,version") and len(csv) == 2


def test_predict_and_explain_take_a_published_name(published, tmp_path):
    photo = tmp_path / "house.png"
    Image.fromarray(np.full((40, 30, 3), 120, dtype=np.uint8)).save(photo)
    result = runner.invoke(app, ["predict", "unet-small", str(photo), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "house_mask.png").exists()
    result = runner.invoke(app, ["predict", "baseline-cnn", str(photo)])
    assert result.exit_code == 0 and "house.png: " in result.stdout
    out = tmp_path / "explain"
    result = runner.invoke(
        app, ["explain", "baseline-cnn", "--method", "confused", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "never confused either way" in result.stdout and (out / "confused_pairs.png").exists()


def test_old_run_records_with_pretrained_read_as_imagenet():
    old = {"model": "timm/resnet18", "pretrained": True}
    assert TrainConfig.from_dict(old).imagenet is True
    with pytest.raises(ZooError, match="no ImageNet weights for baseline-cnn.*--imagenet"):
        zoo.create_model("baseline-cnn", imagenet=True)


# ----------------------------------------------------------------------------- bad input


def one_sentence_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    return result.stderr


def test_an_unknown_published_name_suggests_close_ones(published, tmp_path):
    with pytest.raises(ZooError, match="Unknown published weights 'baseline-cn'. Did you mean"):
        zoo.get_weights("baseline-cn")
    message = one_sentence_error(["eval", "unet-smal"])
    assert "Unknown published weights 'unet-smal'. Did you mean 'unet-small'?" in message
    message = one_sentence_error(["predict", "unet-small:cmp-facad", str(tmp_path / "x.png")])
    assert "no published unet-small weights for cmp-facad" in message
    assert not (Path("predictions")).exists()


def test_a_weights_file_that_was_truncated_or_edited_is_refused(published):
    path = zoo.get_weights("baseline-cnn").path
    expected = zoo.get_weights("baseline-cnn").sha256
    original = path.read_bytes()
    for damaged in (original[: len(original) // 2], original[:-1] + bytes([original[-1] ^ 1])):
        path.write_bytes(damaged)
        with pytest.raises(ZooError) as error:
            zoo.create_model("baseline-cnn", pretrained=True)
        message = str(error.value)
        assert str(path) in message and expected in message
        assert weights.file_sha256(path) in message and "truncated or edited" in message


def test_pretrained_for_an_entry_without_published_weights_names_those_that_have_them(published):
    with pytest.raises(ZooError, match=r"no published weights for fcn \(entries that have them: "
                       r"baseline-cnn, unet-small\)"):  # fmt: skip
        zoo.create_model("fcn", pretrained=True)


def test_a_committed_run_folder_says_its_checkpoints_are_not_in_the_repository(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photo)
    message = one_sentence_error(["predict", str(COMMITTED_UNET_RUN), str(photo)])
    assert "run checkpoints are never committed to the repository" in message
    assert "pass the model name (unet-small) instead of the run folder" in message
    assert "--checkpoint" not in message  # neither checkpoint is there
    assert not (COMMITTED_UNET_RUN / "predictions").exists()


def test_a_hub_folder_of_another_model_is_refused(published, tmp_path):
    from zoo.export import export

    export("baseline-cnn", "hub", tmp_path / "hub")
    with pytest.raises(ZooError, match="holds weights for baseline-cnn, not wide-leaky-cnn"):
        zoo.create_model("wide-leaky-cnn", pretrained=tmp_path / "hub")
