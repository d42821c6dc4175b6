"""`hamacho inference` as a library call: score images with a model file through the Predictor, write results.

:func:`run_inference` is the local engine: one process, batches in order. The Ray engine
(:mod:`hamacho.ray_engine`, ``--engine ray``) spreads the same scoring over a cluster; both start with
:func:`prepare_inference` and end with :func:`finish_inference`, so their rows, files and report are the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hamacho.config import settings_to_dict
from hamacho.data.discovery import Sample, discover_inference_inputs
from hamacho.errors import ConfigError, DatasetError
from hamacho.files import check_writable_dir
from hamacho.predictor import Predictor, check_cut
from hamacho.progress import RunControl
from hamacho.report.pictures import PictureWriter
from hamacho.report.results import write_metrics_json, write_results_csv
from hamacho.resources import peak_rss_mb
from hamacho.results.collector import ResultsCollector
from hamacho.results.types import ImageResult, ReportData
from hamacho.settings import VisualizationSettings

STOP_NOTE = "results.csv was not written"


@dataclass
class InferenceResult:
    """What an inference run produced."""

    output_dir: Path
    rows: list[ImageResult]
    metrics: dict[str, float | None]
    summary: dict[str, Any]
    report_path: Path | None = None


@dataclass
class InferenceSetup:
    """What every engine starts from: the model, the images in order, where results go, the cuts.

    Attributes:
        predictor: The model, opened (its settings, calibration and batch size travel with it).
        samples: The images, in the order of results.csv.
        image_path: What ``--image-path`` named.
        output_dir: The results folder (not created yet).
        visualization: Which pictures to write.
        image_threshold: Normalized OK/NG cut.
        pixel_threshold: Normalized mask cut.
    """

    predictor: Predictor
    samples: list[Sample]
    image_path: str | Path
    output_dir: Path
    visualization: VisualizationSettings
    image_threshold: float
    pixel_threshold: float

    def collector(self, report: bool) -> ResultsCollector:
        """A collector of rows and metrics for these images (``report``: also the report's examples)."""
        settings = self.predictor.settings
        return ResultsCollector(self.samples, self.predictor.calibration, report=report,
                                examples=settings.report.examples, pixel_sample=settings.report.pixel_sample,
                                seed=settings.project.seed, image_cut=self.image_threshold,
                                pixel_cut=self.pixel_threshold)

    def pictures(self) -> PictureWriter:
        """The writer of the per-image pictures (a context manager)."""
        return PictureWriter(self.output_dir, self.samples, self.visualization, self.pixel_threshold)


@dataclass(frozen=True)
class InferenceRequest:
    """What a user asks an inference run for, whichever engine scores it.

    Attributes:
        model_path: File written by ``hamacho train`` (or its results folder), or an export folder.
        image_path: Image file, folder (searched recursively), dataset root (its ``test/`` with labels), or a
            file list (``.csv`` with path and label columns, or ``.txt`` with one path a line).
        save_path: Output folder; default ``inference/`` beside the model file.
        image_threshold: Normalized cut for OK/NG (0.5 = the trained threshold).
        pixel_threshold: Normalized cut for predicted masks.
        batch_size: Images per forward pass; default from the model's configuration.
        visualization: Overrides of the model's ``visualization`` settings.
        report: Write report.html and its figures (docs/report.md).
    """

    model_path: str | Path
    image_path: str | Path
    save_path: str | Path | None = None
    image_threshold: float = 0.5
    pixel_threshold: float = 0.5
    batch_size: int | None = None
    visualization: dict[str, Any] | None = None
    report: bool = True


def prepare_inference(request: InferenceRequest, device: str = "auto") -> InferenceSetup:
    """Check the cuts, open the model, find the images and check the output folder.

    Args:
        request: What to score and how.
        device: Where this process runs the model (``auto``, ``cpu``, ...).

    Returns:
        The setup every engine scores from.

    Raises:
        ConfigError: A cut outside 0..1 or a batch size below 1.
    """
    check_cut("--image-threshold", request.image_threshold)
    check_cut("--pixel-threshold", request.pixel_threshold)
    if request.batch_size is not None and request.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {request.batch_size}")
    predictor = Predictor.load(request.model_path, device=device, batch_size=request.batch_size)
    samples, _ = discover_inference_inputs(request.image_path)
    output_dir = check_writable_dir(request.save_path or predictor.path.parent / "inference", "save path")
    vis = dataclasses.replace(predictor.settings.visualization, **(request.visualization or {}))
    return InferenceSetup(predictor, samples, request.image_path, output_dir, vis, request.image_threshold,
                          request.pixel_threshold)


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
    """Score an image, a folder, a dataset root's test images or a file list's images, in this process.

    The arguments but ``control`` and ``log`` are those of :class:`InferenceRequest`; ``control`` carries the
    progress bar and stop requests (default: none), ``log`` one-line messages.

    Returns:
        Rows, metrics (when labels are known) and the output folder.

    Raises:
        DatasetError: When no image at all could be processed.
    """
    request = InferenceRequest(model_path, image_path, save_path, image_threshold, pixel_threshold, batch_size,
                               visualization, report)
    return score_locally(request, control, log)


def score_locally(request: InferenceRequest, control: RunControl | None = None,
                  log: Callable[[str], None] = print) -> InferenceResult:
    """The local engine: :func:`run_inference` for a prepared :class:`InferenceRequest`."""
    control = control or RunControl(stop_note=STOP_NOTE)
    with control.phase("loading", total=1, unit="steps", bar=False) as phase:
        setup = prepare_inference(request)
        phase.advance()

    collector = setup.collector(request.report)
    with control.phase("inference", total=len(setup.samples)) as phase, setup.pictures() as pictures:
        for scored in setup.predictor.score_samples(setup.samples, setup.image_threshold, setup.pixel_threshold):
            collector.add(scored)
            pictures.add(scored)
            phase.advance(len(scored))
            del scored  # only the picture writer keeps a batch's frame-sized arrays while the next is scored
        pictures.finish()
        collector.finish()
    write_results_csv(setup.output_dir / "results.csv", collector.rows)
    return finish_inference(setup, collector.rows, collector.metrics, collector.report_data,
                            control.seconds["inference"], control, log, request.report)


def finish_inference(
    setup: InferenceSetup,
    rows: list[ImageResult],
    metrics: dict[str, float | None],
    report_data: ReportData | None,
    seconds: float,
    control: RunControl,
    log: Callable[[str], None],
    report: bool,
    extra: dict[str, Any] | None = None,
) -> InferenceResult:
    """After results.csv is written: metrics.json, the unreadable-image warning, the report.

    Args:
        setup: What the run scored.
        rows: Every image's row, in order.
        metrics: Image and pixel metrics (empty without labels).
        report_data: The report's examples and pixel data, or None.
        seconds: Wall time of the scoring.
        control: The run's progress and stop state.
        log: Where one-line messages go.
        report: Write report.html.
        extra: More summary entries (an engine's own facts); ``timings`` are merged.

    Raises:
        DatasetError: When none of the images could be read.
    """
    predictor, output_dir = setup.predictor, setup.output_dir
    extra = dict(extra or {})
    unreadable = [r for r in rows if not r.decision]
    summary = {
        "model_file": str(predictor.path),
        "image_path": str(setup.image_path),
        "image_threshold": setup.image_threshold,
        "pixel_threshold": setup.pixel_threshold,
        "calibration": predictor.calibration,
        "thresholds": predictor.metadata.get("thresholds"),
        "images": len(rows),
        "unreadable": len(unreadable),
        "metrics": metrics,
        "timings": {"inference_seconds": seconds, "images_per_second": len(rows) / seconds if seconds else 0.0,
                    "peak_rss_mb": peak_rss_mb(), **extra.pop("timings", {})},
        **extra,
    }
    if metrics:
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
                                               config=settings_to_dict(predictor.settings), data=report_data,
                                               image_cut=setup.image_threshold, pixel_cut=setup.pixel_threshold,
                                               kind="inference", step=phase.advance,
                                               model_title=predictor.display_name)
    return InferenceResult(output_dir=output_dir, rows=rows, metrics=metrics, summary=summary,
                           report_path=report_path)
