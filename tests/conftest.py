"""Shared fixtures: small IDX files written by the tests, and the real data when ZOO_DATA has it."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.data import fashion_mnist

# The committed default-recipe baseline-cnn run (seed 0, test 0.9203), which tests read as a real
# record; other runs of that model sit beside it.
COMMITTED_BASELINE = Path("results/fashion-mnist/baseline-cnn/20261121-111545")


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> None:
    """Write `array` (uint8) as a gzipped IDX file: magic, dims, then the raw bytes."""
    magic = magic if magic is not None else {1: 2049, 3: 2051}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture(autouse=True)
def own_zoo_cache(session_cache, monkeypatch):
    """zoo's caches (decoded data, downloads) go to one folder of the test session, never into
    the user's cache folder; a test about the cache's place sets its own variables."""
    monkeypatch.setenv("ZOO_CACHE", str(session_cache))


@pytest.fixture
def tiny_root(tmp_path, monkeypatch) -> Path:
    """A data root with a small Fashion-MNIST look-alike: 200 train + 50 test images whose class is
    drawn into the image (a bright bar at a class-dependent row), so a model can learn it. The
    official MD5 table is swapped for these files' MD5s."""
    monkeypatch.setattr(fashion_mnist, "FILES", write_tiny_fashion_mnist(tmp_path / "data"))
    return tmp_path / "data"


def write_tiny_fashion_mnist(root: Path) -> dict[str, str]:
    """tiny_root's four IDX files under `root`; returns their MD5 table (file name -> MD5)."""
    rng = np.random.default_rng(0)
    md5s = {}
    for prefix, count in (("train", 200), ("t10k", 50)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 60, size=(count, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 4 + 2 * label, 4:24] = 250
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = root / fashion_mnist.FOLDER / f"{prefix}-{kind}-ubyte.gz"
            write_idx(path, array)
            md5s[path.name] = md5(path)
    return md5s


# Fresh interpreters (a `zoo` subprocess, torchrun's workers, `zoo sweep --workers`) do not see
# tiny_root's MD5 table, which lives in this process: this sitecustomize, first on their path,
# installs it there too.
SITECUSTOMIZE = """
import json, os

if "ZOO_TEST_FASHION_MNIST_MD5S" in os.environ:
    from zoo.data import fashion_mnist

    fashion_mnist.FILES = json.loads(os.environ["ZOO_TEST_FASHION_MNIST_MD5S"])
"""


@pytest.fixture
def lookalike_env(tiny_root, tmp_path) -> dict[str, str]:
    """The environment for zoo in a fresh interpreter that reads tiny_root: this checkout on the
    path, and the look-alike's MD5 table installed there as tiny_root installs it here."""
    hook = tmp_path / "lookalike-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook), os.getcwd()]),
        "ZOO_TEST_FASHION_MNIST_MD5S": json.dumps(fashion_mnist.FILES),
    }


def real_data_root() -> Path | None:
    root = os.environ.get("ZOO_DATA")
    if root and all((Path(root) / "fashion-mnist" / n).is_file() for n in fashion_mnist.FILES):
        return Path(root)
    return None


needs_real_data = pytest.mark.skipif(
    real_data_root() is None,
    reason="checks the real Fashion-MNIST files: set ZOO_DATA to a folder whose fashion-mnist/ "
    "holds the four official .gz files (CI sets ../shared/data)",
)


@pytest.fixture
def fashion_root(request) -> Path:
    """The real Fashion-MNIST root when ZOO_DATA holds it, else the tiny look-alike."""
    return real_data_root() or request.getfixturevalue("tiny_root")


def write_facade_pairs(
    folder: Path,
    count: int,
    *,
    size: int = 32,
    num_classes: int = 5,
    offset: int = 0,
    seed: int = 0,
) -> None:
    """`count` JPEG photos with same-name PNG masks: vertical bands of class ids (plus `offset`),
    each class drawn in its own colour with noise, so a net can learn the mapping."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    for i in range(count):
        bands = rng.integers(0, num_classes, size=4)
        mask = np.repeat(bands, -(-size // 4))[:size][None, :].repeat(size, 0)
        image = colours[mask] + rng.integers(-20, 20, size=(size, size, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"f{i:03d}.jpg")
        Image.fromarray((mask + offset).astype(np.uint8), mode="L").save(folder / f"f{i:03d}.png")


@pytest.fixture
def facade_root(tmp_path, monkeypatch) -> Path:
    """A data root with a tiny Mini Facade look-alike (24 train + 6 test_dev pairs, 32x32); the
    stored size is 32x32 too, so tests stay fast."""
    from zoo.data import pairs

    monkeypatch.setattr(pairs, "SIZE", (32, 32))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv("ZOO_CACHE", raising=False)
    root = tmp_path / "data"
    write_facade_pairs(root / "mini-facade" / "train", 24, seed=0)
    write_facade_pairs(root / "mini-facade" / "test_dev", 6, seed=1)
    return root


@pytest.fixture
def committed_baseline_record():
    """The committed default-recipe baseline-cnn run, read through the record schema."""
    from zoo.results import read_record

    return read_record(COMMITTED_BASELINE)


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """`plugins(dist, {group: {entry point name: "module" or "module:function"}}, {module: code})`
    installs a distribution the way pip would leave it: `<dist>-0.1.dist-info/` (METADATA and
    entry_points.txt) and the modules, in a folder put first on sys.path. MODELS and DATASETS
    keep zoo's own entries and read their entry points again on the next lookup; what the test
    registers, and the plugin modules it imports, are gone afterwards. Returns the folder (for a
    subprocess's PYTHONPATH)."""
    from zoo.registry import DATASETS, MODELS

    for registry in (MODELS, DATASETS):
        registry.load()  # zoo's own entries, before the copy: their modules import only once
        monkeypatch.setattr(registry, "entries", dict(registry.entries))
        monkeypatch.setattr(registry, "loaded", False)
    folder = tmp_path / "site-packages"
    modules: list[str] = []

    def install(dist: str, groups: dict[str, dict[str, str]], code: dict[str, str]) -> Path:
        info = folder / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(
            "".join(
                f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
                for group, points in groups.items()
            )
        )
        for module, text in code.items():
            (folder / f"{module}.py").write_text(text)
            modules.append(module)
        if str(folder) not in sys.path:
            monkeypatch.syspath_prepend(str(folder))  # also clears the import system's caches
        return folder

    yield install
    for module in modules:
        sys.modules.pop(module, None)
