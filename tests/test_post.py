"""Thresholds, normalization and metrics against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from hamacho.post.good_images import t_quantile
from hamacho.post.metrics import aupro, image_metrics, pixel_metrics
from hamacho.post.normalization import decide, normalize
from hamacho.post.threshold import calibrate, f1_threshold
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


def test_auto_without_defects_keeps_good_images_ok_and_states_its_false_alarm_rate():
    good = np.random.default_rng(0).lognormal(3.0, 0.1, 40).astype(np.float32)
    thresholds = calibrate(good, np.zeros(40, dtype=np.int64), None, None, ThresholdSettings(target_fpr=0.01))
    t = thresholds.image_threshold
    assert thresholds.pixel_threshold == t and thresholds.pixel_from_image
    assert thresholds.image_source.startswith("good-image rule: the score 99% of good parts stay below, by a robust")
    assert "40 good image(s)" in thresholds.image_source and "expected false alarms 1%" in thresholds.image_source
    assert thresholds.notes[0] == ("no defective calibration images: the threshold comes from 40 good image(s) "
                                   "alone, at an accepted false-alarm rate of 1% (threshold.target_fpr)")
    details = thresholds.details
    assert details["good_images"] == 40 and details["target_fpr"] == details["expected_fpr"] == 0.01
    assert 0 < details["expected_fpr_low"] < 0.01 < details["expected_fpr_high"] < 0.2
    assert details["good_images_above"] == int((good >= t).sum()) <= 2
    assert len(thresholds.notes) == 1  # 40 images: no warning about too few


def test_too_few_good_images_keep_every_one_ok_and_say_so():
    few = calibrate(np.array([10.0, 12.0, 11.0]), np.zeros(3, dtype=np.int64), None, None)
    assert few.image_threshold == pytest.approx(14.0)  # max(11 + 3 * 1, 12 * 1.01)
    assert few.image_source == ("good-image rule: too few good images (3) to fit their spread, so max(mean + 3 std, "
                                "highest + 1%) of their scores; false alarms at most 25% (95% range 0.84%-71%)")
    assert few.details["expected_fpr"] == 0.25  # a new good part beats the highest of 3 with probability 1/4
    assert few.notes == ["no defective calibration images: the threshold comes from 3 good image(s) alone",
                         ("only 3 good image(s) set the threshold, too few to aim at 1% false alarms: expect at most "
                         "25% (95% range 0.84%-71%); with 5 or more the threshold is set at threshold.target_fpr")]


def test_one_odd_good_image_hardly_moves_the_good_image_rule():
    # As in a category with 6 held-back images, one scored 116 against about 390 for the rest: mean + 3 std
    # went above every defect (444-606); the robust rule stays near the good images' tail.
    good = np.array([383.0, 390.0, 392.0, 395.0, 402.0, 116.0])
    odd = calibrate(good, np.zeros(6, dtype=np.int64), None, None).image_threshold
    plain = calibrate(good[:5], np.zeros(5, dtype=np.int64), None, None).image_threshold
    assert 402 < odd < 444 and abs(odd - plain) / plain < 0.06  # one rank of the median and MAD: 4.4 % here
    assert good.mean() + 3 * good.std(ddof=1) > 606  # what the previous rule did: above every defect
    six = calibrate(good, np.zeros(6, dtype=np.int64), None, None)
    assert "only 6 good image(s) set the threshold: its false-alarm rate is uncertain" in six.notes[1]


@pytest.mark.parametrize(("p", "df", "exact"), [(0.99, 3, 4.541), (0.99, 5, 3.365), (0.99, 10, 2.764),
                                                (0.95, 4, 2.132), (0.999, 10, 4.144), (0.99, 100, 2.364)])
def test_t_quantiles_match_the_tables(p, df, exact):
    assert t_quantile(p, df) == pytest.approx(exact, rel=0.005)


def test_the_target_false_alarm_rate_moves_the_threshold():
    good = np.random.default_rng(1).lognormal(2.0, 0.2, 200)
    cuts = [calibrate(good, np.zeros(200, dtype=np.int64), None, None,
                      ThresholdSettings(target_fpr=fpr)).image_threshold for fpr in (0.1, 0.01, 0.001)]
    assert cuts[0] < cuts[1] < cuts[2]
    assert np.mean(good >= cuts[0]) == pytest.approx(0.1, abs=0.05)  # the fit follows the data's own tail


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
    # auto (and fpr) without defects: log scores have median ln(sqrt(20)) and MAD ln(1.25) / 2; with 8 images
    # the MAD's small-sample factor is 1.129, and the prediction bound t(7) * sqrt(1 + pi / 16) scale.
    (ThresholdSettings(), math.sqrt(20) * math.exp(t_quantile(0.99, 7) * math.sqrt(1 + math.pi / 16) * 1.4826 * 1.129
                                                   * math.log(1.25) / 2), "good-image rule: the score 99% of good parts stay below"),
    (ThresholdSettings(method="fpr", target_fpr=0.05),
     math.sqrt(20) * math.exp(t_quantile(0.95, 7) * math.sqrt(1 + math.pi / 16) * 1.4826 * 1.129 * math.log(1.25) / 2),
     "the score 95% of good parts stay below"),
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
    auto = calibrate(scores, labels, None, None, ThresholdSettings(few_defects=2))  # 2 defects: not few
    assert auto.image_threshold == pytest.approx((9.0 + 20.0) / 2) and auto.image_source.startswith("F1-optimal")
    # fewer than threshold.few_defects (20): the F1 cut 14.5 is lowered to the good-image rule (tests/test_balanced.py)
    few = calibrate(scores, labels, None, None, ThresholdSettings())
    assert few.rule == "f1-bounded" and few.image_threshold == calibrate(GOOD, labels[:8], None, None).image_threshold
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
