"""Thresholds in raw score units: F1-optimal on labelled scores, or a fallback from good images only."""

from __future__ import annotations

import numpy as np

from hamacho.post import sweep


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """A threshold with the highest F1 on the precision-recall curve (NG means score >= threshold).

    The F1-optimal cut lies between the lowest score called NG and the highest score below it; the
    midpoint is returned (see :func:`hamacho.post.sweep.f1_threshold`), so that an image scored at the
    cut is not flipped by float noise (a different batch size changes scores in the sixth digit) and
    unseen images get the widest margin.

    Args:
        scores: Raw scores, any range.
        labels: 1 for defective, 0 for good; both classes should be present.

    Returns:
        The threshold.
    """
    return sweep.f1_threshold(sweep.sweep(scores, labels))


def fallback_threshold(good_scores: np.ndarray, sigma: float = 3.0, margin: float = 0.01) -> float:
    """Threshold when only good images are labelled: ``max(mean + sigma * std, highest * (1 + margin))``.

    Every good calibration image stays OK (its normalized score is below 0.5, with a ``margin``
    relative gap so that float noise cannot flip the highest one), and ``sigma`` standard deviations
    above the mean cover the spread of unseen good images.

    Args:
        good_scores: Scores of good calibration images (at least one; scores are distances, >= 0).
        sigma: Width of the statistical margin in standard deviations.
        margin: Least relative gap above the highest good score.

    Returns:
        The threshold.
    """
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("fallback_threshold needs at least one good score")
    std = float(scores.std(ddof=1)) if scores.size > 1 else 0.0
    highest = float(scores.max())
    return max(float(scores.mean()) + sigma * std, highest + margin * abs(highest))


def calibrate(
    image_scores: np.ndarray,
    labels: np.ndarray,
    pixel_scores: np.ndarray | None,
    pixel_labels: np.ndarray | None,
    fallback_sigma: float = 3.0,
) -> tuple[dict[str, float], list[str]]:
    """Image and pixel thresholds from labelled calibration scores.

    * Good and defective images: image threshold = :func:`f1_threshold` on the image scores.
    * Masks for some defective images too: pixel threshold = :func:`f1_threshold` on their pixels
      (and the good images' pixels); otherwise the pixel threshold is the image threshold, so a pixel
      is NG exactly when it would make its image NG.
    * Good images only: :func:`fallback_threshold` for both.

    Args:
        image_scores: Raw scores of labelled images (N,).
        labels: 0 good / 1 defective (N,).
        pixel_scores: Map values of images with pixel labels, or None.
        pixel_labels: Matching 0/1 pixel labels, or None.
        fallback_sigma: Margin of the fallback threshold.

    Returns:
        ``{"image_threshold", "pixel_threshold"}`` and notes explaining the choice.
    """
    image_scores, labels = np.asarray(image_scores), np.asarray(labels)
    if image_scores.size == 0:
        raise ValueError("no calibration scores")
    goods = image_scores[labels == 0]
    if labels.min() == labels.max():
        if goods.size == 0:
            raise ValueError("calibration needs at least one good image")
        value = fallback_threshold(goods, fallback_sigma)
        note = (
            f"no defective calibration images: threshold = max(mean + {fallback_sigma:g} std, highest + 1%) "
            f"of the scores of {goods.size} good image(s)"
        )
        return {"image_threshold": value, "pixel_threshold": value}, [note]
    image_threshold = f1_threshold(image_scores, labels)
    if pixel_scores is not None and pixel_labels is not None and bool(np.any(pixel_labels)):
        return {"image_threshold": image_threshold, "pixel_threshold": f1_threshold(pixel_scores, pixel_labels)}, []
    note = "no masks: the pixel threshold equals the image threshold"
    return {"image_threshold": image_threshold, "pixel_threshold": image_threshold}, [note]
