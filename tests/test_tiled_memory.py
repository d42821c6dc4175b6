"""Tiled runs stream their frames: large frames are not cached between passes, and a scoring pass keeps at most
two batches of frame-sized arrays alive (the one scored and the one whose pictures are being written).

Counted on seams (decodes, live :class:`~hamacho.predictor.ScoredBatch` objects), not on RSS, so the tests are
cheap and do not depend on timing; benchmarks/tiled_memory.py measures the memory itself (docs/benchmark.md).
"""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import hamacho.data.dataset as dataset_module
import hamacho.report.pictures as pictures_module
from hamacho.data.dataset import DECODE_CACHE_ITEM_BYTES, DecodeCache, iter_batches
from hamacho.data.discovery import discover_dataset
from hamacho.data.splits import make_splits, repeated_paths
from hamacho.inference import run_inference
from hamacho.predictor import Predictor
from hamacho.results.collector import ResultsCollector
from hamacho.settings import VisualizationSettings
from tests.conftest import FAST, make_dataset


def test_frames_larger_than_the_item_limit_are_decoded_again_not_cached(tmp_path, monkeypatch):
    assert 4 * 1024 * 1024 > DECODE_CACHE_ITEM_BYTES  # a tiled model's 1024 px frame and mask: streamed
    root = make_dataset(tmp_path / "d", n_train=4, n_good=3, n_defect=3)
    splits = make_splits(discover_dataset(root), 0.1, seed=0)
    reads: list[Path] = []
    real_read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real_read(path))
    cache = DecodeCache(repeated_paths(splits), item_bytes=64 * 64 * 4 - 1)  # a 64 px item is 64 * 64 * 4 bytes
    first = list(iter_batches(splits.calibration, 64, 4, cache=cache))
    assert cache._items == {}
    second = list(iter_batches(splits.test, 64, 4, cache=cache))
    assert len(reads) == 2 * len(splits.test)
    assert all(np.array_equal(a.images, b.images) for a, b in zip(first, second, strict=True))


@pytest.fixture
def live_batches(monkeypatch) -> dict[str, list[int]]:
    """Live scored batches counted whenever the collector takes one (``add``) and when it computes the metrics
    (``finish``); the picture writer is slowed down so that batches would pile up if nothing bounded them."""
    alive: list[weakref.ref] = []
    counts: dict[str, list[int]] = {"add": [], "finish": []}
    decided = Predictor._decided

    def tracked(*args, **kwargs):
        scored = decided(*args, **kwargs)
        alive.append(weakref.ref(scored))
        return scored

    def counting(name):
        real = getattr(ResultsCollector, name)

        def wrapper(self, *args):
            gc.collect()
            counts[name].append(sum(ref() is not None for ref in alive))
            return real(self, *args)
        return wrapper

    real_write = pictures_module.PictureWriter._write
    monkeypatch.setattr(Predictor, "_decided", staticmethod(tracked))
    monkeypatch.setattr(ResultsCollector, "add", counting("add"))
    monkeypatch.setattr(ResultsCollector, "finish", counting("finish"))
    monkeypatch.setattr(pictures_module.PictureWriter, "_write", lambda self, s: time.sleep(0.6) or real_write(self, s))
    monkeypatch.setattr(pictures_module, "PENDING_BYTES", 1)  # every batch counts as large frames
    return counts


def test_a_tiled_scoring_pass_keeps_at_most_two_batches_alive(tmp_path, cli, live_batches):
    root = make_dataset(tmp_path / "d", n_train=4, n_good=3, n_defect=3)
    out = tmp_path / "out"
    result = cli("train", "--dataset-root", root, "--result-path", out, *FAST, "dataset.tiling.tile_size=64",
                 "dataset.tiling.stride=32", "dataset.tiling.resize=96", "--batch-size", "1")
    assert result.exit_code == 0, result.err
    assert max(live_batches["add"]) <= 2 and live_batches["finish"] == [0]  # the test pass
    live_batches["add"].clear()
    live_batches["finish"].clear()
    run_inference(out / "padim" / "d" / "model.pt", root, tmp_path / "inf", batch_size=1, report=False,
                  log=lambda _: None)
    assert len(live_batches["add"]) == 6 and max(live_batches["add"]) <= 2 and live_batches["finish"] == [0]


def test_the_picture_writer_queues_large_batches_one_at_a_time(tmp_path, monkeypatch):
    """When batches are large, handing one over waits until the previous one's pictures are written."""
    events: list[str] = []

    def write(_self, scored):
        time.sleep(0.05)
        events.append(f"written {scored.name}")
        return 0

    def batch(name: str) -> SimpleNamespace:
        frames = np.zeros((2, 3, 16, 16), np.uint8)
        return SimpleNamespace(name=name, batch=SimpleNamespace(images=frames, masks=None, inspected=None),
                               raw_maps=None, maps=np.zeros((2, 16, 16), np.float32), pred_masks=None)

    monkeypatch.setattr(pictures_module.PictureWriter, "_write", write)
    monkeypatch.setattr(pictures_module, "PENDING_BYTES", 4000)  # one batch (3,584 bytes) fits, two do not
    with pictures_module.PictureWriter(tmp_path, [], VisualizationSettings()) as writer:
        for name in ("a", "b", "c"):
            writer.add(batch(name))
            events.append(f"added {name}")
        writer.finish()
    # Handing b over returned only once a was written, and c once b was (whatever the threads' timing).
    assert sorted(events) == ["added a", "added b", "added c", "written a", "written b", "written c"]
    assert events.index("written a") < events.index("added b") and events.index("written b") < events.index("added c")


def test_large_report_examples_wait_packed_and_come_back_the_same():
    from hamacho.results.examples import Example, ExampleTracker, PackedExample

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (768, 768, 3), dtype=np.uint8)
    norm_map = rng.random((768, 768)).astype(np.float16)
    big = Example("big", "good", 0.2, "OK", image, norm_map, norm_map > 0.5, np.zeros((768, 768), bool), None)
    small = Example("small", "good", 0.1, "OK", image[:8, :8], norm_map[:8, :8], norm_map[:8, :8] > 0.5, None, None)
    tracker = ExampleTracker(2)
    tracker.offer({"best_ok": (0.0, -0.2)}, big)
    tracker.offer({"best_ok": (0.0, -0.1)}, small)
    kept = [entry[2] for entry in tracker._heaps["best_ok"]]
    assert any(isinstance(e, PackedExample) for e in kept) and any(e is small for e in kept)
    back = {e.name: e for e in tracker.group("best_ok")}
    for name in ("image", "norm_map", "pred_mask", "gt_mask"):
        assert np.array_equal(getattr(back["big"], name), getattr(big, name))
    assert back["big"].inspected is None and back["small"] is small
