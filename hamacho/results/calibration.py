"""The calibration pass's collector: raw scores of the labelled images -> thresholds and min/max."""

from __future__ import annotations

import numpy as np

from hamacho.errors import DatasetError
from hamacho.post import streamed
from hamacho.post.metrics import metric_grid
from hamacho.post.streamed import StreamedPixels
from hamacho.post.threshold import Thresholds, calibrate
from hamacho.predictor import ScoredBatch
from hamacho.settings import ThresholdSettings


class CalibrationCollector:
    """Collects raw scores and labelled pixels, then computes the calibration.

    Labelled pixels are kept (for an exact F1 cut) up to ``pixel_budget``; past it they are counted into
    score bins (:mod:`hamacho.post.streamed`) spanning the pixels held then, widened by a quarter of their span
    on each side (later values outside clip to the end bins), and the pixel F1 cut is a bin edge.

    Args:
        rule: How the thresholds are set (``threshold`` section of the configuration).
        pixel_budget: Labelled metric-grid pixels kept as they are.
    """

    def __init__(self, rule: ThresholdSettings | None = None, pixel_budget: int | None = None) -> None:
        self.rule = rule or ThresholdSettings()
        self.thresholds: Thresholds | None = None
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._pixel_scores: list[np.ndarray] = []
        self._pixel_labels: list[np.ndarray] = []
        self._map_min = float("inf")
        self._map_max = float("-inf")
        self._defect_pixels = False
        self._synthetic: np.ndarray | None = None
        self.pixel_budget = streamed.EXACT_PIXELS if pixel_budget is None else pixel_budget
        self._held_pixels = 0
        self._streamed: StreamedPixels | None = None

    def add(self, scored: ScoredBatch) -> None:
        """Take the readable labelled images of one scored batch (inspected pixels only)."""
        batch = scored.batch
        keep = batch.valid & (batch.labels >= 0)
        if not keep.any():
            return
        maps = scored.raw_maps[keep]
        inspected = None if batch.inspected is None else batch.inspected[keep]
        self._scores.append(scored.raw_scores[keep])
        self._labels.append(batch.labels[keep])
        values = maps if inspected is None else maps[inspected]
        if values.size:
            self._map_min = min(self._map_min, float(values.min()))
            self._map_max = max(self._map_max, float(values.max()))
        with_mask = batch.has_mask[keep]
        if with_mask.any():
            area = None if inspected is None else inspected[with_mask]
            small_maps, small_masks, small_area = metric_grid(maps[with_mask], batch.masks[keep][with_mask], area)
            pixels = small_maps.ravel() if small_area is None else small_maps[small_area]
            labels = small_masks.ravel() if small_area is None else small_masks[small_area]
            self._defect_pixels |= bool(labels.any())
            if self._streamed is not None:
                self._streamed.count(pixels, labels)
            else:
                self._pixel_scores.append(pixels)
                self._pixel_labels.append(labels.astype(np.uint8))
                self._held_pixels += pixels.size
                if self._held_pixels > self.pixel_budget:
                    self._stream()

    def _stream(self) -> None:
        """Count the labelled pixels held so far into score bins, and every later one."""
        low = min(float(np.nanmin(p)) for p in self._pixel_scores if p.size)
        high = max(float(np.nanmax(p)) for p in self._pixel_scores if p.size)
        margin = (high - low) / 4
        self._streamed = StreamedPixels(low - margin, high + margin)
        for pixels, labels in zip(self._pixel_scores, self._pixel_labels, strict=True):
            self._streamed.count(pixels, labels)
        self._pixel_scores, self._pixel_labels = [], []

    @property
    def count(self) -> int:
        """Images whose scores calibrate (labelled calibration images and out-of-fold training images)."""
        return int(sum(scores.size for scores in self._scores))

    def add_good_scores(self, scores: np.ndarray) -> None:
        """Take raw scores of good images that have no map here (out-of-fold scores of training images)."""
        scores = np.asarray(scores, dtype=np.float32)
        if scores.size:
            self._scores.append(scores)
            self._labels.append(np.zeros(scores.size, dtype=np.int64))

    def add_synthetic_scores(self, scores: np.ndarray) -> None:
        """Take raw scores of synthetic defects (method balanced places the threshold between them and the goods)."""
        self._synthetic = np.asarray(scores, dtype=np.float64)

    @property
    def notes(self) -> list[str]:
        """Remarks on how the thresholds were set (empty before :meth:`finish`)."""
        return self.thresholds.notes if self.thresholds is not None else []

    def finish(self) -> dict[str, float]:
        """Thresholds (by the rule's method) and the score ranges, in raw units.

        How each threshold was set is in :attr:`thresholds`, remarks in :attr:`notes`. When the pixel
        threshold is the image threshold (no masks, or a method without pixel labels), the maps are
        normalized with the image scores' range, so a pixel is NG exactly when it alone would make its
        image NG.

        Raises:
            DatasetError: When no calibration image could be read, or the method cannot be applied.
        """
        if not self._scores:
            raise DatasetError("none of the calibration images could be read, so no threshold can be set")
        scores, labels = np.concatenate(self._scores), np.concatenate(self._labels)
        held = self._defect_pixels and self._streamed is None
        pixel_scores = np.concatenate(self._pixel_scores) if held else None
        pixel_labels = np.concatenate(self._pixel_labels) if held else None
        counts = self._streamed.sweep() if self._streamed is not None and self._defect_pixels else None
        self._pixel_scores, self._pixel_labels, self._streamed = [], [], None
        try:
            self.thresholds = calibrate(scores, labels, pixel_scores, pixel_labels, self.rule, self._synthetic,
                                        pixel_counts=counts)
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
        low, high = float(scores.min()), float(scores.max())
        pixel_low, pixel_high = (low, high) if self.thresholds.pixel_from_image else (self._map_min, self._map_max)
        return {"image_threshold": self.thresholds.image_threshold, "pixel_threshold": self.thresholds.pixel_threshold,
                "image_min": low, "image_max": high, "pixel_min": pixel_low, "pixel_max": pixel_high}
