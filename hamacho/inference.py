"""`hamacho inference` as a library call: score images with a model file and write results."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hamacho.callbacks.normalization import NormalizationCallback
from hamacho.callbacks.results import ImageResult, ResultsCollector
from hamacho.callbacks.visualizer import VisualizerCallback
from hamacho.data.datamodule import AnomalyDataModule
from hamacho.data.discovery import discover_inference_inputs
from hamacho.engine import build_trainer, interruptible
from hamacho.errors import ConfigError, DatasetError
from hamacho.model_file import load_model_file
from hamacho.report.files import check_writable_dir
from hamacho.report.html import write_report_or_warn
from hamacho.report.results import write_metrics_json, write_results_csv
from hamacho.resources import peak_rss_mb


@dataclass
class InferenceResult:
    """What an inference run produced."""

    output_dir: Path
    rows: list[ImageResult]
    metrics: dict[str, float | None]
    summary: dict[str, Any]
    report_path: Path | None = None


def check_cut(name: str, value: float) -> float:
    """Normalized thresholds must lie within 0..1."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1 (normalized scale, 0.5 = trained threshold), got {value}")
    return value


def run_inference(
    model_path: str | Path,
    image_path: str | Path,
    save_path: str | Path | None = None,
    image_threshold: float = 0.5,
    pixel_threshold: float = 0.5,
    batch_size: int | None = None,
    visualization: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    report: bool = True,
) -> InferenceResult:
    """Score an image, a folder or a dataset root's test images.

    Args:
        model_path: File written by ``hamacho train``.
        image_path: Image file, folder (searched recursively) or dataset root (its ``test/`` with labels).
        save_path: Output folder; default ``inference/`` beside the model file.
        image_threshold: Normalized cut for OK/NG (0.5 = the trained threshold).
        pixel_threshold: Normalized cut for predicted masks.
        batch_size: Images per forward pass; default from the model's configuration.
        visualization: Overrides of the model's ``visualization`` settings.
        progress: Show a progress bar.
        log: Where one-line messages go.
        report: Write report.html and its figures (docs/report.md).

    Returns:
        Rows, metrics (when labels are known) and the output folder.

    Raises:
        DatasetError: When no image at all could be processed.
    """
    check_cut("--image-threshold", image_threshold)
    check_cut("--pixel-threshold", pixel_threshold)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    loaded = load_model_file(model_path)
    cfg = loaded.metadata["config"]
    samples, _ = discover_inference_inputs(image_path)
    output_dir = check_writable_dir(save_path or loaded.path.parent / "inference", "save path")
    vis = {**cfg["visualization"], **(visualization or {})}

    datamodule = AnomalyDataModule(
        None, int(cfg["dataset"]["image_size"]), batch_size or int(cfg["dataset"]["batch_size"]), 0,
        predict_samples=samples,
    )
    report_cfg = {"examples": 5, "pixel_sample": 200_000, **cfg.get("report", {})}
    collector = ResultsCollector(report=report, examples=int(report_cfg["examples"]),
                                 pixel_sample=int(report_cfg["pixel_sample"]), seed=int(cfg["project"]["seed"]),
                                 image_cut=image_threshold)
    callbacks = [
        NormalizationCallback(image_threshold, pixel_threshold),
        VisualizerCallback.from_config(output_dir, vis, pixel_threshold),
        collector,
    ]
    trainer = build_trainer(cfg["trainer"]["accelerator"], callbacks, progress)
    start = time.perf_counter()
    with interruptible(trainer, "interrupted during inference; results.csv was not written"):
        trainer.predict(loaded.module, dataloaders=datamodule.predict_dataloader(), return_predictions=False)
    seconds = time.perf_counter() - start

    rows = collector.rows
    write_results_csv(output_dir / "results.csv", rows)
    unreadable = [r for r in rows if not r.decision]
    summary = {
        "model_file": str(loaded.path),
        "image_path": str(image_path),
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "calibration": loaded.module.calibration.as_dict(),
        "images": len(rows),
        "unreadable": len(unreadable),
        "metrics": collector.metrics,
        "timings": {"inference_seconds": seconds, "images_per_second": len(rows) / seconds if seconds else 0.0,
                    "peak_rss_mb": peak_rss_mb()},
    }
    if collector.metrics:
        write_metrics_json(output_dir / "metrics.json", summary)
    if unreadable:
        log(f"warning: {len(unreadable)} of {len(rows)} image(s) could not be read; see status in "
            f"{output_dir / 'results.csv'} (first: {unreadable[0].status})")
    if len(unreadable) == len(rows):
        raise DatasetError(f"none of the {len(rows)} image(s) could be read (first: {unreadable[0].status})")
    report_path = None
    if report:
        report_path = write_report_or_warn(log, output_dir=output_dir, summary=summary, rows=rows, config=cfg,
                                           data=collector.report_data, image_cut=image_threshold,
                                           pixel_cut=pixel_threshold, kind="inference")
    return InferenceResult(output_dir=output_dir, rows=rows, metrics=collector.metrics, summary=summary,
                           report_path=report_path)
