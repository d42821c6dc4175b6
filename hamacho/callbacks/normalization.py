"""Test/predict-stage callback: normalized scores and OK/NG decisions added to each batch's outputs."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from hamacho.post.normalization import decide, normalize


class NormalizationCallback(pl.Callback):
    """Adds ``norm_score``, ``norm_map``, ``pred_label`` and ``pred_mask`` to the outputs.

    Args:
        image_cut: Normalized image threshold (0.5 puts it at the calibrated threshold).
        pixel_cut: Normalized pixel threshold.
    """

    def __init__(self, image_cut: float = 0.5, pixel_cut: float = 0.5) -> None:
        self.image_cut = image_cut
        self.pixel_cut = pixel_cut

    def _apply(self, pl_module: pl.LightningModule, outputs: dict[str, Any]) -> None:
        c = pl_module.calibration.as_dict()
        outputs["norm_score"] = normalize(outputs["pred_score"], c["image_threshold"], c["image_min"], c["image_max"])
        outputs["norm_map"] = normalize(outputs["anomaly_map"], c["pixel_threshold"], c["pixel_min"], c["pixel_max"])
        outputs["pred_label"] = decide(outputs["norm_score"], self.image_cut)
        outputs["pred_mask"] = decide(outputs["norm_map"], self.pixel_cut)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._apply(pl_module, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._apply(pl_module, outputs)
