"""Validation-stage callback: thresholds and min/max from the labelled calibration images."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch

from hamacho.errors import DatasetError
from hamacho.post.threshold import calibrate


class CalibrationCallback(pl.Callback):
    """Collects raw scores during validation and stores thresholds and min/max in the module.

    Args:
        fallback_sigma: Margin of the threshold used when no defective image is labelled.
    """

    def __init__(self, fallback_sigma: float = 3.0) -> None:
        self.fallback_sigma = fallback_sigma
        self.notes: list[str] = []
        self._reset()

    def _reset(self) -> None:
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.pixel_scores: list[torch.Tensor] = []
        self.pixel_labels: list[torch.Tensor] = []
        self.map_min = float("inf")
        self.map_max = float("-inf")
        self.defect_pixels = False

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_validation_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        keep = outputs["valid"] & (outputs["label"] >= 0)
        if not keep.any():
            return
        maps = outputs["anomaly_map"][keep]
        self.scores.append(outputs["pred_score"][keep])
        self.labels.append(outputs["label"][keep])
        self.map_min = min(self.map_min, float(maps.min()))
        self.map_max = max(self.map_max, float(maps.max()))
        with_mask = outputs["has_mask"][keep]
        if with_mask.any():
            self.pixel_scores.append(maps[with_mask].flatten())
            masks = outputs["mask"][keep][with_mask].flatten()
            self.pixel_labels.append(masks)
            self.defect_pixels |= bool(masks.any())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.scores:
            raise DatasetError("none of the calibration images could be read, so no threshold can be set")
        scores, labels = torch.cat(self.scores), torch.cat(self.labels)
        pixel_scores = torch.cat(self.pixel_scores) if self.defect_pixels else None
        pixel_labels = torch.cat(self.pixel_labels) if self.defect_pixels else None
        thresholds, self.notes = calibrate(scores, labels, pixel_scores, pixel_labels, self.fallback_sigma)
        pl_module.calibration.set(
            **thresholds,
            image_min=float(scores.min()),
            image_max=float(scores.max()),
            pixel_min=self.map_min,
            pixel_max=self.map_max,
        )
        self._reset()
