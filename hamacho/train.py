"""`hamacho train` as a library call: fit, calibrate, save the model file, test and write results."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from hamacho.callbacks.calibration import CalibrationCallback
from hamacho.callbacks.normalization import NormalizationCallback
from hamacho.callbacks.results import ImageResult, ResultsCollector
from hamacho.callbacks.visualizer import VisualizerCallback
from hamacho.data.datamodule import AnomalyDataModule, make_splits
from hamacho.data.discovery import Sample, discover_dataset
from hamacho.data.images import header_problem
from hamacho.engine import build_trainer, interruptible
from hamacho.errors import ConfigError, DatasetError
from hamacho.model_file import MODEL_FILENAME, save_model_file
from hamacho.models.factory import build_module
from hamacho.report.files import atomic_write_text, check_writable_dir
from hamacho.report.html import write_report_or_warn
from hamacho.report.results import write_metrics_json, write_results_csv
from hamacho.resources import peak_rss_mb


def refuse_unreadable(samples: list[Sample]) -> None:
    """Stop before any work when training files are empty or not images (quick header check).

    Damaged files that pass it (truncated data) are caught while fitting, again with the full list.
    """
    problems = [problem for problem in (header_problem(s.path) for s in samples) if problem]
    if problems:
        listed = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DatasetError(f"{len(problems)} training image(s) cannot be read, fix or remove them: {listed}")


def problem_notes(rows: list[ImageResult]) -> list[str]:
    """One line each for unreadable test images and unusable masks (details are in results.csv)."""
    notes = []
    unreadable = [r for r in rows if not r.decision]
    if unreadable:
        notes.append(f"unreadable test images skipped: {len(unreadable)} (first: {unreadable[0].status}); "
                     "see the status column of results.csv")
    masks = [r for r in rows if r.decision and r.status.startswith("mask ignored")]
    if masks:
        notes.append(f"masks not used: {len(masks)} (first: {masks[0].status.removeprefix('mask ignored: ')}); "
                     "those images count for image metrics only")
    return notes


@dataclass
class TrainResult:
    """What a training run produced."""

    output_dir: Path
    model_path: Path
    metrics: dict[str, float | None]
    calibration: dict[str, float]
    timings: dict[str, float]
    rows: list[ImageResult]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None


def run_training(config: DictConfig, progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Train, calibrate and test one model on one dataset root.

    Args:
        config: Validated configuration (see :func:`hamacho.config.build_config`).
        progress: Show progress bars.
        log: Where one-line messages go.

    Returns:
        Paths, metrics, thresholds and timings of the run.
    """
    cfg: dict[str, Any] = OmegaConf.to_container(config, resolve=True)  # type: ignore[assignment]
    data_cfg, vis_cfg = cfg["dataset"], cfg["visualization"]
    if not data_cfg["root"]:
        raise ConfigError("no dataset given: pass --dataset-root DIR (or set dataset.root)")
    layout = discover_dataset(data_cfg["root"])
    refuse_unreadable(layout.train)
    seed = int(cfg["project"]["seed"])
    splits = make_splits(layout, float(data_cfg["calibration_split"]), seed)
    notes = list(layout.warnings) + list(splits.notes)
    for note in notes:
        log(f"note: {note}")
    output_dir = check_writable_dir(
        Path(cfg["project"]["result_path"]) / cfg["model"]["name"] / layout.category, "result folder"
    )

    pl.seed_everything(seed, workers=True, verbose=False)
    module = build_module(cfg)
    datamodule = AnomalyDataModule(splits, int(data_cfg["image_size"]), int(data_cfg["batch_size"]),
                                   int(data_cfg["num_workers"]))
    calibration = CalibrationCallback(float(cfg["threshold"]["fallback_sigma"]))
    report_cfg = cfg["report"]
    collector = ResultsCollector(report=bool(report_cfg["enabled"]), examples=int(report_cfg["examples"]),
                                 pixel_sample=int(report_cfg["pixel_sample"]), seed=seed)
    visualizer = VisualizerCallback.from_config(output_dir, vis_cfg)
    trainer = build_trainer(cfg["trainer"]["accelerator"], [calibration, NormalizationCallback(), visualizer,
                                                             collector], progress)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    with interruptible(trainer, "interrupted during fitting; nothing was saved"):
        trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
    timings["fit_seconds"] = time.perf_counter() - start
    timings.update(module.fit_timings)  # feature extraction vs covariance inversion / coreset selection

    start = time.perf_counter()
    with interruptible(trainer, "interrupted during calibration; nothing was saved"):
        trainer.validate(module, dataloaders=datamodule.val_dataloader(), verbose=False)
    timings["calibration_seconds"] = time.perf_counter() - start
    notes += calibration.notes

    counts = layout.counts()
    summary: dict[str, Any] = {
        "model": cfg["model"]["name"],
        "backbone": cfg["model"]["backbone"],
        "backbone_weights": cfg["model"]["backbone_weights"],
        "image_size": int(data_cfg["image_size"]),
        "seed": seed,
        "dataset": str(layout.root),
        "category": layout.category,
        "counts": counts,
        "images_fitted": len(splits.train),
        "images_calibrated": len(splits.calibration),
        "calibration": module.calibration.as_dict(),
        "notes": notes,
    }
    model_path = save_model_file(output_dir / MODEL_FILENAME, module, extra={"dataset": summary})
    atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(config))

    start = time.perf_counter()
    if splits.test:
        with interruptible(trainer, f"interrupted during testing; the model file {model_path} is complete, "
                                    "test results were not written"):
            trainer.test(module, dataloaders=datamodule.test_dataloader(), verbose=False)
    timings["test_seconds"] = time.perf_counter() - start
    timings["test_images_per_second"] = len(splits.test) / timings["test_seconds"] if splits.test else 0.0
    timings["peak_rss_mb"] = peak_rss_mb()

    for problem in problem_notes(collector.rows):
        log(f"warning: {problem}")
        notes.append(problem)
    summary.update(metrics=collector.metrics, timings=timings, model_file=str(model_path))
    write_results_csv(output_dir / "results.csv", collector.rows)
    write_metrics_json(output_dir / "metrics.json", summary)
    report_path = None
    if report_cfg["enabled"] and collector.rows:
        report_path = write_report_or_warn(log, output_dir=output_dir, summary=summary, rows=collector.rows,
                                           config=cfg, data=collector.report_data)
    return TrainResult(
        output_dir=output_dir,
        model_path=model_path,
        metrics=collector.metrics,
        calibration=module.calibration.as_dict(),
        timings=timings,
        rows=collector.rows,
        summary=summary,
        notes=notes,
        report_path=report_path,
    )
