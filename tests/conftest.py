"""Shared fixtures: tiny generated datasets, a few copied MVTec bottle images, and an in-process CLI runner."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec" / "bottle"
SEAMS = Path(__file__).resolve().parent / "seams"
# Processes the tests start (`python -m hamacho serve`, workers, the CLI) import the checkout under test, not
# whichever Hamacho pip installed (an editable install of another checkout, or a release).
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
# Tests never touch the network: a service asked for ImageNet weights it has not cached refuses the job at once
os.environ["HAMACHO_OFFLINE"] = "1"


def require_component(available: bool, reason: str) -> None:
    """Skip a test whose component (a browser, a database server) is missing, saying why; under CI=true fail
    instead, since CI installs and starts every component its tests need (.ci/run)."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI=true, so .ci/run must provide it", pytrace=False)
    pytest.skip(reason)


DATABASE_KINDS = ["sqlite", "postgresql"]


@pytest.fixture(params=DATABASE_KINDS, ids=DATABASE_KINDS)
def database_url(request, tmp_path: Path):
    """A fresh, empty database for one test, once per kind: ``sqlite:///<tmp_path>/hamacho.db``, then a
    database of its own on the PostgreSQL server of HAMACHO_TEST_DATABASE_URL (tests/databases.py)."""
    from tests.databases import fresh_database

    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgresql_url(tmp_path: Path):
    """A fresh PostgreSQL database for one test (the plant-scale tests, which need a shared server)."""
    from tests.databases import fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture(scope="module", params=DATABASE_KINDS, ids=DATABASE_KINDS)
def module_database_url(request, tmp_path_factory):
    """:func:`database_url` for a module-scoped fixture: one fresh database per kind for the module."""
    from tests.databases import fresh_database

    with fresh_database(request.param, tmp_path_factory.mktemp("database")) as url:
        yield url


def pause_env(phase: str, marker: Path) -> dict[str, str]:
    """Environment for a process (and its children) that pauses inside ``phase`` until stopped, after
    writing ``marker`` (tests/seams/hamacho_pause_hook.py)."""
    path = os.pathsep.join(p for p in (str(SEAMS), os.environ.get("PYTHONPATH", "")) if p)
    return {"HAMACHO_PAUSE_AT": phase, "HAMACHO_PAUSE_FILE": str(marker), "PYTHONPATH": path}

# Small and fast: every end-to-end test trains at this size with random-init resnet18.
FAST = ["--image-size", "64", "--backbone", "resnet18", "--backbone-weights", "none", "--quiet", "--no-report"]


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A good part: smooth shading, a ring and fine noise, slightly different every time."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    radius = np.hypot(yy - 0.5, xx - 0.5)
    base = 120 + 60 * np.cos(radius * 12 + rng.uniform(-0.2, 0.2)) + 20 * xx
    noise = rng.normal(0, 6, (size, size))
    gray = np.clip(base + noise, 0, 255).astype(np.uint8)
    return np.stack([gray, (gray * 0.9).astype(np.uint8), (gray * 0.8).astype(np.uint8)], axis=2)


def _defect(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = image.shape[0]
    mask = np.zeros((size, size), dtype=np.uint8)
    w = int(rng.integers(size // 6, size // 3))
    x, y = (int(v) for v in rng.integers(size // 8, size - w - size // 8, 2))
    cv2.rectangle(mask, (x, y), (x + w, y + w // 2), 255, -1)
    out = image.copy()
    out[mask > 0] = (250, 30, 200)
    return out, mask


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def make_dataset(
    root: Path,
    n_train: int = 8,
    n_good: int = 3,
    n_defect: int = 3,
    size: int = 96,
    masks: bool = True,
    seed: int = 0,
    defect_type: str = "scratch",
) -> Path:
    """Write a tiny MVTec-layout dataset and return its root."""
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        write_png(root / "train" / "good" / f"{i:03d}.png", _texture(rng, size))
    for i in range(n_good):
        write_png(root / "test" / "good" / f"{i:03d}.png", _texture(rng, size))
    for i in range(n_defect):
        image, mask = _defect(rng, _texture(rng, size))
        write_png(root / "test" / defect_type / f"{i:03d}.png", image)
        if masks:
            write_png(root / "ground_truth" / defect_type / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A generated dataset: 8 train, 3 good and 3 defective test images with masks."""
    return make_dataset(tmp_path / "parts")


@pytest.fixture
def bottle_subset(tmp_path: Path) -> Path:
    """A few real MVTec bottle images copied into a temporary dataset root (skipped when absent)."""
    if not BOTTLE.is_dir():
        pytest.skip(f"MVTec bottle not found at {BOTTLE}")
    root = tmp_path / "bottle"
    picks = {"train/good": 10, "test/good": 3, "test/broken_large": 3}
    for sub, count in picks.items():
        for src in sorted((BOTTLE / sub).glob("*.png"))[:count]:
            dst = root / sub / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            if sub == "test/broken_large":
                mask = BOTTLE / "ground_truth" / "broken_large" / f"{src.stem}_mask.png"
                (root / "ground_truth" / "broken_large").mkdir(parents=True, exist_ok=True)
                shutil.copy(mask, root / "ground_truth" / "broken_large" / mask.name)
    return root


@pytest.fixture(params=["generated", "bottle"])
def any_dataset(request, tmp_path: Path) -> Path:
    """The round trip runs on generated data, and on real bottle images where they exist."""
    if request.param == "bottle":
        return request.getfixturevalue("bottle_subset")
    return make_dataset(tmp_path / "parts")


@dataclass
class CliResult:
    exit_code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``hamacho`` in-process: ``cli("train", ...)`` -> CliResult."""
    from hamacho.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def python() -> str:
    return sys.executable
