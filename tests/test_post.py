"""Thresholds, normalization and metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from hamacho.post.metrics import aupro, image_metrics, pixel_metrics
from hamacho.post.normalization import decide, normalize
from hamacho.post.threshold import calibrate, f1_threshold, fallback_threshold
from hamacho.settings import ThresholdSettings


def test_f1_threshold_picks_the_best_cut():
    # Sorted scores with labels: 1 g, 2 g, 3 d, 4 g, 5 d, 6 d.
    # Cut at 3 -> TP 3, FP 1, FN 0: F1 = 6/7 = 0.857; cut at 5 -> TP 2, FP 0, FN 1: F1 = 0.8;
    # cut at 2 -> TP 3 FP 2: 0.75.  Best: NG from 3 up; the threshold is midway to the score below.
    scores = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    labels = np.array([0, 0, 1, 0, 1, 1])
    assert f1_threshold(scores, labels) == 2.5


def test_f1_threshold_is_exact_for_large_raw_values():
    # Distances far outside [0, 1]: a sigmoid would saturate them; the threshold must stay exact.
    scores = np.array([30.1, 31.7, 45.25, 52.5, 60.0])
    labels = np.array([0, 0, 1, 1, 1])
    assert f1_threshold(scores, labels) == pytest.approx((31.7 + 45.25) / 2)


def test_f1_threshold_when_every_image_is_defective_at_the_lowest_score():
    scores = np.array([0.5, 0.7])
    labels = np.array([1, 1])
    assert f1_threshold(scores, labels) == 0.5


def test_fallback_threshold_hand_computed():
    good = np.array([1.0, 2.0, 3.0])  # mean 2, sample std 1
    assert fallback_threshold(good, sigma=3.0) == pytest.approx(5.0)
    assert fallback_threshold(good, sigma=0.0) == pytest.approx(3.03)  # 1 % above the highest good
    assert fallback_threshold(np.array([4.0]), sigma=3.0) == pytest.approx(4.04)


def test_fallback_keeps_every_good_calibration_image_ok():
    good = np.random.default_rng(0).random(40).astype(np.float32) * 10 + 20
    thresholds = calibrate(good, np.zeros(40, dtype=np.int64), None, None, ThresholdSettings(fallback_sigma=3.0))
    t = thresholds.image_threshold
    normalized = normalize(good, t, float(good.min()), float(good.max()))
    assert not decide(normalized).any()
    assert thresholds.pixel_threshold == t and thresholds.pixel_from_image
    assert "no defective" in thresholds.notes[0] and "40 good" in thresholds.image_source


def test_calibrate_uses_pixels_when_masks_exist():
    scores = np.array([1.0, 2.0, 5.0, 6.0])
    labels = np.array([0, 0, 1, 1])
    pixels = np.array([0.1, 0.2, 0.3, 0.9, 0.95])
    pixel_labels = np.array([0, 0, 0, 1, 1])
    thresholds = calibrate(scores, labels, pixels, pixel_labels)
    assert (thresholds.image_threshold, thresholds.pixel_threshold) == (3.5, pytest.approx(0.6))
    assert not thresholds.pixel_from_image and thresholds.image_source.startswith("F1-optimal on 4")
    thresholds = calibrate(scores, labels, None, None)
    assert thresholds.pixel_threshold == 3.5 and thresholds.pixel_from_image and "no masks" in thresholds.notes[0]


# Good calibration scores 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sample std sqrt(32 / 7) = 2.13809.
GOOD = np.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])


@pytest.mark.parametrize("rule, expected, source", [
    (ThresholdSettings(method="sigma", sigma=6.0), 5 + 6 * math.sqrt(32 / 7), "mean + 6 std of the scores of 8 good"),
    (ThresholdSettings(method="sigma", sigma=1.5), 5 + 1.5 * math.sqrt(32 / 7), "mean + 1.5 std"),
    # Linear interpolation between order statistics: rank 0.5 * 7 = 3.5 -> between 4 and 5.
    (ThresholdSettings(method="percentile", percentile=50.0), 4.5, "50th percentile of the scores of 8 good"),
    # rank 0.9 * 7 = 6.3 -> 7 + 0.3 * (9 - 7).
    (ThresholdSettings(method="percentile", percentile=90.0), 7.6, "90th percentile"),
    (ThresholdSettings(method="percentile", percentile=100.0), 9.0, "100th percentile"),
    (ThresholdSettings(method="manual", image=6.25), 6.25, "manual (threshold.image)"),
    # auto without defects: max(5 + 3 * 2.13809, 9 * 1.01) = 11.414.
    (ThresholdSettings(), 5 + 3 * math.sqrt(32 / 7), "max(mean + 3 std, highest + 1%)"),
    (ThresholdSettings(fallback_sigma=1.0), 9.09, "max(mean + 1 std, highest + 1%)"),
])
def test_every_method_on_hand_computed_good_scores(rule, expected, source):
    thresholds = calibrate(GOOD, np.zeros(GOOD.size, dtype=np.int64), None, None, rule)
    assert thresholds.image_threshold == pytest.approx(expected, rel=1e-12)
    assert source in thresholds.image_source
    assert thresholds.pixel_threshold == thresholds.image_threshold and thresholds.pixel_from_image


def test_methods_ignore_defective_scores_except_f1():
    # Defective images change F1 and auto, but sigma and percentile use the good scores only.
    scores = np.concatenate([GOOD, [20.0, 30.0]])
    labels = np.array([0] * GOOD.size + [1, 1])
    sigma = calibrate(scores, labels, None, None, ThresholdSettings(method="sigma", sigma=2.0))
    assert sigma.image_threshold == pytest.approx(5 + 2 * math.sqrt(32 / 7))
    percentile = calibrate(scores, labels, None, None, ThresholdSettings(method="percentile", percentile=50.0))
    assert percentile.image_threshold == pytest.approx(4.5)
    auto = calibrate(scores, labels, None, None, ThresholdSettings())
    assert auto.image_threshold == pytest.approx((9.0 + 20.0) / 2) and auto.image_source.startswith("F1-optimal")
    masks = (np.array([0.1, 0.8]), np.array([0, 1]))
    # With masks, only f1 sets its own pixel threshold; sigma keeps the image one.
    assert calibrate(scores, labels, *masks, ThresholdSettings(method="sigma")).pixel_from_image
    assert calibrate(scores, labels, *masks, ThresholdSettings(method="f1")).pixel_threshold == pytest.approx(0.45)


def test_manual_pixel_threshold_and_errors():
    labels = np.zeros(GOOD.size, dtype=np.int64)
    manual = calibrate(GOOD, labels, None, None, ThresholdSettings(method="manual", image=6.0, pixel=3.5))
    assert (manual.image_threshold, manual.pixel_threshold, manual.pixel_from_image) == (6.0, 3.5, False)
    assert manual.pixel_source == "manual (threshold.pixel)"
    with pytest.raises(ValueError, match="f1 needs defective calibration images"):
        calibrate(GOOD, labels, None, None, ThresholdSettings(method="f1"))
    with pytest.raises(ValueError, match="manual needs threshold.image"):
        calibrate(GOOD, labels, None, None, ThresholdSettings(method="manual"))
    with pytest.raises(ValueError, match="sigma needs good calibration images"):
        calibrate(np.array([3.0]), np.array([1]), None, None, ThresholdSettings(method="sigma"))
    with pytest.raises(ValueError, match="no calibration scores"):
        calibrate(np.array([]), np.array([]), None, None)


@pytest.mark.parametrize("array", [np.array, torch.tensor])
def test_normalize_hand_computed_on_arrays_and_tensors(array):
    values = array([0.0, 4.0, 6.0, 10.0, 30.0, -20.0])
    out = normalize(values, threshold=6.0, min_value=2.0, max_value=12.0)
    # (x - 6) / 10 + 0.5, clipped
    assert type(out) is type(values)
    assert np.allclose(np.asarray(out), [0.0, 0.3, 0.5, 0.9, 1.0, 0.0])
    assert decide(out).tolist() == [False, False, True, True, True, False]
    assert decide(out, 0.95).tolist() == [False, False, False, False, True, False]
    # The model normalizes with its calibration buffers (tensors), the same formula.
    t = torch.tensor
    tensors = torch.as_tensor(np.asarray(values, dtype=np.float32))
    assert np.allclose(normalize(tensors, t(6.0), t(2.0), t(12.0)).numpy(), np.asarray(out), atol=1e-6)


@pytest.mark.parametrize("array", [np.array, torch.tensor])
def test_normalize_degenerate_range_and_nan(array):
    out = normalize(array([5.0, 5.5, float("nan")]), threshold=5.0, min_value=5.0, max_value=5.0)
    assert out[0] == 0.5 and out[1] == 1.0 and math.isnan(out[2])
    out = normalize(array([5.0, 9.0]), threshold=5.0, min_value=6.0, max_value=4.0)  # max below min: span 1
    assert out[0] == 0.5 and out[1] == 1.0


def test_image_auroc_equals_torchmetrics():
    from torchmetrics.functional.classification import binary_auroc

    rng = np.random.default_rng(5)
    scores = rng.normal(30, 5, 60).astype(np.float32)  # raw distances, far outside [0, 1]
    labels = (rng.random(60) < 0.5).astype(np.int64)
    expected = float(binary_auroc(torch.from_numpy((scores - scores.min()) / np.ptp(scores)).double(),
                                  torch.from_numpy(labels)))
    assert image_metrics(scores, labels, scores > 30)["image_AUROC"] == pytest.approx(expected, abs=1e-6)


def test_image_metrics_hand_computed():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    labels = np.array([0, 0, 1, 1])
    predicted = np.array([False, True, True, True])
    m = image_metrics(scores, labels, predicted)
    # AUROC: pairs (d, g): (0.35>0.1) (0.35<0.4) (0.8>0.1) (0.8>0.4) -> 3/4
    assert m["image_AUROC"] == pytest.approx(0.75)
    # F1: TP 2, FP 1, FN 0 -> 4/5
    assert m["image_F1"] == pytest.approx(0.8)


def test_image_metrics_single_class_is_undefined():
    m = image_metrics(np.array([1.0, 2.0]), np.array([0, 0]), np.array([False, False]))
    assert m == {"image_AUROC": None, "image_F1": None}


def test_pixel_metrics_perfect_separation():
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[1, 1:3, 1:3] = True
    maps[1, 1:3, 1:3] = 5.0
    m = pixel_metrics(maps, masks, maps > 1)
    assert m["pixel_AUROC"] == pytest.approx(1.0)
    assert m["pixel_F1"] == pytest.approx(1.0)
    assert m["pixel_AUPRO"] == pytest.approx(1.0)


def test_aupro_hand_made_case():
    # One image, 10 pixels in a row: region A = pixels 0-1, region B = pixels 3-6, background 2 and 7-9.
    mask = np.array([[1, 1, 0, 1, 1, 1, 1, 0, 0, 0]], dtype=np.uint8)
    # Scores: region A pixels 0.9, 0.9; background pixel 2 gets 0.8; region B 0.7 x4; background 0.1.
    scores = np.array([[0.9, 0.9, 0.8, 0.7, 0.7, 0.7, 0.7, 0.1, 0.1, 0.1]])
    # Background pixels: 2, 7, 8, 9 (4 of them). Regions: A = {0,1}, B = {3,4,5,6}.
    # Thresholds: >=0.9: FPR 0, PRO (1 + 0)/2 = 0.5
    #             >=0.8: FPR 1/4, PRO 0.5
    #             >=0.7: FPR 1/4, PRO 1.0
    #             >=0.1: FPR 1, PRO 1.0
    # Curve up to FPR 0.3: (0,0) -> (0,0.5) -> (0.25,0.5) -> (0.25,1) -> (0.3,1)
    # Area = 0.25*0.5 + 0.05*1 = 0.175; normalised by 0.3 -> 0.58333...
    assert aupro(scores, mask, fpr_limit=0.3) == pytest.approx(0.175 / 0.3)
    # Up to FPR 1: + 0.7 * 1 -> (0.125 + 0.75) / 1 = 0.875
    assert aupro(scores, mask, fpr_limit=1.0) == pytest.approx(0.875)


def test_aupro_weighs_regions_equally_not_pixels():
    # A big region found and a small region missed: PRO counts each region once.
    mask = np.zeros((1, 10, 10), dtype=np.uint8)
    mask[0, 0:5, 0:5] = 1  # 25 pixels
    mask[0, 8, 8] = 1  # 1 pixel, separate region
    scores = np.zeros((1, 10, 10))
    scores[0, 0:5, 0:5] = 1.0
    # At threshold 1: FPR 0, PRO 0.5; the next threshold (0) has FPR 1: the curve to 0.3 stays at 0.5
    # except at FPR 0, so the area is 0.5 * 0.3 / 0.3 plus the interpolation towards PRO 1 at FPR 1.
    expected = (0.3 * (0.5 + (0.5 + 0.5 * 0.3)) / 2) / 0.3
    assert aupro(scores, mask) == pytest.approx(expected)


def test_aupro_undefined_without_regions():
    assert aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 4))) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_auroc_equals_torchmetrics_with_ties(seed):
    from torchmetrics.functional.classification import binary_auroc

    from hamacho.post import sweep

    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=5000), 1).astype(np.float32)  # many ties
    labels = (rng.random(5000) < 0.1 + 0.2 * (scores > 0.5)).astype(np.int64)
    expected = float(binary_auroc(torch.sigmoid(torch.from_numpy(scores).double()), torch.from_numpy(labels)))
    assert sweep.auroc(sweep.sweep(scores, labels)) == pytest.approx(expected, abs=1e-6)  # torchmetrics sums in float32
    assert sweep.auroc(sweep.sweep(scores, np.zeros(5000))) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_threshold_reaches_the_best_f1_of_any_cut(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=400), 2)
    labels = (rng.random(400) < 1 / (1 + np.exp(-3 * scores))).astype(np.int64)

    def f1_at(cut: float) -> float:
        called = scores >= cut
        tp = int((called & (labels == 1)).sum())
        return 2 * tp / (int(called.sum()) + int(labels.sum()))

    best = max(f1_at(float(c)) for c in np.unique(scores))
    threshold = f1_threshold(scores, labels)
    assert f1_at(threshold) == pytest.approx(best)
    assert not bool((scores == threshold).any())  # a midpoint between two scores, never on one


def test_decision_f1_counts():
    from hamacho.post.metrics import decision_f1

    labels = np.array([1, 1, 0, 0, 1])
    predicted = np.array([True, False, True, False, True])  # TP 2, FP 1, FN 1 -> 4 / 6
    assert decision_f1(predicted, labels) == pytest.approx(2 / 3)
    assert decision_f1(np.zeros(3, dtype=bool), np.zeros(3)) is None
    assert decision_f1(np.ones(3, dtype=bool), np.zeros(3)) == 0.0
