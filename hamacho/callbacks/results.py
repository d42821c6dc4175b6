"""Test/predict-stage callback: per-image rows and, where labels are known, the metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch

from hamacho.callbacks.samples import stage_samples
from hamacho.post.metrics import image_metrics, pixel_metrics

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


class ResultsCollector(pl.Callback):
    """Collects :class:`ImageResult` rows and computes metrics at the end of test or predict.

    After the stage, ``rows`` holds one row per image and ``metrics`` the image metrics (when good
    and defective images are labelled) and pixel metrics (when masks exist).
    """

    def __init__(self) -> None:
        self.metrics: dict[str, float | None] = {}
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

    on_test_epoch_start = _start
    on_predict_epoch_start = _start

    def _collect(self, trainer: pl.Trainer, outputs: dict[str, Any]) -> None:
        samples = stage_samples(trainer)
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

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(trainer, outputs)

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.metrics = {}
        if self._scores:
            self.metrics.update(
                image_metrics(torch.cat(self._scores), torch.cat(self._labels), torch.cat(self._decisions))
            )
            masks = torch.cat(self._masks) if self._masks else None
            if masks is not None and bool(masks.any()):
                self.metrics.update(pixel_metrics(torch.cat(self._maps), masks, torch.cat(self._pred_masks)))
        # Free the pixel data, keep the rows.
        self._maps, self._masks, self._pred_masks = [], [], []

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
