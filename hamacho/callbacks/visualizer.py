"""Test/predict-stage callback: report images, and optional full-resolution heatmaps and outlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import lightning.pytorch as pl

from hamacho.callbacks.samples import stage_samples
from hamacho.data.images import ImageReadError, read_image, to_uint8_image
from hamacho.report.files import write_png
from hamacho.report.images import compose_report, heatmap_overlay, segmentation_overlay


class VisualizerCallback(pl.Callback):
    """Writes ``images/<name>.png`` report pictures (and ``heatmaps/``, ``segmentation/`` when asked).

    Args:
        output_dir: Results folder.
        report_images: Write the composed report picture per image.
        save_heatmap: Also write the heatmap over the original image at its own resolution.
        save_segmentation: Also write the outlined defects over the original image at its resolution.
        only_wrong: Skip labelled images whose decision is right.
        alpha: Heatmap opacity.
        image_cut: Normalized image threshold (for the title).
        pixel_cut: Normalized pixel threshold (for masks and outlines).
    """

    def __init__(
        self,
        output_dir: str | Path,
        report_images: bool = True,
        save_heatmap: bool = False,
        save_segmentation: bool = False,
        only_wrong: bool = False,
        alpha: float = 0.5,
        pixel_cut: float = 0.5,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.report_images = report_images
        self.save_heatmap = save_heatmap
        self.save_segmentation = save_segmentation
        self.only_wrong = only_wrong
        self.alpha = alpha
        self.pixel_cut = pixel_cut
        self.written = 0

    @classmethod
    def from_config(cls, output_dir: str | Path, vis: dict[str, Any], pixel_cut: float = 0.5) -> VisualizerCallback:
        """Build from the ``visualization`` section of the configuration."""
        return cls(
            output_dir,
            report_images=bool(vis["report_images"]),
            save_heatmap=bool(vis["save_heatmap"]),
            save_segmentation=bool(vis["save_segmentation"]),
            only_wrong=bool(vis["only_wrong"]),
            alpha=float(vis["heatmap_alpha"]),
            pixel_cut=pixel_cut,
        )

    @property
    def active(self) -> bool:
        """True when any picture is to be written."""
        return self.report_images or self.save_heatmap or self.save_segmentation

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.written = 0
        self._show_gt = any(s.mask_path is not None for s in stage_samples(trainer))

    on_test_epoch_start = _start
    on_predict_epoch_start = _start

    def _write(self, trainer: pl.Trainer, outputs: dict[str, Any]) -> None:
        if not self.active:
            return
        samples = stage_samples(trainer)
        for i, index in enumerate(outputs["index"].tolist()):
            if not bool(outputs["valid"][i]):
                continue
            label = int(outputs["label"][i])
            is_ng = bool(outputs["pred_label"][i])
            if self.only_wrong and label >= 0 and is_ng == bool(label):
                continue
            sample = samples[index]
            norm_map = outputs["norm_map"][i].numpy()
            pred_mask = outputs["pred_mask"][i].numpy()
            if self.report_images:
                gt = outputs["mask"][i].numpy() > 0 if self._show_gt else None
                title = f"{sample.name}   score {float(outputs['norm_score'][i]):.3f}   {'NG' if is_ng else 'OK'}"
                if label >= 0:
                    title += f"   (label: {'defective' if label else 'good'})"
                picture = compose_report(
                    to_uint8_image(outputs["image"][i]), norm_map, pred_mask, title, is_ng, gt, self.alpha,
                    self.pixel_cut,
                )
                write_png(self.output_dir / "images" / f"{sample.name}.png", picture)
            if self.save_heatmap or self.save_segmentation:
                self._write_full_resolution(sample, norm_map)
            self.written += 1

    def _write_full_resolution(self, sample: Any, norm_map: Any) -> None:
        try:
            original = read_image(sample.path)
        except ImageReadError:
            return
        height, width = original.shape[:2]
        big = cv2.resize(norm_map, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.save_heatmap:
            write_png(self.output_dir / "heatmaps" / f"{sample.name}.png", heatmap_overlay(original, big, self.alpha))
        if self.save_segmentation:
            outline = segmentation_overlay(original, big >= self.pixel_cut, thickness=max(2, width // 300))
            write_png(self.output_dir / "segmentation" / f"{sample.name}.png", outline)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._write(trainer, outputs)
