"""Streamed pixel metrics (score bins past a pixel budget) against the exact ones on synthetic maps."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hamacho.data.discovery import Sample
from hamacho.post.streamed import PixelReservoir, StreamedPixels
from hamacho.report import plots
from hamacho.results.calibration import CalibrationCollector
from hamacho.results.collector import ResultsCollector
from hamacho.settings import ThresholdSettings

CALIBRATION = {"image_threshold": 6.0, "image_min": 0.0, "image_max": 12.0, "pixel_threshold": 6.0,
               "pixel_min": 0.0, "pixel_max": 12.0}


def scored_batches(images: int, side: int = 48, per_batch: int = 3, inspected: bool = False, seed: int = 0):
    """Seeded ScoredBatch stand-ins: gamma-noise maps, every other image defective with two bright regions."""
    rng = np.random.default_rng(seed)
    for start in range(0, images, per_batch):
        k = min(per_batch, images - start)
        maps = rng.gamma(2.0, 1.0, (k, side, side)).astype(np.float32)
        masks = np.zeros((k, side, side), np.uint8)
        labels = np.zeros(k, np.int64)
        for i in range(k):
            if (start + i) % 2:
                labels[i] = 1
                for height, width in ((8, 6), (3, 3)):
                    y, x = rng.integers(0, side - height, 2)
                    masks[i, y : y + height, x : x + width] = 255
                    maps[i, y : y + height, x : x + width] += rng.random((height, width)).astype(np.float32) * 5
        area = None
        if inspected:
            area = np.ones((k, side, side), bool)
            area[:, :, : side // 6] = False
        norm = np.clip(maps / 12, 0, 1)
        batch = SimpleNamespace(indices=np.arange(start, start + k), valid=np.ones(k, bool), labels=labels,
                                errors=[None] * k, has_mask=np.ones(k, bool), inspected=area, masks=masks,
                                images=np.zeros((k, 3, side, side), np.uint8))
        yield SimpleNamespace(batch=batch, raw_scores=maps.reshape(k, -1).max(1), scores=norm.reshape(k, -1).max(1),
                              is_ng=norm.reshape(k, -1).max(1) >= 0.5, raw_maps=maps, maps=norm,
                              pred_masks=norm >= 0.5)


def collected(budget: int, images: int = 20, inspected: bool = False) -> ResultsCollector:
    samples = [Sample(Path(f"{i}.png"), str(i), i % 2, "x") for i in range(images)]
    collector = ResultsCollector(samples, CALIBRATION, report=True, pixel_sample=500, pixel_budget=budget)
    for scored in scored_batches(images, inspected=inspected):
        collector.add(scored)
    return collector


@pytest.mark.parametrize("inspected", [False, True])
def test_a_tiny_budget_streams_and_matches_the_exact_metrics(inspected):
    exact, streamed = collected(10**9, inspected=inspected), collected(5000, inspected=inspected)
    assert exact._streamed is None and streamed._streamed is not None and streamed._maps == []
    exact.finish()
    streamed.finish()
    for name in ("pixel_AUROC", "pixel_AUPRO"):
        assert streamed.metrics[name] == pytest.approx(exact.metrics[name], abs=1e-3)
    assert streamed.metrics["pixel_F1"] == pytest.approx(exact.metrics["pixel_F1"], abs=1e-12)  # counted exactly
    assert streamed.metrics["image_AUROC"] == exact.metrics["image_AUROC"]


def test_the_report_gets_curves_and_a_sample_from_the_streamed_counts():
    exact, streamed = collected(10**9), collected(5000)
    exact.finish()
    streamed.finish()
    got, want = streamed.report_data.pixel_curves, exact.report_data.pixel_curves
    assert got.operating_point == want.operating_point
    assert got.fpr[0] == 0.0 and got.fpr[-1] == pytest.approx(1.0) and got.tpr[-1] == pytest.approx(1.0)
    assert np.all(np.diff(got.fpr) >= 0) and got.precision[-1] == 1.0 and got.recall[-1] == 0.0
    # the streamed ROC lies on the exact one (bins are thresholds of the same scores)
    assert np.interp(0.1, got.fpr, got.tpr) == pytest.approx(np.interp(0.1, want.fpr, want.tpr), abs=0.01)
    sample, full = streamed.report_data.pixel_sample, exact.report_data.pixel_sample
    assert sample.total == full.total and sample.scores.size == full.scores.size == 500
    assert int(sample.labels.sum()) == int(full.labels.sum()) == 250  # half defective, as the exact draw
    assert plots.curves_figure(got, "Pixel", streamed.metrics["pixel_AUROC"])[:4] == b"\x89PNG"


def test_hand_made_counts_give_the_exact_figures():
    maps = np.zeros((1, 4, 5), np.float32)
    masks = np.zeros((1, 4, 5), bool)
    masks[0, 0, 0:2] = masks[0, 3, 3:5] = True  # two regions of two pixels
    maps[0, 0, 0:2] = 9.0
    maps[0, 3, 3] = 9.0  # half of the second region found
    streamed = StreamedPixels(0.0, 10.0, bins=100)
    streamed.add(maps, masks, maps > 5)
    metrics = streamed.metrics(fpr_limit=0.3)
    assert metrics["pixel_F1"] == pytest.approx(2 * 3 / (3 + 4))
    assert metrics["pixel_AUROC"] == pytest.approx(1 - 0.25 / 2)  # one defect pixel tied with all 16 good ones
    # PRO is 0.75 at FPR 0, then the last defect pixel and every good one come together: up to FPR 0.3
    # the curve climbs from 0.75 towards 1 at FPR 1
    assert metrics["pixel_AUPRO"] == pytest.approx((0.75 + (0.75 + 0.25 * 0.3)) / 2)
    assert streamed.regions == 2 and streamed.positives == 4 and streamed.negatives == 16


def test_scores_outside_the_range_clip_to_the_end_bins():
    streamed = StreamedPixels(0.0, 1.0, bins=10)
    assert streamed.codes(np.array([-5.0, 0.0, 0.55, 1.0, 7.0, np.nan])).tolist() == [0, 0, 5, 9, 9, 0]


def test_the_reservoir_is_a_uniform_seeded_sample():
    reservoir = PixelReservoir(1000, seed=3)
    for start in range(0, 100_000, 7_000):
        reservoir.offer(np.arange(start, min(start + 7_000, 100_000), dtype=np.float32), defective=False)
    reservoir.offer(np.full(10, -1.0, np.float32), defective=True)
    sample = reservoir.sample()
    assert sample.total == 100_010 and sample.scores.size == 1000 and int(sample.labels.sum()) == 10
    goods = sample.scores[sample.labels == 0]
    assert np.unique(goods).size == 990 and abs(float(goods.mean()) - 50_000) < 3_000


def test_the_calibration_pixel_cut_from_bins_is_close_to_the_exact_one():
    exact = CalibrationCollector(ThresholdSettings(method="f1"), pixel_budget=10**9)
    streamed = CalibrationCollector(ThresholdSettings(method="f1"), pixel_budget=5000)
    for scored in scored_batches(20):
        exact.add(scored)
        streamed.add(scored)
    want, got = exact.finish(), streamed.finish()
    assert streamed._pixel_scores == [] and "in score bins" in streamed.thresholds.pixel_source
    assert got["pixel_threshold"] == pytest.approx(want["pixel_threshold"], abs=0.02)
    assert got["image_threshold"] == want["image_threshold"]
