"""Test/predict-stage callback: per-image rows and, where labels are known, the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from hamacho.callbacks.samples import stage_samples
from hamacho.data.images import to_uint8_image
from hamacho.post.metrics import image_metrics, pixel_metrics
from hamacho.post.sweep import Sweep, as_numpy, descending_order, sweep
from hamacho.report.curves import Curves, PixelSample, binary_curves, sample_pixels
from hamacho.report.examples import Example, ExampleTracker, rank_keys

LABEL_NAMES = {0: "good", 1: "defective"}


@dataclass
class ImageResult:
    """Outcome for one image (one row of results.csv)."""

    file: str
    name: str
    defect_type: str
    label: str  # good | defective | "" when unknown
    raw_score: float
    normalized_score: float
    decision: str  # OK | NG | "" when the image could not be read
    status: str  # ok, or why the image (or its mask) was not used

    @property
    def correct(self) -> bool | None:
        """Whether the decision matches the label (None when either is unknown)."""
        if not self.label or not self.decision:
            return None
        return (self.decision == "NG") == (self.label == "defective")


@dataclass
class ReportData:
    """What the HTML report needs beyond the rows; its size does not grow with the number of images.

    Attributes:
        examples: The worst and best scored images (at most ``n`` per group) with their pictures' data.
        show_gt: Whether the run has masks at all (example pictures then get a ground-truth panel).
        pixel_sample: Seeded sample of labelled pixels (raw map values), when defect masks exist.
        pixel_curves: Pixel ROC and precision-recall points over *all* labelled pixels, when masks exist.
    """

    examples: ExampleTracker
    show_gt: bool = False
    pixel_sample: PixelSample | None = None
    pixel_curves: Curves | None = None


class ResultsCollector(pl.Callback):
    """Collects :class:`ImageResult` rows and computes metrics at the end of test or predict.

    After the stage, ``rows`` holds one row per image and ``metrics`` the image metrics (when good
    and defective images are labelled) and pixel metrics (when masks exist). With ``report=True``,
    ``report_data`` also holds the report's example images, pixel sample and pixel curves.

    Args:
        report: Gather :class:`ReportData` for the HTML report.
        examples: Example images per report group.
        pixel_sample: Most pixels kept for the report's pixel-score histogram.
        seed: Seed of the pixel sample.
        image_cut: Normalized image threshold in use (ranks the examples by their distance to it).
    """

    def __init__(
        self,
        report: bool = False,
        examples: int = 5,
        pixel_sample: int = 200_000,
        seed: int = 0,
        image_cut: float = 0.5,
    ) -> None:
        self.metrics: dict[str, float | None] = {}
        self.report = report
        self.examples = examples
        self.pixel_sample = pixel_sample
        self.seed = seed
        self.image_cut = image_cut
        self.report_data: ReportData | None = None
        self._reset()

    def _reset(self) -> None:
        self.rows = []
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._decisions: list[torch.Tensor] = []
        self._maps: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []
        self._pred_masks: list[torch.Tensor] = []

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        self.metrics = {}
        self.report_data = None
        if self.report:
            show_gt = any(s.mask_path is not None for s in stage_samples(trainer))
            self.report_data = ReportData(ExampleTracker(self.examples), show_gt=show_gt)

    on_test_epoch_start = _start
    on_predict_epoch_start = _start

    def _collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: dict[str, Any]) -> None:
        samples = stage_samples(trainer)
        first_row = len(self.rows)
        for i, index in enumerate(outputs["index"].tolist()):
            sample = samples[index]
            valid = bool(outputs["valid"][i])
            label = int(outputs["label"][i])
            raw = float(outputs["pred_score"][i])
            self.rows.append(
                ImageResult(
                    file=str(sample.path),
                    name=sample.name,
                    defect_type=sample.defect_type,
                    label=LABEL_NAMES.get(label, ""),
                    raw_score=raw,
                    normalized_score=float(outputs["norm_score"][i]),
                    decision=("NG" if bool(outputs["pred_label"][i]) else "OK") if valid else "",
                    status=outputs["error"][i] or "ok",
                )
            )
        if self.report_data is not None:
            self._offer_examples(pl_module, outputs, first_row)
        keep = outputs["valid"] & (outputs["label"] >= 0)
        if keep.any():
            self._scores.append(outputs["pred_score"][keep])
            self._labels.append(outputs["label"][keep])
            self._decisions.append(outputs["pred_label"][keep])
            with_mask = outputs["has_mask"][keep]
            if with_mask.any():
                self._maps.append(outputs["anomaly_map"][keep][with_mask])
                self._masks.append(outputs["mask"][keep][with_mask] > 0)
                self._pred_masks.append(outputs["pred_mask"][keep][with_mask])

    def _offer_examples(self, pl_module: pl.LightningModule, outputs: dict[str, Any], first_row: int) -> None:
        """Let the batch's readable images compete for the report's example groups (copies only winners)."""
        assert self.report_data is not None
        tracker = self.report_data.examples
        cal = pl_module.calibration.as_dict()
        span = cal["image_max"] - cal["image_min"]
        span = span if span > 0 else 1.0
        for i, row in enumerate(self.rows[first_row:]):
            if not row.decision:
                continue
            unclipped = (row.raw_score - cal["image_threshold"]) / span + 0.5
            keys = rank_keys(row.label, unclipped, self.image_cut, row.decision)
            if not tracker.wants(keys):
                continue
            gt = outputs["mask"][i].numpy() > 0 if self.report_data.show_gt else None
            tracker.offer(keys, Example(
                name=row.name,
                label=row.label,
                normalized_score=row.normalized_score,
                decision=row.decision,
                image=to_uint8_image(outputs["image"][i]),
                norm_map=outputs["norm_map"][i].numpy().astype(np.float16),
                pred_mask=outputs["pred_mask"][i].numpy().copy(),
                gt_mask=gt,
            ))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, pl_module, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, pl_module, outputs)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.metrics = {}
        if self._scores:
            self.metrics.update(
                image_metrics(torch.cat(self._scores), torch.cat(self._labels), torch.cat(self._decisions))
            )
            masks = torch.cat(self._masks) if self._masks else None
            if masks is not None and bool(masks.any()):
                maps, pred_masks = torch.cat(self._maps), torch.cat(self._pred_masks)
                self._maps, self._pred_masks = [], []
                order = descending_order(as_numpy(maps))  # one sort for every pixel figure
                counts = sweep(maps, masks, order)
                self.metrics.update(pixel_metrics(maps, masks, pred_masks, counts=counts, order=order))
                del order
                if self.report_data is not None:
                    self._pixel_report_data(maps, masks, pred_masks, counts)
        # Free the pixel data, keep the rows.
        self._maps, self._masks, self._pred_masks = [], [], []

    def _pixel_report_data(
        self, maps: torch.Tensor, masks: torch.Tensor, pred_masks: torch.Tensor, counts: Sweep
    ) -> None:
        """Pixel sample and downsampled pixel curves for the report (the full maps are freed afterwards)."""
        assert self.report_data is not None
        self.report_data.pixel_curves = binary_curves(maps, masks, pred_masks, counts=counts)
        if self.pixel_sample > 0:
            self.report_data.pixel_sample = sample_pixels(maps, masks, self.pixel_sample, self.seed)

    on_test_epoch_end = _finish
    on_predict_epoch_end = _finish

    @property
    def labelled_scores(self) -> tuple[list[float], list[int]]:
        """Raw scores and 0/1 labels of the readable labelled images (for plots)."""
        pairs = [(r.raw_score, r.label == "defective") for r in self.rows if r.label and not math.isnan(r.raw_score)]
        return [p[0] for p in pairs], [int(p[1]) for p in pairs]


RESULT_COLUMNS = ("file", "name", "defect_type", "label", "raw_score", "normalized_score", "decision", "status")


def result_table(rows: list[ImageResult]) -> list[list[Any]]:
    """Rows for results.csv in the order of ``RESULT_COLUMNS`` (scores with full precision)."""
    def number(value: float) -> str:
        return "" if math.isnan(value) else repr(value)

    return [
        [r.file, r.name, r.defect_type, r.label, number(r.raw_score), number(r.normalized_score), r.decision, r.status]
        for r in rows
    ]
