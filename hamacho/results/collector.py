"""The test and inference passes' collector: per-image rows and, where labels are known, the metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hamacho.data.decoding import to_uint8_image
from hamacho.data.discovery import Sample
from hamacho.post import streamed
from hamacho.post.curves import binary_curves, sample_pixels, sweep_curves
from hamacho.post.metrics import image_metrics, metric_grid, pixel_metrics
from hamacho.post.streamed import StreamedPixels
from hamacho.post.sweep import Sweep, as_numpy, descending_order, sweep
from hamacho.predictor import ScoredBatch
from hamacho.results.examples import Example, ExampleTracker, picture_arrays, rank_keys
from hamacho.results.types import LABEL_NAMES, PIXEL_METRICS, ImageResult, ReportData


class ResultsCollector:
    """Collects :class:`ImageResult` rows batch by batch and computes metrics at the end.

    After :meth:`finish`, ``rows`` holds one row per image and ``metrics`` the image metrics (when good
    and defective images are labelled) and pixel metrics (when masks exist). With ``report=True``,
    ``report_data`` also holds the report's example images, pixel sample and pixel curves.

    Pixel metrics are exact (every labelled pixel of the metric grid kept, then one sort) up to ``pixel_budget``
    labelled pixels; past it, the pixels kept so far and every later one are counted into score bins instead
    (:mod:`hamacho.post.streamed`), so that memory stops growing with the number of masked images.

    Args:
        samples: The images being scored, in the order of the batches' ``indices``.
        calibration: The model's raw thresholds and min/max (to rank report examples).
        report: Gather :class:`ReportData` for the HTML report.
        examples: Example images per report group.
        pixel_sample: Most pixels kept for the report's pixel-score histogram.
        seed: Seed of the pixel sample.
        image_cut: Normalized image threshold in use (ranks the examples by their distance to it).
        pixel_cut: Normalized pixel threshold in use (predicted masks of shrunk metric grids).
        pixel_budget: Labelled metric-grid pixels kept for exact pixel metrics (about 42 bytes each at the peak).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        calibration: dict[str, float],
        report: bool = False,
        examples: int = 5,
        pixel_sample: int = 200_000,
        seed: int = 0,
        image_cut: float = 0.5,
        pixel_cut: float = 0.5,
        pixel_budget: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.calibration = calibration
        self.pixel_sample = pixel_sample
        self.seed = seed
        self.image_cut = image_cut
        self.pixel_cut = pixel_cut
        self.rows: list[ImageResult] = []
        self.metrics: dict[str, float | None] = {}
        show_gt = any(s.mask_path is not None for s in self.samples)
        self.report_data = ReportData(ExampleTracker(examples), show_gt=show_gt) if report else None
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._decisions: list[np.ndarray] = []
        self._maps: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._pred_masks: list[np.ndarray] = []
        self._inspected: list[np.ndarray] = []
        self.pixel_budget = streamed.EXACT_PIXELS if pixel_budget is None else pixel_budget
        self._held_pixels = 0
        self._streamed: StreamedPixels | None = None
        self._any_mask = False  # a defect pixel on the metric grid (else pixel metrics are undefined)

    def add(self, scored: ScoredBatch) -> None:
        """Take one scored batch: its rows, its labelled scores and pixels, its example candidates."""
        batch = scored.batch
        first_row = len(self.rows)
        for i, index in enumerate(batch.indices.tolist()):
            sample = self.samples[index]
            valid = bool(batch.valid[i])
            self.rows.append(ImageResult(
                file=str(sample.path),
                name=sample.name,
                defect_type=sample.defect_type,
                label=LABEL_NAMES.get(int(batch.labels[i]), ""),
                raw_score=float(scored.raw_scores[i]),
                normalized_score=float(scored.scores[i]),
                decision=("NG" if bool(scored.is_ng[i]) else "OK") if valid else "",
                status=batch.errors[i] or "ok",
            ))
        if self.report_data is not None:
            self._offer_examples(scored, first_row)
        keep = batch.valid & (batch.labels >= 0)
        if keep.any():
            self._scores.append(scored.raw_scores[keep])
            self._labels.append(batch.labels[keep])
            self._decisions.append(scored.is_ng[keep])
            with_mask = batch.has_mask[keep]
            if with_mask.any():
                area = None if batch.inspected is None else batch.inspected[keep][with_mask]
                maps, masks, area = metric_grid(scored.raw_maps[keep][with_mask], batch.masks[keep][with_mask], area)
                predicted = scored.pred_masks[keep][with_mask]
                if predicted.shape != masks.shape:  # shrunk: the cut applied to the shrunk normalized maps
                    predicted = metric_grid(scored.maps[keep][with_mask], masks, None)[0] >= self.pixel_cut
                predicted = predicted if area is None else predicted & area
                self._any_mask |= bool(masks.any())
                if self._streamed is not None:
                    self._streamed.add(maps, masks, predicted, area)
                else:
                    self._hold(maps, masks, predicted, area)

    def _hold(self, maps: np.ndarray, masks: np.ndarray, predicted: np.ndarray, area: np.ndarray | None) -> None:
        """Keep one batch's metric grids for the exact metrics; past the budget, stream from now on."""
        self._maps.append(maps)
        self._masks.append(masks)
        self._pred_masks.append(predicted)
        if area is not None:
            self._inspected.append(area)
        self._held_pixels += maps.size
        if self._held_pixels > self.pixel_budget:
            self._stream()

    def _stream(self) -> None:
        """Count the pixels held so far into score bins and stream every later batch there.

        The bins span the model's calibration range of raw pixel scores widened to the pixels held (later
        values outside clip to the end bins).
        """
        areas = self._inspected or [None] * len(self._maps)
        low, high = self.calibration.get("pixel_min", np.inf), self.calibration.get("pixel_max", -np.inf)
        for maps, area in zip(self._maps, areas, strict=True):
            values = maps if area is None else maps[area]
            if values.size:
                low, high = min(low, float(np.nanmin(values))), max(high, float(np.nanmax(values)))
        if not np.isfinite(low) or not np.isfinite(high):
            low, high = 0.0, 1.0
        self._streamed = StreamedPixels(low, high, sample_size=self.pixel_sample if self.report_data else 0,
                                        seed=self.seed)
        for maps, masks, predicted, area in zip(self._maps, self._masks, self._pred_masks, areas, strict=True):
            self._streamed.add(maps, masks, predicted, area)
        self._maps, self._masks, self._pred_masks, self._inspected = [], [], [], []

    def _offer_examples(self, scored: ScoredBatch, first_row: int) -> None:
        """Let the batch's readable images compete for the report's example groups (copies only winners)."""
        assert self.report_data is not None
        tracker = self.report_data.examples
        cal = self.calibration
        span = cal["image_max"] - cal["image_min"]
        span = span if span > 0 else 1.0
        for i, row in enumerate(self.rows[first_row:]):
            if not row.decision:
                continue
            unclipped = (row.raw_score - cal["image_threshold"]) / span + 0.5
            keys = rank_keys(row.label, unclipped, self.image_cut, row.decision)
            if not tracker.wants(keys):
                continue
            gt = scored.batch.masks[i] > 0 if self.report_data.show_gt else None
            area = None if scored.batch.inspected is None else scored.batch.inspected[i]
            image, norm_map, pred_mask, gt, area = picture_arrays(
                to_uint8_image(scored.batch.images[i]), scored.maps[i], scored.pred_masks[i], gt, area)
            tracker.offer(keys, Example(
                name=row.name,
                label=row.label,
                normalized_score=row.normalized_score,
                decision=row.decision,
                image=image,
                norm_map=norm_map.astype(np.float16),
                pred_mask=pred_mask.copy(),
                gt_mask=gt,
                inspected=None if area is None else area.copy(),
            ))

    def finish(self) -> None:
        """Compute the metrics (and the report's pixel data); the pixel data is freed, the rows kept."""
        self.metrics = {}
        if self._scores:
            self.metrics.update(image_metrics(np.concatenate(self._scores), np.concatenate(self._labels),
                                              np.concatenate(self._decisions)))
            if self._streamed is not None:
                self._finish_streamed(self._streamed)
                self._streamed = None
                return
            masks = np.concatenate(self._masks) if self._masks else None
            if masks is None or not bool(masks.any()):  # image-level labels only: no pixel ground truth
                self.metrics.update({name: None for name in PIXEL_METRICS})
            else:
                maps, pred_masks = np.concatenate(self._maps), np.concatenate(self._pred_masks)
                valid = np.concatenate(self._inspected) if self._inspected else None
                self._maps, self._pred_masks, self._inspected = [], [], []
                flat = (maps, masks, pred_masks) if valid is None else (maps[valid], masks[valid], pred_masks[valid])
                order = descending_order(as_numpy(flat[0]))  # one sort for every pixel figure
                counts = sweep(flat[0], flat[1], order)
                self.metrics.update(pixel_metrics(maps, masks, pred_masks, counts=counts, order=order, valid=valid))
                del order
                if self.report_data is not None:
                    self._pixel_report_data(*flat, counts)
        self._maps, self._masks, self._pred_masks, self._inspected = [], [], [], []

    def _finish_streamed(self, counts: StreamedPixels) -> None:
        """Pixel metrics (and the report's pixel data) from the streamed bin counts."""
        if not self._any_mask:  # image-level labels only: no pixel ground truth
            self.metrics.update({name: None for name in PIXEL_METRICS})
        else:
            self.metrics.update(counts.metrics())
            if self.report_data is not None:
                self.report_data.pixel_curves = sweep_curves(counts.sweep(), counts.operating_point())
                self.report_data.pixel_sample = counts.sample()

    def _pixel_report_data(
        self, maps: np.ndarray, masks: np.ndarray, pred_masks: np.ndarray, counts: Sweep
    ) -> None:
        """Pixel sample and downsampled pixel curves for the report (the full maps are freed afterwards)."""
        assert self.report_data is not None
        self.report_data.pixel_curves = binary_curves(maps, masks, pred_masks, counts=counts)
        if self.pixel_sample > 0:
            self.report_data.pixel_sample = sample_pixels(maps, masks, self.pixel_sample, self.seed)
