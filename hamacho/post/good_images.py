"""A threshold from good images alone, at the false-alarm rate the user accepts, and how sure that rate is.

Image scores of good parts are positive distances with a long right tail. Their logarithms are fitted by
a normal distribution with robust location and scale (median, and 1.4826 x the median absolute
deviation), which one odd image cannot move: a good image scored far below or above the rest changes
the median and the MAD by one rank at most, where it would stretch a standard deviation (with 6
calibration images, one low score tripled it and set the threshold above every defect). The threshold
is the bound a new good part stays below with probability ``1 - target_fpr`` (a prediction bound, which
widens with few images: Student's t quantile with ``n - 1`` degrees of freedom, the scale corrected for
small samples (Croux and Rousseeuw's factors for the MAD) and inflated by ``sqrt(1 + pi / (2 n))`` for the
median's own error); its expected false-alarm rate is ``target_fpr``. With many images it is the fitted
``1 - target_fpr`` quantile.

How sure that rate is, from ``n`` images: the median has variance ``pi / 2 * s^2 / n`` and the MAD-based
scale ``1.3605 * s^2 / n`` (their large-sample variances for normal data), so the threshold's position in
units of ``s`` is known to within ``sqrt((pi / 2 + 1.3605 z^2) / n)``; 1.96 of those either way give the
95 % range of the false-alarm rate reported beside it. With 25 images and a 1 % target that range is
about 0.02 % to 12 %: a user with few images is told so.

Fewer than five images show no spread to fit. The threshold is then ``max(mean + 3 std, highest + 1 %)``
(so every one of them stays OK, with a margin), and what is said of it needs no distribution: a new good
part scores above the highest of ``n`` exchangeable good images with probability ``1 / (n + 1)``, so that
is the most false alarms to expect, and over draws of the ``n`` images that rate follows Beta(1, n), whose
2.5 % and 97.5 % points give the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist

import numpy as np

MAD_TO_SD = 1.4826  # the MAD of a normal distribution is 0.6745 standard deviations
MEDIAN_VARIANCE = math.pi / 2  # large-sample variance of the median, in s^2 / n
MAD_SCALE_VARIANCE = 1.3605  # large-sample variance of the MAD-based scale, in s^2 / n
SCALE_FLOOR = 0.01  # least scale of the log scores (1 % relative): identical scores still leave a margin
FEW_IMAGES = 30  # below this many images the note says plainly that the rate is uncertain
MIN_FIT_IMAGES = 5  # fewer cannot show a spread: then max(mean + 3 std, highest + 1 %)
FEW_SIGMA = 3.0
HIGHEST_MARGIN = 0.01
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
    expected_fpr: float = 0.0

    @property
    def fitted(self) -> bool:
        """Whether the spread was fitted (else: too few images, the highest score + 1 %)."""
        return self.images >= MIN_FIT_IMAGES

    def describe(self) -> str:
        """How the threshold was set, in one line."""
        rates = (f"expected false alarms {percent_text(self.expected_fpr)} (95% range {percent_text(self.fpr_low)}-"
                 f"{percent_text(self.fpr_high)})")
        if not self.fitted:
            return (f"good-image rule: too few good images ({self.images}) to fit their spread, so max(mean + 3 std, "
                    f"highest + 1%) of their scores; {rates.replace('expected false alarms', 'false alarms at most')}")
        return (f"good-image rule: the score {100 * (1 - self.target_fpr):g}% of good parts stay below, by a robust "
                f"log-normal fit (median, MAD) to the scores of {self.images} good image(s); {rates}; "
                f"{self.above} of {self.images} good image(s) at or above it")

    def notes(self) -> list[str]:
        """What a user should know about this threshold."""
        aim = f", at an accepted false-alarm rate of {percent_text(self.target_fpr)} (threshold.target_fpr)"
        notes = [f"no defective calibration images: the threshold comes from {self.images} good image(s) alone"
                 + (aim if self.fitted else "")]
        if not self.fitted:
            notes.append(f"only {self.images} good image(s) set the threshold, too few to aim at "
                         f"{percent_text(self.target_fpr)} false alarms: expect at most {percent_text(self.expected_fpr)} "
                         f"(95% range {percent_text(self.fpr_low)}-{percent_text(self.fpr_high)}); with "
                         f"{MIN_FIT_IMAGES} or more the threshold is set at threshold.target_fpr")
        elif self.images < FEW_IMAGES:
            notes.append(f"only {self.images} good image(s) set the threshold: its false-alarm rate is uncertain "
                         f"(95% range {percent_text(self.fpr_low)}-{percent_text(self.fpr_high)}); more good images "
                         f"narrow it")
        return notes

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for metrics.json and the service."""
        return {"good_images": self.images, "target_fpr": self.target_fpr, "expected_fpr": self.expected_fpr,
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
    n = int(scores.size)
    if n < MIN_FIT_IMAGES:
        highest = float(scores.max())
        spread = float(scores.std(ddof=1)) if n > 1 else 0.0
        threshold = max(float(scores.mean()) + FEW_SIGMA * spread, highest + HIGHEST_MARGIN * abs(highest))
        return GoodImageThreshold(
            threshold=threshold, images=n, target_fpr=float(target_fpr), location=float("nan"), scale=float("nan"),
            fpr_low=1.0 - 0.975 ** (1.0 / n), fpr_high=1.0 - 0.025 ** (1.0 / n),
            above=int(np.count_nonzero(scores >= threshold)), expected_fpr=1.0 / (n + 1))
    logs = np.log(np.maximum(scores, np.finfo(np.float64).tiny))
    location = float(np.median(logs))
    scale = max(MAD_TO_SD * _mad_correction(n) * float(np.median(np.abs(logs - location))), SCALE_FLOOR)
    threshold = float(math.exp(location + _bound(target_fpr, n) * scale))
    low, high = rate_range(target_fpr, n)
    return GoodImageThreshold(
        threshold=threshold, images=int(scores.size), target_fpr=float(target_fpr), location=location, scale=scale,
        fpr_low=low, fpr_high=high, above=int(np.count_nonzero(scores >= threshold)), expected_fpr=float(target_fpr))


def rate_at(fit: GoodImageThreshold, threshold: float, good_scores: np.ndarray) -> GoodImageThreshold:
    """The same fit read at another threshold: the false-alarm rate to expect there and its 95 % range.

    With a fitted spread, the rate is the ``target_fpr`` whose prediction bound (see the module docstring) is
    ``threshold``, found by bisection, and its range is computed as for a bound set at that rate. Without one
    (fewer than five images), it is distribution-free: ``(k + 1) / (n + 1)`` with ``k`` of the ``n`` good
    scores at or above ``threshold`` (``1 / (n + 1)`` above the highest, as for the rule itself).

    Args:
        fit: A fit from :func:`fit_good_images` on ``good_scores``.
        threshold: Any raw threshold.
        good_scores: The good scores of the fit (to count those at or above ``threshold``).

    Returns:
        A copy of ``fit`` with ``threshold``, ``above`` and the expected rate and range at ``threshold``
        (``target_fpr`` stays the rate asked for).
    """
    scores = np.asarray(good_scores, dtype=np.float64).ravel()
    above = int(np.count_nonzero(scores[np.isfinite(scores)] >= threshold))
    n = fit.images
    if not fit.fitted:
        expected = (above + 1) / (n + 1)
        return replace(fit, threshold=float(threshold), above=above, expected_fpr=expected,
                       fpr_low=min(fit.fpr_low, expected), fpr_high=max(fit.fpr_high, expected))
    position = (math.log(max(threshold, np.finfo(np.float64).tiny)) - fit.location) / fit.scale
    expected = _rate_for_bound(position, n)
    low, high = rate_range(expected, n)
    return replace(fit, threshold=float(threshold), above=above, expected_fpr=expected, fpr_low=low, fpr_high=high)


def rate_range(rate: float, n: int) -> tuple[float, float]:
    """95 % range of the false-alarm rate of a bound set at ``rate`` from ``n`` images (module docstring)."""
    z = _NORMAL.inv_cdf(min(max(1.0 - rate, 1e-12), 1.0 - 1e-12))
    spread = 1.96 * math.sqrt((MEDIAN_VARIANCE + MAD_SCALE_VARIANCE * z * z) / n)
    return 1.0 - _NORMAL.cdf(z + spread), 1.0 - _NORMAL.cdf(z - spread)


def _bound(rate: float, n: int) -> float:
    """Position of the prediction bound at false-alarm rate ``rate`` from ``n`` images, in units of the scale."""
    return t_quantile(1.0 - rate, max(n - 1, 1)) * math.sqrt(1.0 + MEDIAN_VARIANCE / n)


def _rate_for_bound(position: float, n: int) -> float:
    """The rate whose bound (:func:`_bound`) lies at ``position``: bisection, the bound falling as the rate rises."""
    if position <= 0.0:
        return 1.0 - _rate_for_bound(-position, n) if position < 0.0 else 0.5
    low, high = 1e-12, 0.5  # rates; the bound is 0 at 0.5
    if _bound(low, n) <= position:
        return low
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if _bound(middle, n) > position else (low, middle)
    return (low + high) / 2


# Croux and Rousseeuw (1992): factors that make the MAD unbiased for small normal samples (n = 2..9).
_MAD_SMALL = {2: 1.196, 3: 1.495, 4: 1.363, 5: 1.206, 6: 1.200, 7: 1.140, 8: 1.129, 9: 1.107}


def _mad_correction(n: int) -> float:
    return _MAD_SMALL.get(n, n / (n - 0.8) if n > 9 else 1.0)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile by its Cornish-Fisher expansion in 1/df (Abramowitz and Stegun 26.7.5), so that
    no statistics package is needed: within 0.5 % of the exact value for df >= 3 at p <= 0.99 and for
    df >= 10 at p <= 0.999 (t(0.99, 2): 6.81 for 6.96; t(0.999, 3): 9.9 for 7.2, a more cautious bound)."""
    z = _NORMAL.inv_cdf(p)
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96,
             (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(term / df ** (power + 1) for power, term in enumerate(terms))


def percent_text(value: float) -> str:
    """0.0123 -> '1.2%', 0.00031 -> '0.031%', below 0.01 %: '<0.01%'."""
    percent = 100.0 * value
    if percent < 0.01:
        return "<0.01%"
    return f"{percent:.2g}%" if percent < 10 else f"{percent:.0f}%"
