"""Min-max normalization centred on the threshold (0.5 separates OK from NG), decisions, map resizing.

No torch import: :func:`normalize` uses only operators and methods numpy arrays and torch tensors share,
so the model's forward (and every exported graph) and numpy code run the same formula.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def normalize(values: Any, threshold: Any, min_value: Any, max_value: Any) -> Any:
    """``clip((x - threshold) / (max - min) + 0.5, 0, 1)``; a numpy array or a torch tensor, like ``values``.

    Args:
        values: Raw scores or anomaly maps.
        threshold: Raw threshold; maps to exactly 0.5.
        min_value: Smallest raw value seen on the calibration images.
        max_value: Largest raw value seen on the calibration images.

    Returns:
        Normalized values in [0, 1] (NaN stays NaN). When ``max <= min`` the span is taken as 1.
    """
    span = max_value - min_value
    span = span * (span > 0) + (span <= 0)  # 1 where the span is not positive; no branch, so it exports as is
    return ((values - threshold) / span + 0.5).clip(0.0, 1.0)


def raw_threshold(calibration: dict[str, float], level: str, cut: float) -> float:
    """The raw value a normalized ``cut`` stands for (the inverse of :func:`normalize` inside 0..1).

    Args:
        calibration: ``<level>_threshold``, ``<level>_min`` and ``<level>_max`` of a model.
        level: ``image`` or ``pixel``.
        cut: Normalized cut, 0..1 (0.5 gives the raw threshold itself).
    """
    span = calibration[f"{level}_max"] - calibration[f"{level}_min"]
    return calibration[f"{level}_threshold"] + (cut - 0.5) * (span if span > 0 else 1.0)


def decide(normalized: np.ndarray, cut: float = 0.5) -> np.ndarray:
    """NG (True) where the normalized value is at or above ``cut``."""
    return normalized >= cut

