"""The repository's published weights (zoo/published/): within the budget, never a pickle,
found by an installed zoo, and each one scored again on the real test split to its published
figures. Apart from tests/test_weights.py, whose module-wide look-alike data (tiny files and
their checksums, 32x32 facade samples) must not reach these real scores."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from zoo import publish as publishing
from zoo import weights
from zoo.checkpoint import looks_like_pickle


def test_published_weights_fit_the_budget_and_travel_with_zoo():
    root = Path("zoo/published")
    assert publishing.budget_used(root) <= weights.BUDGET_BYTES
    for found in weights.list_weights(all_versions=True, root=root):
        if found.file:
            assert weights.verified_file(found) == found.path
            assert not looks_like_pickle(found.path), "never a pickle"
    pyproject = Path("pyproject.toml").read_text()
    assert '"published/**/*"' in pyproject, "package data: an installed zoo finds them"
    probe = "zoo/published/some-model/some-data/v1/model.safetensors"
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], capture_output=True)
    assert ignored.returncode == 1, f"{probe} is git-ignored; .gitignore must let it in"
    assert (
        subprocess.run(["git", "check-ignore", "-q", "results/x/best.safetensors"]).returncode == 0
    )


REAL = weights.list_weights(root=Path("zoo/published"))
# Scoring cost in TFLOP (GFLOPs per image x test images / 1e3) that the default run takes: up to
# about 20 s on a busy 2-core CPU (unet-small on Mini Facade is 0.55, unet 2.75).
CHEAP = 1.0


def cost(found) -> float:
    images = {"fashion-mnist": 10_000, "mini-facade": 114, "cmp-facade": 60}.get(found.dataset, 1e4)
    return found.gflops * images / 1e3


@pytest.mark.parametrize(
    "found",
    [
        pytest.param(w, id=w.ref, marks=[pytest.mark.slow] * (cost(w) > CHEAP))
        for w in REAL
        if w.file
    ],
)
def test_every_published_entry_reproduces_its_metrics(found, monkeypatch):
    """`zoo eval NAME` on the real test split gives the published scores within 1e-5. Not to the
    last digit: CI's CPU, the same model as the publishing one with the same torch and thread
    count, moved linknet's window IoU by 8e-7."""
    from conftest import real_data_root

    root = real_data_root()
    if root is None or not (root / found.dataset).is_dir():
        pytest.skip(f"set ZOO_DATA to a folder holding {found.dataset}/")
    if found.torch_version != torch.__version__:
        pytest.skip(f"published on torch {found.torch_version}, this is {torch.__version__}")
    monkeypatch.setenv(weights.PUBLISHED_ENV, str(Path("zoo/published").resolve()))
    rescored = publishing.rescore(found.ref, data_dir=str(root))
    assert rescored.reproduced, rescored.differences
