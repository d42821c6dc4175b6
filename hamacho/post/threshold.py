"""Thresholds in raw score units, by the method the configuration names (``threshold.method``).

* ``f1``: the score with the best F1 on the labelled calibration images (needs defective ones);
* ``fpr``: the good-image rule, at the accepted false-alarm rate ``target_fpr``, with the expected rate and
  its uncertainty (:mod:`hamacho.post.good_images`);
* ``sigma``: mean + k standard deviations of the good calibration images' scores;
* ``percentile``: a percentile of the good calibration images' scores;
* ``balanced``: the cut with the best balanced accuracy between the good scores and defect scores (synthetic
  defects without defective calibration images, else the real ones), kept between the good-image rule at
  ``max_fpr`` (floor) and at ``target_fpr`` (ceiling) (:mod:`hamacho.post.balanced`);
* ``manual``: raw values given by the user;
* ``auto`` (the default): ``fpr`` without defective calibration images; ``f1-bounded`` (the F1 cut kept
  between the good-image bounds at ``max_fpr`` and ``target_fpr``) with fewer than ``few_defects`` of them
  and at least five good calibration images (fewer cannot bound it); ``f1`` otherwise.

Whatever the method, the normalization maps the threshold to 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hamacho.post import sweep
from hamacho.post.balanced import BoundedThreshold, balanced_threshold, few_defects_threshold
from hamacho.post.good_images import FEW_IMAGES, MIN_FIT_IMAGES, fit_good_images, percent_text
from hamacho.settings import ThresholdSettings


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """A threshold with the highest F1 on the precision-recall curve (NG means score >= threshold).

    The F1-optimal cut lies between the lowest score called NG and the highest score below it; the
    midpoint is returned (see :func:`hamacho.post.sweep.best_f1_cut`), so that an image scored at the
    cut is not flipped by float noise (a different batch size changes scores in the sixth digit) and
    unseen images get the widest margin.

    Args:
        scores: Raw scores, any range.
        labels: 1 for defective, 0 for good; both classes should be present.

    Returns:
        The threshold.
    """
    return sweep.best_f1_cut(sweep.sweep(scores, labels))


def sigma_threshold(good_scores: np.ndarray, sigma: float) -> float:
    """``mean + sigma * std`` of good scores (sample std; 0 for a single score), in float64.

    Raises:
        ValueError: Without scores.
    """
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("a threshold from good scores needs at least one good score")
    std = float(scores.std(ddof=1)) if scores.size > 1 else 0.0
    return float(scores.mean()) + sigma * std


GOOD_IMAGE_RULES = ("fpr", "balanced", "f1-bounded")  # rules that use the good-image fit (out-of-fold scores help)


def resolved_method(method: str, defects: int, few_defects: int = 20, synthetic: bool = False, goods: int = 0) -> str:
    """The rule that sets the image threshold: ``auto`` is ``balanced`` without defective calibration images
    when synthetic defects are scored (``synthetic``) and at least 5 good images calibrate (fewer cannot fit
    the spread that bounds it), else ``fpr`` (the good-image rule); ``f1-bounded`` with fewer than
    ``few_defects`` defective images, else ``f1``; other methods are themselves.

    Args:
        method: ``threshold.method``.
        defects: Defective calibration images (a bool counts as 0 or 1).
        few_defects: ``threshold.few_defects``; 0 or 1: ``f1`` with any defective image.
        synthetic: Synthetic defects are (or will be) scored to place the threshold
            (``threshold.synthetic_images`` > 0 and held-out good images to paste them on).
        goods: Good calibration scores (held-out images and out-of-fold ones) there are, or will be.
    """
    if method != "auto":
        return method
    if not defects:
        return "balanced" if synthetic and goods >= MIN_FIT_IMAGES else "fpr"
    return "f1-bounded" if defects < few_defects else "f1"


@dataclass
class Thresholds:
    """Raw thresholds and, in words, how each was set (for the report and metrics.json).

    Attributes:
        image_threshold: Raw image threshold (normalized 0.5).
        pixel_threshold: Raw pixel threshold (normalized 0.5).
        image_source: How the image threshold was set.
        pixel_source: How the pixel threshold was set.
        pixel_from_image: True when the pixel threshold is the image threshold (then the maps are
            normalized like the image scores, so a pixel is NG exactly when it alone would make its image NG).
        notes: Remarks for the user.
        details: Figures of the good-image rule (images, target and expected false-alarm rates), when it
            set or bounded the image threshold.
        rule: The rule that set the image threshold (what ``auto`` resolved to: ``fpr``, ``f1-bounded``, ``f1``).
    """

    image_threshold: float
    pixel_threshold: float
    image_source: str
    pixel_source: str
    pixel_from_image: bool
    notes: list[str] = field(default_factory=list)
    details: dict[str, float | int] = field(default_factory=dict)
    rule: str = ""


def calibrate(
    image_scores: np.ndarray,
    labels: np.ndarray,
    pixel_scores: np.ndarray | None,
    pixel_labels: np.ndarray | None,
    rule: ThresholdSettings | None = None,
    synthetic_scores: np.ndarray | None = None,
    pixel_counts: sweep.Sweep | None = None,
) -> Thresholds:
    """Image and pixel thresholds from labelled calibration scores, by ``rule.method``.

    The pixel threshold is F1-optimal over the labelled pixels when the rule is ``f1`` or ``f1-bounded`` and
    masks with defects exist; manual when given; otherwise it is the image threshold.

    Args:
        image_scores: Raw scores of labelled images (N,).
        labels: 0 good / 1 defective (N,).
        pixel_scores: Map values of images with pixel labels, or None.
        pixel_labels: Matching 0/1 pixel labels, or None.
        rule: The method and its parameters (default: auto).
        synthetic_scores: Raw scores of synthetic defects (method balanced without defective images).
        pixel_counts: The labelled pixels counted into score bins instead of ``pixel_scores`` and
            ``pixel_labels`` (:mod:`hamacho.post.streamed`, for many masked images): the F1 cut is a bin edge.

    Raises:
        ValueError: Without calibration scores, for f1 without defective images, for balanced without defect
            scores, for a rule of good images without good images, or for manual without an image threshold.
    """
    rule = rule or ThresholdSettings()
    image_scores, labels = np.asarray(image_scores), np.asarray(labels)
    if image_scores.size == 0:
        raise ValueError("no calibration scores")
    goods = image_scores[labels == 0]
    defects = int(np.count_nonzero(labels == 1))
    found_synthetic = synthetic_scores is not None and bool(np.isfinite(np.asarray(synthetic_scores, float)).any())
    method = resolved_method(rule.method, defects, rule.few_defects, found_synthetic, goods.size)
    notes: list[str] = []
    unbounded = ""
    if method == "f1-bounded" and goods.size < MIN_FIT_IMAGES:
        method = "f1"  # too few good images to fit a spread: nothing to bound the F1 cut with
        unbounded = (f"only {goods.size} good calibration image(s), too few for the good-image rule to bound the F1 "
                     f"cut on {defects} defective image(s) (it needs {MIN_FIT_IMAGES}): the F1 cut alone")
    if method in ("fpr", "sigma", "percentile", *GOOD_IMAGE_RULES) and goods.size == 0:
        raise ValueError(f"threshold method {method} needs good calibration images")
    counted = f"the scores of {goods.size} good calibration image(s)"
    details: dict[str, float | int] = {}
    if method == "f1":
        if not defects:
            raise ValueError("threshold.method f1 needs defective calibration images; use auto, sigma, percentile "
                             "or manual")
        image, source = f1_threshold(image_scores, labels), (
            f"F1-optimal on {image_scores.size} labelled calibration images ({goods.size} good, {defects} defective)")
    elif method == "fpr":
        fit = fit_good_images(goods, rule.target_fpr)
        image, source, details = fit.threshold, fit.describe(), fit.as_dict()
        notes += fit.notes() if not defects else []
    elif method == "f1-bounded":
        bounded = few_defects_threshold(goods, image_scores[labels == 1], rule.target_fpr, rule.max_fpr)
        image, source, details = bounded.threshold, _few_defects_source(bounded, rule.few_defects), bounded.as_dict()
        notes.append(f"only {defects} defective calibration image(s) (fewer than threshold.few_defects "
                     f"{rule.few_defects}): an F1 cut on so few overfits, so the good-image rule bounds it")
    elif method == "balanced":
        real = image_scores[labels == 1]
        found = real if defects else np.asarray([] if synthetic_scores is None else synthetic_scores)
        if not np.isfinite(np.asarray(found, dtype=np.float64)).any():
            raise ValueError("threshold.method balanced needs defect scores: synthetic defects "
                             "(threshold.synthetic_images > 0) or defective calibration images")
        bounded = balanced_threshold(goods, found, rule.target_fpr, rule.max_fpr)
        kind = "defective calibration image(s)" if defects else "synthetic defect(s)"
        image, source, details = bounded.threshold, _balanced_source(bounded, goods.size, kind), bounded.as_dict()
        if not defects:
            chose = "auto chose balanced" if rule.method == "auto" else "threshold.method balanced"
            notes.append(f"no defective calibration images: the threshold weighs {bounded.defects} synthetic "
                         f"defect(s) against {goods.size} good image(s) ({chose}); synthetic defects stand in for "
                         f"real ones, so the recall they show is an estimate")
            if goods.size < FEW_IMAGES:
                rate = bounded.rate
                notes.append(f"only {goods.size} good image(s) set the threshold: its false-alarm rate is uncertain "
                             f"(95% range {percent_text(rate.fpr_low)}-{percent_text(rate.fpr_high)}); more good "
                             f"images narrow it")
    elif method == "sigma":
        image = sigma_threshold(goods, rule.sigma)
        source = f"mean + {rule.sigma:g} std of {counted}"
    elif method == "percentile":
        image, source = float(np.percentile(goods.astype(np.float64), rule.percentile)), (
            f"{rule.percentile:g}th percentile of {counted}")
    elif method == "manual":
        if rule.image is None:
            raise ValueError("threshold.method manual needs threshold.image (a raw score)")
        image, source = float(rule.image), "manual (threshold.image)"
    else:
        raise ValueError(f"unknown threshold method {rule.method!r}")
    if method == "manual" and rule.pixel is not None:
        return Thresholds(image, float(rule.pixel), source, "manual (threshold.pixel)", False, notes, details,
                          method)
    has_pixels = pixel_scores is not None and pixel_labels is not None and bool(np.any(pixel_labels))
    if method in ("f1", "f1-bounded") and pixel_counts is not None and pixel_counts.positives:
        notes += [unbounded] if unbounded else []
        pixels = pixel_counts.positives + pixel_counts.negatives
        return Thresholds(image, sweep.best_f1_cut(pixel_counts, midpoint=False), source,
                          f"F1-optimal on {pixels:,} labelled pixels (in score bins)", False, notes, details, method)
    if method in ("f1", "f1-bounded") and has_pixels:
        notes += [unbounded] if unbounded else []
        pixels = np.asarray(pixel_scores).size
        return Thresholds(image, f1_threshold(pixel_scores, pixel_labels), source,
                          f"F1-optimal on {pixels:,} labelled pixels", False, notes, details, method)
    if method in ("f1", "f1-bounded"):
        notes.append("no masks: the pixel threshold equals the image threshold")
    notes += [unbounded] if unbounded else []
    return Thresholds(image, image, source, "the image threshold", True, notes, details, method)


def _balanced_source(bounded: BoundedThreshold, goods: int, kind: str) -> str:
    """How method balanced set the threshold, in one line."""
    why = bounded.why()
    split = (f"{100 * bounded.split.good_ok:.0f}% of good images OK, {100 * bounded.split.defects_ng:.0f}% of "
             f"defects NG")
    return (f"balanced: the cut with the best balanced accuracy between the scores of {goods} good image(s) and "
            f"{bounded.defects} {kind}{f', {why}' if why else ''} ({split}); {bounded.rates()}")


def _few_defects_source(bounded: BoundedThreshold, few_defects: int) -> str:
    """How auto set the threshold with few defective images, in one line."""
    why = bounded.why() or "the F1 cut, within the good-image bounds"
    return (f"F1 on {bounded.defects} defective calibration image(s) (fewer than {few_defects}) bounded by the "
            f"good-image rule on {bounded.rate.images} good image(s): {why}; {bounded.rates()}")
