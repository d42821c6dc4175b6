"""Min-max normalization centred on the threshold: 0.5 separates OK from NG."""

from __future__ import annotations

import torch


def normalize(values: torch.Tensor, threshold: float, min_value: float, max_value: float) -> torch.Tensor:
    """``clip((x - threshold) / (max - min) + 0.5, 0, 1)``.

    Args:
        values: Raw scores or anomaly maps.
        threshold: Raw threshold; maps to exactly 0.5.
        min_value: Smallest raw value seen on the calibration images.
        max_value: Largest raw value seen on the calibration images.

    Returns:
        Normalized values in [0, 1] (NaN stays NaN). When ``max == min`` the span is taken as 1.
    """
    span = max_value - min_value
    if not span > 0:
        span = 1.0
    return ((values - threshold) / span + 0.5).clamp(0.0, 1.0)


def decide(normalized: torch.Tensor, cut: float = 0.5) -> torch.Tensor:
    """NG (True) where the normalized value is at or above ``cut``."""
    return normalized >= cut
