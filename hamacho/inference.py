"""`hamacho inference` as a library call: score images with a model file through the Predictor, write results."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hamacho.config import settings_to_dict
from hamacho.data.discovery import discover_inference_inputs
from hamacho.errors import ConfigError, DatasetError
from hamacho.files import check_writable_dir
from hamacho.predictor import Predictor, check_cut
from hamacho.progress import RunControl
from hamacho.report.pictures import PictureWriter
from hamacho.report.results import write_metrics_json, write_results_csv
from hamacho.resources import peak_rss_mb
from hamacho.results.collector import ResultsCollector
from hamacho.results.types import ImageResult

STOP_NOTE = "results.csv was not written"


@dataclass
class InferenceResult:
    """What an inference run produced."""

    output_dir: Path
    rows: list[ImageResult]
    metrics: dict[str, float | None]
    summary: dict[str, Any]
    report_path: Path | None = None


def run_inference(
    model_path: str | Path,
    image_path: str | Path,
    save_path: str | Path | None = None,
    image_threshold: float = 0.5,
    pixel_threshold: float = 0.5,
    batch_size: int | None = None,
    visualization: dict[str, Any] | None = None,
    control: RunControl | None = None,
    log: Callable[[str], None] = print,
    report: bool = True,
) -> InferenceResult:
    """Score an image, a folder or a dataset root's test images.

    Args:
        model_path: File written by ``hamacho train`` (or its results folder).
        image_path: Image file, folder (searched recursively) or dataset root (its ``test/`` with labels).
        save_path: Output folder; default ``inference/`` beside the model file.
        image_threshold: Normalized cut for OK/NG (0.5 = the trained threshold).
        pixel_threshold: Normalized cut for predicted masks.
        batch_size: Images per forward pass; default from the model's configuration.
        visualization: Overrides of the model's ``visualization`` settings.
        control: Progress bar and stop requests (default: none).
        log: Where one-line messages go.
        report: Write report.html and its figures (docs/report.md).

    Returns:
        Rows, metrics (when labels are known) and the output folder.

    Raises:
        DatasetError: When no image at all could be processed.
    """
    control = control or RunControl(stop_note=STOP_NOTE)
    check_cut("--image-threshold", image_threshold)
    check_cut("--pixel-threshold", pixel_threshold)
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    with control.phase("loading", total=1, unit="steps", bar=False) as phase:
        predictor = Predictor.load(model_path, batch_size=batch_size)
        settings = predictor.settings
        samples, _ = discover_inference_inputs(image_path)
        output_dir = check_writable_dir(save_path or predictor.path.parent / "inference", "save path")
        vis = dataclasses.replace(settings.visualization, **(visualization or {}))
        phase.advance()

    collector = ResultsCollector(samples, predictor.calibration, report=report, examples=settings.report.examples,
                                 pixel_sample=settings.report.pixel_sample, seed=settings.project.seed,
                                 image_cut=image_threshold, pixel_cut=pixel_threshold)
    with control.phase("inference", total=len(samples)) as phase, \
            PictureWriter(output_dir, samples, vis, pixel_threshold) as pictures:
        for scored in predictor.score_samples(samples, image_threshold, pixel_threshold):
            collector.add(scored)
            pictures.add(scored)
            phase.advance(len(scored))
        pictures.finish()
        collector.finish()
    seconds = control.seconds["inference"]

    rows = collector.rows
    write_results_csv(output_dir / "results.csv", rows)
    unreadable = [r for r in rows if not r.decision]
    summary = {
        "model_file": str(predictor.path),
        "image_path": str(image_path),
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "calibration": predictor.calibration,
        "thresholds": predictor.metadata.get("thresholds"),
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
        control.stop_note = "results.csv is complete, the report was not written"
        with control.phase("report", unit="sections") as phase:
            from hamacho.report.html import write_report_or_warn  # matplotlib: loaded only for a report

            report_path = write_report_or_warn(log, output_dir=output_dir, summary=summary, rows=rows,
                                               config=settings_to_dict(settings), data=collector.report_data,
                                               image_cut=image_threshold, pixel_cut=pixel_threshold,
                                               kind="inference", step=phase.advance,
                                               model_title=predictor.display_name)
    return InferenceResult(output_dir=output_dir, rows=rows, metrics=collector.metrics, summary=summary,
                           report_path=report_path)

