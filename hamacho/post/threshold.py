"""Thresholds in raw score units, by the method the configuration names (``threshold.method``).

* ``f1``: the score with the best F1 on the labelled calibration images (needs defective ones);
* ``fpr``: the good-image rule, at the accepted false-alarm rate ``target_fpr``, with the expected rate and
  its uncertainty (:mod:`hamacho.post.good_images`);
* ``sigma``: mean + k standard deviations of the good calibration images' scores;
* ``percentile``: a percentile of the good calibration images' scores;
* ``manual``: raw values given by the user;
* ``auto`` (the default): ``f1`` when defective calibration images exist, else ``fpr``.

Whatever the method, the normalization maps the threshold to 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hamacho.post import sweep
from hamacho.post.good_images import fit_good_images
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


def resolved_method(method: str, has_defects: bool) -> str:
    """The method that sets the image threshold: ``auto`` is ``f1`` with defective calibration images, else
    ``fpr`` (the good-image rule); other methods are themselves."""
    if method != "auto":
        return method
    return "f1" if has_defects else "fpr"


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
            set the image threshold.
    """

    image_threshold: float
    pixel_threshold: float
    image_source: str
    pixel_source: str
    pixel_from_image: bool
    notes: list[str] = field(default_factory=list)
    details: dict[str, float | int] = field(default_factory=dict)


def calibrate(
    image_scores: np.ndarray,
    labels: np.ndarray,
    pixel_scores: np.ndarray | None,
    pixel_labels: np.ndarray | None,
    rule: ThresholdSettings | None = None,
) -> Thresholds:
    """Image and pixel thresholds from labelled calibration scores, by ``rule.method``.

    The pixel threshold is F1-optimal over the labelled pixels when the method is F1 and masks with
    defects exist; manual when given; otherwise it is the image threshold.

    Args:
        image_scores: Raw scores of labelled images (N,).
        labels: 0 good / 1 defective (N,).
        pixel_scores: Map values of images with pixel labels, or None.
        pixel_labels: Matching 0/1 pixel labels, or None.
        rule: The method and its parameters (default: auto).

    Raises:
        ValueError: Without calibration scores, for f1 without defective images, for sigma or percentile
            without good images, or for manual without an image threshold.
    """
    rule = rule or ThresholdSettings()
    image_scores, labels = np.asarray(image_scores), np.asarray(labels)
    if image_scores.size == 0:
        raise ValueError("no calibration scores")
    goods = image_scores[labels == 0]
    defects = int(np.count_nonzero(labels == 1))
    method = resolved_method(rule.method, bool(defects))
    if method in ("fpr", "sigma", "percentile") and goods.size == 0:
        raise ValueError(f"threshold method {method} needs good calibration images")
    counted = f"the scores of {goods.size} good calibration image(s)"
    notes: list[str] = []
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
        return Thresholds(image, float(rule.pixel), source, "manual (threshold.pixel)", False, notes, details)
    has_pixels = pixel_scores is not None and pixel_labels is not None and bool(np.any(pixel_labels))
    if method == "f1" and has_pixels:
        pixels = np.asarray(pixel_scores).size
        return Thresholds(image, f1_threshold(pixel_scores, pixel_labels), source,
                          f"F1-optimal on {pixels:,} labelled pixels", False, notes, details)
    if method == "f1":
        notes.append("no masks: the pixel threshold equals the image threshold")
    return Thresholds(image, image, source, "the image threshold", True, notes, details)
