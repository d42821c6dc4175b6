"""Thresholds that weigh defects against the good-image rule: ``balanced``, and ``auto`` with few defects.

Both start from the good-image rule (:mod:`hamacho.post.good_images`) and let defect scores move its
threshold down, by as much as the good images allow: the user accepted ``target_fpr`` false alarms, so
defects only decide whether more (up to ``max_fpr``) are worth the defects they catch. Raising the
threshold above the good-image rule is never done: a cut above it comes from a few defects (real or
synthetic) that scored high, and misses subtler ones (on bottle, an F1 cut on 3-10 defects caught 66-88 %
of the others where the good-image rule caught 98 %):

* ``balanced``: the cut with the best balanced accuracy, ``(share of good scores below it + share of
  defect scores at or above it) / 2``, between the good calibration scores and the defect scores
  (synthetic defects pasted on held-out good images, or the real defective calibration images when there
  are any). Candidate cuts lie midway between adjacent distinct scores; when several reach the best
  balanced accuracy, the good-image rule's threshold is kept if it is one of them (it lies in a best
  interval), else the candidate nearest to it. The cut is kept between the good-image rule's bound at
  ``max_fpr`` (floor: defects that overlap the good images' bulk, as synthetic ones may, would otherwise pull
  the threshold into the good images and call many good parts NG) and its threshold at ``target_fpr``
  (ceiling). When no cut does better than chance (defects score like good images), the good-image rule is
  kept.
* ``auto`` with fewer than ``few_defects`` defective calibration images: the F1-optimal cut on the labelled
  images, kept between the good-image rule's bound at ``max_fpr`` (floor) and its threshold at
  ``target_fpr`` (ceiling). With 1-5 defects the F1 cut is where those few happen to score: above the
  good-image rule it misses subtler defects than the few seen, and far below it calls good parts NG; the
  good images bound it both ways (docs/training.md#thresholds has the figures).

The expected false-alarm rate at the chosen threshold is read from the good images' fit
(:func:`hamacho.post.good_images.rate_at`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hamacho.post import sweep
from hamacho.post.good_images import GoodImageThreshold, fit_good_images, percent_text, rate_at


@dataclass(frozen=True)
class Cut:
    """A cut between good and defect scores, and how it splits them.

    Attributes:
        threshold: Raw threshold (NG at or above).
        good_ok: Share of the good scores below it (true negative rate on them).
        defects_ng: Share of the defect scores at or above it (true positive rate on them).
    """

    threshold: float
    good_ok: float
    defects_ng: float

    @property
    def balanced_accuracy(self) -> float:
        """``(good_ok + defects_ng) / 2``."""
        return (self.good_ok + self.defects_ng) / 2


def split_at(good_scores: np.ndarray, defect_scores: np.ndarray, threshold: float) -> Cut:
    """How ``threshold`` splits the scores (NG at or above it)."""
    good, defects = _finite(good_scores), _finite(defect_scores)
    return Cut(float(threshold), float(np.mean(good < threshold)) if good.size else float("nan"),
               float(np.mean(defects >= threshold)) if defects.size else float("nan"))


def best_balanced_cut(good_scores: np.ndarray, defect_scores: np.ndarray, prefer: float) -> Cut | None:
    """The cut with the best balanced accuracy between good and defect scores (see the module docstring).

    Args:
        good_scores: Raw scores of good images.
        defect_scores: Raw scores of defective (or synthetic-defect) images.
        prefer: Among equally good cuts, this one when it lies in a best interval, else the midpoint nearest it.

    Returns:
        The cut, or None without scores of either kind or when no cut beats chance (balanced accuracy 0.5).
    """
    good, defects = _finite(good_scores), _finite(defect_scores)
    if not good.size or not defects.size:
        return None
    values = np.unique(np.concatenate([good, defects]))
    if values.size < 2:
        return None
    lows, highs = values[:-1], values[1:]
    cuts = (lows + highs) / 2  # every cut in (low, high] decides alike
    good_ok = np.searchsorted(np.sort(good), cuts, side="left") / good.size
    defects_ng = 1.0 - np.searchsorted(np.sort(defects), cuts, side="left") / defects.size
    accuracy = (good_ok + defects_ng) / 2
    best = float(accuracy.max())
    if best <= 0.5 + 1e-12:
        return None
    ties = np.flatnonzero(accuracy >= best - 1e-12)
    inside = ties[(lows[ties] < prefer) & (prefer <= highs[ties])]
    if inside.size:
        index, threshold = int(inside[0]), float(prefer)
    else:
        index = int(ties[np.argmin(np.abs(cuts[ties] - prefer))])
        threshold = float(cuts[index])
    return Cut(threshold, float(good_ok[index]), float(defects_ng[index]))


@dataclass(frozen=True)
class BoundedThreshold:
    """A threshold from defect scores, bounded by the good-image rule.

    Attributes:
        threshold: Raw threshold (NG at or above).
        cut: The cut the defect scores gave before the bounds (None: no cut beat chance).
        bound: Which set the threshold: ``cut``, ``floor`` (the good-image bound at ``max_fpr``), ``ceiling``
            (the good-image rule at ``target_fpr``) or ``good-image rule`` (no usable cut).
        rate: The good images' fit read at ``threshold`` (expected false-alarm rate and its range).
        floor: Raw threshold of the good-image rule at ``max_fpr``.
        ceiling: Raw threshold of the good-image rule at ``target_fpr``.
        max_fpr: The most false alarms accepted.
        defects: Defect scores used.
        split: How ``threshold`` splits the good and defect scores.
    """

    threshold: float
    cut: float | None
    bound: str
    rate: GoodImageThreshold
    floor: float
    ceiling: float
    max_fpr: float
    defects: int
    split: Cut

    def why(self) -> str:
        """Which bound applied, in words (empty when the cut itself is the threshold)."""
        if self.bound == "floor":
            return (f"raised from {self.cut:.4g} to the good-image bound at {percent_text(self.max_fpr)} false alarms "
                    f"(threshold.max_fpr)")
        if self.bound == "ceiling":
            return (f"lowered from {self.cut:.4g} to the good-image rule at {percent_text(self.rate.target_fpr)} false "
                    f"alarms (threshold.target_fpr)")
        if self.bound == "good-image rule":
            return "no cut separates the defects from the good images better than chance: the good-image rule"
        return ""

    def rates(self) -> str:
        """``expected false alarms 3% (95% range 1%-9%)``, from the good images' fit."""
        return (f"expected false alarms {percent_text(self.rate.expected_fpr)} (95% range {percent_text(self.rate.fpr_low)}-"
                f"{percent_text(self.rate.fpr_high)})")

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for metrics.json and the service: the good-image figures at this threshold, and the rest."""
        return {**self.rate.as_dict(), "max_fpr": self.max_fpr, "defect_scores": self.defects,
                "good_ok": self.split.good_ok, "defects_ng": self.split.defects_ng,
                "balanced_accuracy": self.split.balanced_accuracy}


def balanced_threshold(good_scores: np.ndarray, defect_scores: np.ndarray, target_fpr: float,
                       max_fpr: float) -> BoundedThreshold:
    """Method ``balanced``: the best balanced-accuracy cut, between the good-image bound at ``max_fpr`` (floor)
    and the good-image rule at ``target_fpr`` (ceiling); the floor wins when ``max_fpr < target_fpr``.

    Args:
        good_scores: Raw scores of good calibration images (at least one).
        defect_scores: Raw scores of defects (synthetic or real).
        target_fpr: The good-image rule's rate: ties are settled towards its threshold, and it is the
            threshold when no cut beats chance.
        max_fpr: The most false alarms the cut may cost.

    Raises:
        ValueError: Without good scores, or for rates outside (0, 0.5).
    """
    fit = fit_good_images(good_scores, target_fpr)
    floor = fit_good_images(good_scores, max_fpr).threshold
    found = best_balanced_cut(good_scores, defect_scores, fit.threshold)
    if found is None:
        return _bounded(good_scores, defect_scores, fit, fit.threshold, None, "good-image rule", floor, max_fpr)
    threshold, bound = _clip(found.threshold, floor, fit.threshold)
    return _bounded(good_scores, defect_scores, fit, threshold, found.threshold, bound, floor, max_fpr)


def few_defects_threshold(good_scores: np.ndarray, defect_scores: np.ndarray, target_fpr: float,
                          max_fpr: float) -> BoundedThreshold:
    """``auto`` with few defective images: the F1 cut, between the good-image bound at ``max_fpr`` (floor) and
    the good-image rule at ``target_fpr`` (ceiling); the floor wins when ``max_fpr < target_fpr``.

    Raises:
        ValueError: Without good or defect scores, or for rates outside (0, 0.5).
    """
    good, defects = _finite(good_scores), _finite(defect_scores)
    if not defects.size:
        raise ValueError("an F1 cut needs defective calibration images")
    fit = fit_good_images(good, target_fpr)
    floor = fit_good_images(good, max_fpr).threshold
    scores = np.concatenate([good, defects])
    labels = np.concatenate([np.zeros(good.size, np.int64), np.ones(defects.size, np.int64)])
    f1 = sweep.best_f1_cut(sweep.sweep(scores, labels))
    threshold, bound = _clip(f1, floor, fit.threshold)
    return _bounded(good, defects, fit, threshold, f1, bound, floor, max_fpr)


def _clip(cut: float, floor: float, ceiling: float) -> tuple[float, str]:
    """``cut`` kept within ``[floor, ceiling]`` (the floor wins when above the ceiling), and which applied."""
    if cut < floor:
        return floor, "floor"
    if cut > ceiling:
        return (ceiling, "ceiling") if ceiling >= floor else (floor, "floor")
    return cut, "cut"


def _bounded(good: np.ndarray, defects: np.ndarray, fit: GoodImageThreshold, threshold: float, cut: float | None,
             bound: str, floor: float, max_fpr: float) -> BoundedThreshold:
    return BoundedThreshold(threshold=float(threshold), cut=cut, bound=bound, rate=rate_at(fit, threshold, good),
                            floor=float(floor), ceiling=fit.threshold, max_fpr=float(max_fpr),
                            defects=int(_finite(defects).size), split=split_at(good, defects, threshold))


def _finite(scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).ravel()
    return values[np.isfinite(values)]
