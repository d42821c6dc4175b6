"""Method balanced, auto with few defective images, and the good-image fit read at any threshold (#23)."""

import math

import numpy as np
import pytest

from hamacho.config import build_config
from hamacho.errors import ConfigError
from hamacho.post.balanced import balanced_threshold, best_balanced_cut, few_defects_threshold, split_at
from hamacho.post.good_images import fit_good_images, rate_at
from hamacho.post.threshold import calibrate, resolved_method
from hamacho.settings import ThresholdSettings

GOOD = np.random.default_rng(0).lognormal(3.0, 0.1, 60)  # about 20, highest 25.2


def _labels(goods: int, defects: int) -> np.ndarray:
    return np.r_[np.zeros(goods, dtype=np.int64), np.ones(defects, dtype=np.int64)]


def test_best_balanced_cut_on_hand_computed_scores():
    # goods 1 2 3 4, defects 3.5 5 6: cut 3.25 -> goods OK 3/4, defects NG 3/3 -> 0.875 (the best);
    # cut 4.5 -> 4/4 and 2/3 -> 0.833.
    cut = best_balanced_cut(np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 5.0, 6.0]), prefer=100.0)
    assert (cut.threshold, cut.good_ok, cut.defects_ng) == (3.25, 0.75, 1.0)
    assert cut.balanced_accuracy == 0.875


def test_ties_keep_the_preferred_cut_when_it_lies_in_a_best_interval():
    goods, defects = np.array([1.0, 2.0, 3.0]), np.array([7.0, 8.0])
    assert best_balanced_cut(goods, defects, prefer=4.0).threshold == 4.0  # anywhere in (3, 7] is perfect
    assert best_balanced_cut(goods, defects, prefer=7.0).threshold == 7.0  # NG at or above: 7 still splits
    assert best_balanced_cut(goods, defects, prefer=9.0).threshold == 5.0  # outside: the midpoint of (3, 7]


def test_no_cut_better_than_chance_gives_none():
    assert best_balanced_cut(np.array([5.0, 6.0]), np.array([1.0, 2.0]), prefer=3.0) is None
    assert best_balanced_cut(np.array([5.0]), np.array([]), prefer=3.0) is None
    assert best_balanced_cut(np.array([5.0]), np.array([5.0]), prefer=3.0) is None


def test_rate_at_reads_the_fit_at_any_threshold():
    fit = fit_good_images(GOOD, 0.01)
    same = rate_at(fit, fit.threshold, GOOD)
    assert same.expected_fpr == pytest.approx(0.01, rel=1e-6)
    assert (same.fpr_low, same.fpr_high) == pytest.approx((fit.fpr_low, fit.fpr_high), rel=1e-6)
    looser = fit_good_images(GOOD, 0.1)
    assert rate_at(fit, looser.threshold, GOOD).expected_fpr == pytest.approx(0.1, rel=1e-6)
    median = rate_at(fit, math.exp(fit.location), GOOD)
    assert median.expected_fpr == 0.5 and median.above == int(np.count_nonzero(GOOD >= math.exp(fit.location)))
    assert rate_at(fit, 1e-3, GOOD).expected_fpr > 0.999 and rate_at(fit, 1e6, GOOD).expected_fpr < 1e-9
    few = fit_good_images(np.array([10.0, 11.0, 12.0]), 0.01)  # no fit: (k + 1) / (n + 1)
    assert rate_at(few, 11.5, np.array([10.0, 11.0, 12.0])).expected_fpr == 0.5
    assert rate_at(few, few.threshold, np.array([10.0, 11.0, 12.0])).expected_fpr == 0.25


def test_balanced_threshold_moves_towards_defects_that_overlap_the_good_tail():
    fpr = fit_good_images(GOOD, 0.01).threshold
    defects = np.linspace(22.0, 40.0, 90)  # many synthetic defects just above the good images' bulk
    found = balanced_threshold(GOOD, defects, 0.01, 0.1)
    assert found.bound == "cut" and found.threshold < fpr  # more defects caught for a few more false alarms
    assert found.floor <= found.threshold and found.ceiling == fpr
    assert 0.01 < found.rate.expected_fpr <= 0.1
    assert found.split == split_at(GOOD, defects, found.threshold)
    assert found.split.balanced_accuracy > split_at(GOOD, defects, fpr).balanced_accuracy


def test_balanced_threshold_never_goes_below_the_floor_and_keeps_the_rule_when_separated():
    deep = np.linspace(20.0, 21.0, 90)  # defects among the good images' bulk: the best cut would sit low
    found = balanced_threshold(GOOD, deep, 0.01, 0.1)
    assert found.bound == "floor" and found.threshold == fit_good_images(GOOD, 0.1).threshold
    assert found.rate.expected_fpr == pytest.approx(0.1, rel=1e-6) and found.cut < found.threshold
    separate = balanced_threshold(GOOD, np.linspace(60.0, 90.0, 30), 0.01, 0.1)
    assert separate.threshold == fit_good_images(GOOD, 0.01).threshold and separate.bound == "cut"
    # perfect separation only above an odd good image: the cut would go above the good-image rule, which caps it
    odd = np.r_[GOOD, 30.0]
    capped = balanced_threshold(odd, np.linspace(40.0, 50.0, 30), 0.01, 0.1)
    assert capped.bound == "ceiling" and capped.cut == 35.0 and capped.threshold == fit_good_images(odd, 0.01).threshold
    assert "lowered from 35 to the good-image rule at 1% false alarms" in capped.why()
    chance = balanced_threshold(GOOD, np.array([1.0, 2.0]), 0.01, 0.1)
    assert chance.bound == "good-image rule" and chance.threshold == separate.threshold and chance.cut is None


def test_few_defects_threshold_is_the_f1_cut_within_the_good_image_bounds():
    ceiling, floor = fit_good_images(GOOD, 0.01).threshold, fit_good_images(GOOD, 0.1).threshold
    easy = few_defects_threshold(GOOD, np.array([60.0, 70.0, 80.0]), 0.01, 0.1)
    assert easy.bound == "ceiling" and easy.threshold == ceiling and easy.cut > ceiling
    middle = (floor + ceiling) / 2
    inside = few_defects_threshold(GOOD, np.array([middle + 0.01] * 3), 0.01, 0.1)
    assert inside.bound == "cut" and floor < inside.threshold < ceiling
    low = few_defects_threshold(GOOD, np.array([17.0, 17.5, 18.0]), 0.01, 0.1)  # F1: NG from below 17
    assert low.bound == "floor" and low.threshold == floor and low.rate.expected_fpr == pytest.approx(0.1, rel=1e-6)
    with pytest.raises(ValueError, match="needs defective calibration images"):
        few_defects_threshold(GOOD, np.array([]), 0.01, 0.1)


@pytest.mark.parametrize(("method", "defects", "few", "rule"), [
    ("auto", 0, 10, "fpr"), ("auto", 3, 10, "f1-bounded"), ("auto", 9, 10, "f1-bounded"), ("auto", 10, 10, "f1"),
    ("auto", 63, 10, "f1"), ("auto", 3, 0, "f1"), ("auto", True, 10, "f1-bounded"), ("balanced", 0, 10, "balanced"),
    ("fpr", 5, 10, "fpr"),
])
def test_resolved_method(method, defects, few, rule):
    assert resolved_method(method, defects, few) == rule
    # scored synthetic defects make auto weigh them (balanced) where there are no real defects, and only there
    assert resolved_method(method, defects, few, synthetic=True, goods=60) == (
        "balanced" if rule == "fpr" and method == "auto" else rule)
    # fewer than 5 good calibration scores cannot fit the spread that bounds balanced: the good-image rule
    assert resolved_method(method, defects, few, synthetic=True, goods=4) == rule


def test_auto_with_synthetic_defects_and_no_real_ones_is_balanced_when_a_spread_can_be_fitted():
    synthetic = np.linspace(22.0, 40.0, 90)
    auto = calibrate(GOOD, _labels(60, 0), None, None, ThresholdSettings(), synthetic)
    asked = calibrate(GOOD, _labels(60, 0), None, None, ThresholdSettings(method="balanced"), synthetic)
    assert auto.rule == "balanced" and auto.image_threshold == asked.image_threshold
    assert auto.image_source == asked.image_source and auto.details == asked.details
    assert auto.notes[0].startswith("no defective calibration images: the threshold weighs 90 synthetic defect(s) "
                                    "against 60 good image(s) (auto chose balanced); synthetic defects stand in")
    few = calibrate(GOOD[:20], _labels(20, 0), None, None, ThresholdSettings(), synthetic)
    low, high = few.details["expected_fpr_low"], few.details["expected_fpr_high"]
    assert few.rule == "balanced" and few.notes[1].startswith("only 20 good image(s) set the threshold: its "
                                                              "false-alarm rate is uncertain (95% range ")
    assert 0 < low < few.details["expected_fpr"] < high
    # fewer than 5 good images: no spread to bound the cut with, the good-image rule's fallback
    tiny = calibrate(GOOD[:4], _labels(4, 0), None, None, ThresholdSettings(), synthetic)
    assert tiny.rule == "fpr" and tiny.image_threshold == fit_good_images(GOOD[:4], 0.01).threshold
    assert calibrate(GOOD, _labels(60, 0), None, None, ThresholdSettings()).rule == "fpr"  # none scored


def test_calibrate_reports_the_rule_and_its_figures():
    scores = np.concatenate([GOOD, [60.0, 70.0, 80.0]])
    auto = calibrate(scores, _labels(60, 3), None, None)
    assert auto.rule == "f1-bounded" and auto.image_threshold == fit_good_images(GOOD, 0.01).threshold
    f1 = (GOOD.max() + 60.0) / 2
    assert auto.image_source.startswith(f"F1 on 3 defective calibration image(s) (fewer than 20) bounded by the "
                                        f"good-image rule on 60 good image(s): lowered from {f1:.4g} to the good-image "
                                        f"rule at 1% false alarms (threshold.target_fpr); expected false alarms 1%")
    assert auto.details["expected_fpr"] == pytest.approx(0.01) and auto.details["defect_scores"] == 3
    assert auto.notes[0].startswith("only 3 defective calibration image(s) (fewer than threshold.few_defects 20)")
    many = calibrate(scores, _labels(60, 3), None, None, ThresholdSettings(few_defects=3))
    assert many.rule == "f1" and many.image_threshold == pytest.approx((GOOD.max() + 60.0) / 2)
    synthetic = np.linspace(22.0, 40.0, 90)
    balanced = calibrate(GOOD, _labels(60, 0), None, None, ThresholdSettings(method="balanced"), synthetic)
    assert balanced.rule == "balanced" and balanced.pixel_from_image
    assert balanced.image_source.startswith("balanced: the cut with the best balanced accuracy between the scores "
                                            "of 60 good image(s) and 90 synthetic defect(s) (")
    assert "expected false alarms" in balanced.image_source and balanced.details["max_fpr"] == 0.1
    assert "synthetic defects stand in for real ones" in balanced.notes[0]
    # with defective calibration images, balanced weighs the real ones and ignores synthetic scores
    real = calibrate(scores, _labels(60, 3), None, None, ThresholdSettings(method="balanced"), synthetic)
    assert "and 3 defective calibration image(s)" in real.image_source and real.details["defects_ng"] == 1.0
    with pytest.raises(ValueError, match="balanced needs defect scores"):
        calibrate(GOOD, _labels(60, 0), None, None, ThresholdSettings(method="balanced"))


def test_balanced_without_synthetic_images_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^threshold.method balanced needs threshold.synthetic_images > 0"):
        build_config("padim", overrides=["threshold.method=balanced", "threshold.synthetic_images=0"])
    assert build_config("padim", overrides=["threshold.method=balanced"]).threshold.max_fpr == 0.1
    with pytest.raises(ConfigError, match="threshold.max_fpr"):
        build_config("padim", overrides=["threshold.max_fpr=0.6"])
