"""A threshold from good images alone, at the false-alarm rate the user accepts, and how sure that rate is.

Image scores of good parts are positive distances with a long right tail. Their logarithms are fitted by
a normal distribution with robust location and scale (median, and 1.4826 x the median absolute
deviation), which one odd image cannot move: a good image scored far below or above the rest changes
the median and the MAD by one rank at most, where it would stretch a standard deviation (with 6
calibration images, one low score tripled it and set the threshold above every defect). The threshold
is the fitted quantile at ``1 - target_fpr``; its expected false-alarm rate is ``target_fpr``.

How sure that rate is, from ``n`` images: the median has variance ``pi / 2 * s^2 / n`` and the MAD-based
scale ``1.3605 * s^2 / n`` (their large-sample variances for normal data), so the threshold's position in
units of ``s`` is known to within ``sqrt((pi / 2 + 1.3605 z^2) / n)``; 1.96 of those either way give the
95 % range of the false-alarm rate reported beside it. With 25 images and a 1 % target that range is
about 0.02 % to 12 %: a user with few images is told so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MAD_TO_SD = 1.4826  # the MAD of a normal distribution is 0.6745 standard deviations
MEDIAN_VARIANCE = math.pi / 2  # large-sample variance of the median, in s^2 / n
MAD_SCALE_VARIANCE = 1.3605  # large-sample variance of the MAD-based scale, in s^2 / n
SCALE_FLOOR = 0.01  # least scale of the log scores (1 % relative): identical scores still leave a margin
FEW_IMAGES = 30  # below this many images the note says plainly that the rate is uncertain
_NORMAL = NormalDist()


@dataclass(frozen=True)
class GoodImageThreshold:
    """A threshold fitted on good images' scores.

    Attributes:
        threshold: Raw threshold (NG at or above).
        images: Good images it was fitted on.
        target_fpr: The false-alarm rate asked for.
        location: Median of the log scores.
        scale: Robust standard deviation of the log scores.
        fpr_low: Lower end of the 95 % range of the expected false-alarm rate.
        fpr_high: Upper end of that range.
        above: Good images scored at or above the threshold.
    """

    threshold: float
    images: int
    target_fpr: float
    location: float
    scale: float
    fpr_low: float
    fpr_high: float
    above: int

    def describe(self) -> str:
        """How the threshold was set, in one line."""
        return (f"good-image rule: the {100 * (1 - self.target_fpr):g}th percentile of a robust log-normal fit "
                f"(median, MAD) to the scores of {self.images} good image(s); expected false alarms "
                f"{_percent(self.target_fpr)} (95% range {_percent(self.fpr_low)}-{_percent(self.fpr_high)}); "
                f"{self.above} of {self.images} good image(s) at or above it")

    def notes(self) -> list[str]:
        """What a user should know about this threshold."""
        notes = [(f"no defective calibration images: the threshold comes from {self.images} good image(s) alone, "
                  f"at an accepted false-alarm rate of {_percent(self.target_fpr)} (threshold.target_fpr)")]
        if self.images < FEW_IMAGES:
            notes.append(f"only {self.images} good image(s) set the threshold: its false-alarm rate is uncertain "
                         f"(95% range {_percent(self.fpr_low)}-{_percent(self.fpr_high)}); more good images "
                         f"narrow it")
        return notes

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for metrics.json and the service."""
        return {"good_images": self.images, "target_fpr": self.target_fpr, "expected_fpr": self.target_fpr,
                "expected_fpr_low": self.fpr_low, "expected_fpr_high": self.fpr_high,
                "good_images_above": self.above}


def fit_good_images(good_scores: np.ndarray, target_fpr: float) -> GoodImageThreshold:
    """The threshold at ``target_fpr`` from good images' raw scores (see the module docstring).

    Args:
        good_scores: Raw image scores of good images the model did not fit (at least one).
        target_fpr: Accepted share of good parts called NG, 0 < target_fpr < 0.5.

    Raises:
        ValueError: Without scores, or for a target outside (0, 0.5).
    """
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("a threshold from good images needs at least one good image's score")
    if not 0.0 < target_fpr < 0.5:
        raise ValueError(f"target_fpr must lie between 0 and 0.5, got {target_fpr}")
    logs = np.log(np.maximum(scores, np.finfo(np.float64).tiny))
    location = float(np.median(logs))
    scale = max(MAD_TO_SD * float(np.median(np.abs(logs - location))), SCALE_FLOOR)
    z = _NORMAL.inv_cdf(1.0 - target_fpr)
    threshold = float(math.exp(location + z * scale))
    spread = 1.96 * math.sqrt((MEDIAN_VARIANCE + MAD_SCALE_VARIANCE * z * z) / scores.size)
    return GoodImageThreshold(
        threshold=threshold, images=int(scores.size), target_fpr=float(target_fpr), location=location, scale=scale,
        fpr_low=1.0 - _NORMAL.cdf(z + spread), fpr_high=1.0 - _NORMAL.cdf(z - spread),
        above=int(np.count_nonzero(scores >= threshold)))


def _percent(value: float) -> str:
    """0.0123 -> '1.2%', 0.00031 -> '0.031%', below 0.01 %: '<0.01%'."""
    percent = 100.0 * value
    if percent < 0.01:
        return "<0.01%"
    return f"{percent:.2g}%" if percent < 10 else f"{percent:.0f}%"
