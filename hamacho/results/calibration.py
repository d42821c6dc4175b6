"""The calibration pass's collector: raw scores of the labelled images -> thresholds and min/max."""

from __future__ import annotations

import numpy as np

from hamacho.errors import DatasetError
from hamacho.post.threshold import calibrate
from hamacho.predictor import ScoredBatch


class CalibrationCollector:
    """Collects raw scores and labelled pixels, then computes the calibration.

    Args:
        fallback_sigma: Margin of the threshold used when no defective image is labelled.
    """

    def __init__(self, fallback_sigma: float = 3.0) -> None:
        self.fallback_sigma = fallback_sigma
        self.notes: list[str] = []
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._pixel_scores: list[np.ndarray] = []
        self._pixel_labels: list[np.ndarray] = []
        self._map_min = float("inf")
        self._map_max = float("-inf")
        self._defect_pixels = False

    def add(self, scored: ScoredBatch) -> None:
        """Take the readable labelled images of one scored batch."""
        batch = scored.batch
        keep = batch.valid & (batch.labels >= 0)
        if not keep.any():
            return
        maps = scored.raw_maps[keep]
        self._scores.append(scored.raw_scores[keep])
        self._labels.append(batch.labels[keep])
        self._map_min = min(self._map_min, float(maps.min()))
        self._map_max = max(self._map_max, float(maps.max()))
        with_mask = batch.has_mask[keep]
        if with_mask.any():
            masks = batch.masks[keep][with_mask].ravel()
            self._pixel_scores.append(maps[with_mask].ravel())
            self._pixel_labels.append(masks)
            self._defect_pixels |= bool(masks.any())

    def finish(self) -> dict[str, float]:
        """Thresholds (F1-optimal, or the fallback) and the score ranges, in raw units; notes in :attr:`notes`.

        Raises:
            DatasetError: When no calibration image could be read.
        """
        if not self._scores:
            raise DatasetError("none of the calibration images could be read, so no threshold can be set")
        scores, labels = np.concatenate(self._scores), np.concatenate(self._labels)
        pixel_scores = np.concatenate(self._pixel_scores) if self._defect_pixels else None
        pixel_labels = np.concatenate(self._pixel_labels) if self._defect_pixels else None
        thresholds, self.notes = calibrate(scores, labels, pixel_scores, pixel_labels, self.fallback_sigma)
        return {**thresholds, "image_min": float(scores.min()), "image_max": float(scores.max()),
                "pixel_min": self._map_min, "pixel_max": self._map_max}
