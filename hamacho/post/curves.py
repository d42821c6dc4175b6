"""Curve points and pixel samples for the report: ROC and precision-recall, kept small enough to plot.

The curves are computed exactly from one sort of the raw scores (:func:`hamacho.post.sweep.sweep`),
with the construction of torchmetrics' ``binary_roc`` and ``binary_precision_recall_curve`` (same
points; the tests compare them), then thinned to a few thousand points. 100 test images at 256 px
are 6.5 million pixels, so this matters for the report's speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamacho.post.sweep import Sweep, sweep

CURVE_POINTS = 2000


@dataclass
class OperatingPoint:
    """Counts of the decisions at the threshold in use."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def fpr(self) -> float:
        """False-positive rate (share of good items called NG)."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else float("nan")

    @property
    def recall(self) -> float:
        """True-positive rate (share of defective items called NG)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def precision(self) -> float:
        """Share of NG calls that are defective."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


@dataclass
class Curves:
    """ROC (``fpr``, ``tpr``) and precision-recall (``recall``, ``precision``) points, each at most a few thousand."""

    fpr: np.ndarray
    tpr: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    operating_point: OperatingPoint | None = None


@dataclass
class PixelSample:
    """Raw map values of a seeded sample of labelled pixels, and their 0/1 labels."""

    scores: np.ndarray
    labels: np.ndarray
    total: int  # number of labelled pixels the sample was drawn from


def operating_point(predicted: np.ndarray, labels: np.ndarray) -> OperatingPoint:
    """TP/FP/TN/FN of boolean decisions against 0/1 labels."""
    predicted, labels = np.asarray(predicted).ravel().astype(bool), np.asarray(labels).ravel().astype(bool)
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn = int(np.count_nonzero(~predicted & labels))
    return OperatingPoint(tp=tp, fp=fp, tn=labels.size - tp - fp - fn, fn=fn)


def downsample_curve(x: np.ndarray, y: np.ndarray, max_points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Keep at most about ``max_points`` points, evenly spaced along the curve's length (ends kept).

    Spacing by arc length (|dx| + |dy|) keeps both long straight runs and sharp corners visible,
    which equal spacing in x or in the index would not.
    """
    if x.size <= max_points:
        return x, y
    length = np.r_[0.0, np.cumsum(np.abs(np.diff(x)) + np.abs(np.diff(y)))]
    marks = np.linspace(0.0, length[-1], max_points)
    keep = np.unique(np.r_[0, np.searchsorted(length, marks).clip(0, x.size - 1), x.size - 1])
    return x[keep], y[keep]


def _thin(tps: np.ndarray, fps: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Every k-th point of a long sweep (ends kept), so that plotting never copies millions of points.

    Keeps 50 times ``max_points`` (100,000 by default): far more than :func:`downsample_curve` keeps,
    and the points dropped lie between kept ones on a monotone curve, closer than a pixel of the figure.
    """
    step = max(1, tps.size // (50 * max_points))
    if step == 1:
        return tps, fps
    keep = np.r_[np.arange(0, tps.size, step), tps.size - 1]
    return tps[keep], fps[keep]


def binary_curves(
    scores: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray | None = None,
    max_points: int = CURVE_POINTS,
    counts: Sweep | None = None,
) -> Curves | None:
    """ROC and precision-recall curves of raw scores against 0/1 labels (NG means score >= threshold).

    Args:
        scores: Raw scores, any units (flattened).
        labels: 0/1 labels (flattened).
        predicted: Decisions at the threshold in use, for the operating point; optional.
        max_points: Upper bound on the points kept per curve.
        counts: :func:`hamacho.post.sweep.sweep` of these scores and labels, when already computed.

    Returns:
        The curves, or None when only one class is present (curves undefined). ``fpr``/``tpr`` run
        from (0, 0) up; ``precision``/``recall`` from the lowest threshold up and end at recall 0,
        precision 1 (torchmetrics' order and end point).
    """
    scores, labels = np.asarray(scores).ravel(), np.asarray(labels).ravel().astype(bool)
    if scores.size == 0 or bool(labels.all()) or not bool(labels.any()):
        return None
    counts = sweep(scores, labels) if counts is None else counts
    return sweep_curves(counts, operating_point(predicted, labels) if predicted is not None else None, max_points)


def sweep_curves(counts: Sweep, point: OperatingPoint | None = None, max_points: int = CURVE_POINTS) -> Curves | None:
    """The curves of :func:`binary_curves` from a sweep's counts alone (e.g. a streamed histogram's).

    Returns:
        The curves, or None when only one class is present.
    """
    if counts.positives == 0 or counts.negatives == 0:
        return None
    tps, fps = _thin(counts.tps, counts.fps, max_points)
    tps, fps = tps.astype(np.float64), fps.astype(np.float64)
    tpr = tps / counts.positives
    fpr, tpr_roc = downsample_curve(fps / counts.negatives, tpr, max_points)
    recall, precision = downsample_curve(tpr, tps / (tps + fps), max_points)
    return Curves(
        fpr=np.r_[0.0, fpr], tpr=np.r_[0.0, tpr_roc], recall=np.r_[recall[::-1], 0.0],
        precision=np.r_[precision[::-1], 1.0], operating_point=point,
    )


def pick_sample(defects: int, goods: int, size: int) -> tuple[int, int]:
    """How many defective and good pixels a sample of at most ``size`` takes: half each where possible,
    all of a class with fewer than its half and the other class filling the rest."""
    n_defect = min(defects, max(size // 2, size - goods))
    return n_defect, min(goods, size - n_defect)


def sample_pixels(scores: np.ndarray, labels: np.ndarray, size: int, seed: int = 0) -> PixelSample:
    """A seeded sample of at most ``size`` pixels, half defective and half good where possible.

    Defect pixels are usually a few percent of all; an even split keeps both histograms readable (the
    report plots each class as a share of its own pixels, so the split does not bias them). When one
    class has fewer pixels than its half, all of them are taken and the other class fills the rest.

    Args:
        scores: Raw map values (flattened).
        labels: 0/1 pixel labels (flattened), same length.
        size: Most pixels kept.
        seed: Seed of the draw.

    Returns:
        The sampled values and labels.
    """
    scores_np = np.asarray(scores, dtype=np.float32).ravel()
    labels_np = np.asarray(labels).ravel().astype(bool)
    total = int(scores_np.size)
    rng = np.random.default_rng(seed)
    defect_idx = np.flatnonzero(labels_np)
    n_defect, n_good = pick_sample(defect_idx.size, total - defect_idx.size, size)
    chosen_defect = rng.choice(defect_idx, n_defect, replace=False) if n_defect < defect_idx.size else defect_idx
    good_idx = np.flatnonzero(~labels_np)
    chosen_good = rng.choice(good_idx, n_good, replace=False) if n_good < good_idx.size else good_idx
    index = np.sort(np.r_[chosen_defect, chosen_good])
    return PixelSample(scores=scores_np[index].copy(), labels=labels_np[index].astype(np.uint8), total=total)
