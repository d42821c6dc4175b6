"""Min-max normalization centred on the threshold (0.5 separates OK from NG), decisions, map resizing."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def normalize(
    values: torch.Tensor,
    threshold: float | torch.Tensor,
    min_value: float | torch.Tensor,
    max_value: float | torch.Tensor,
) -> torch.Tensor:
    """``clip((x - threshold) / (max - min) + 0.5, 0, 1)``.

    Written with tensor operations only (no Python branches on values), so it runs inside a model's
    forward and in an exported graph alike.

    Args:
        values: Raw scores or anomaly maps.
        threshold: Raw threshold; maps to exactly 0.5.
        min_value: Smallest raw value seen on the calibration images.
        max_value: Largest raw value seen on the calibration images.

    Returns:
        Normalized values in [0, 1] (NaN stays NaN). When ``max == min`` the span is taken as 1.
    """
    threshold, min_value, max_value = (torch.as_tensor(v, dtype=values.dtype, device=values.device)
                                       for v in (threshold, min_value, max_value))
    span = max_value - min_value
    span = torch.where(span > 0, span, torch.ones_like(span))
    return ((values - threshold) / span + 0.5).clamp(0.0, 1.0)


def decide(normalized: torch.Tensor, cut: float = 0.5) -> torch.Tensor:
    """NG (True) where the normalized value is at or above ``cut``."""
    return normalized >= cut


def resize_map(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (normalized) anomaly map resized to ``height`` x ``width`` with bilinear interpolation (float32).

    This puts model-resolution maps onto the original image: the Predictor's maps and the full-resolution
    heatmap and segmentation pictures come from here.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.shape == (height, width):
        return values
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
