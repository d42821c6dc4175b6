"""The contract every model meets: a plain ``nn.Module`` wrapped by a thin LightningModule.

A plain model (no Lightning, exportable) provides:
    ``update(images)``  add a batch of training images to what the model memorises;
    ``fit()``           turn what was memorised into the fitted state (Gaussians, memory bank);
    ``forward(images)`` -> ``(anomaly_maps (B, S, S), image_scores (B,))`` raw scores.

:class:`AnomalyModule` feeds it batches, skips unreadable images and carries the calibration state
(thresholds and min/max) as buffers so that it travels in the model file with the weights.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from hamacho.errors import DatasetError

CALIBRATION_KEYS = ("image_threshold", "pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")


class Calibration(nn.Module):
    """Thresholds and score ranges found on the calibration images, in raw score units."""

    def __init__(self) -> None:
        super().__init__()
        for key in CALIBRATION_KEYS:
            self.register_buffer(key, torch.tensor(float("nan")))

    @property
    def done(self) -> bool:
        """True once every value has been set."""
        return all(bool(torch.isfinite(getattr(self, key))) for key in CALIBRATION_KEYS)

    def set(self, **values: float) -> None:
        """Set some of the values (keys from ``CALIBRATION_KEYS``)."""
        for key, value in values.items():
            if key not in CALIBRATION_KEYS:
                raise KeyError(key)
            getattr(self, key).fill_(float(value))

    def as_dict(self) -> dict[str, float]:
        """Plain floats, for JSON and reports."""
        return {key: float(getattr(self, key)) for key in CALIBRATION_KEYS}


class AnomalyModule(pl.LightningModule):
    """Lightning wrapper: one pass over the training images, then scoring in every other stage.

    Args:
        model: The plain model.
        config: The effective configuration (plain dict), stored in the model file.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.calibration = Calibration()
        self.unreadable_training_files: list[str] = []
        self.automatic_optimization = False
        # Wall seconds of the two fitting phases, for summaries and benchmarks.
        self.fit_timings: dict[str, float] = {}
        self._epoch_start = 0.0

    def configure_optimizers(self) -> None:
        """No optimiser: the models are fitted statistically, in one pass."""
        return None

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        valid = batch["valid"]
        for ok, error in zip(valid.tolist(), batch["error"]):
            if not ok:
                self.unreadable_training_files.append(error)
        if valid.any():
            with torch.no_grad():
                self.model.update(batch["image"][valid])

    def on_train_epoch_end(self) -> None:
        bad = self.unreadable_training_files
        if bad:
            listed = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
            raise DatasetError(f"{len(bad)} training image(s) cannot be read, fix or remove them: {listed}")
        start = time.perf_counter()
        self.fit_timings["feature_extraction_seconds"] = start - self._epoch_start
        self.model.fit(progress=self.trainer.progress_bar_callback is not None)
        self.fit_timings["model_fit_seconds"] = time.perf_counter() - start

    def score_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Raw anomaly maps and image scores; unreadable images get NaN."""
        images, valid = batch["image"], batch["valid"]
        size = images.shape[-1]
        maps = torch.full((images.shape[0], size, size), float("nan"), device=images.device)
        scores = torch.full((images.shape[0],), float("nan"), device=images.device)
        if valid.any():
            valid_maps, valid_scores = self.model(images[valid])
            maps[valid] = valid_maps
            scores[valid] = valid_scores
        return {
            "anomaly_map": maps.cpu(),
            "pred_score": scores.cpu(),
            "label": batch["label"].cpu(),
            "mask": batch["mask"].cpu(),
            "has_mask": batch["has_mask"].cpu(),
            "valid": valid.cpu(),
            "error": batch["error"],
            "index": batch["index"].cpu(),
            "image": batch["image"].cpu(),
        }

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.score_batch(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self.score_batch(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.score_batch(batch)
