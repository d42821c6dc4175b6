"""`hamacho train` as a library call: fit, calibrate, test, report, then save the model file.

Phases (see :mod:`hamacho.progress`): loading, feature extraction (Lightning drives the pass over the
training images), fit (the model's statistics), calibration and test (both through the Predictor, the
path every later score takes), report, saving. The model file is written last, in one rename, so a run
that fails or is stopped at any moment leaves no model file (and an earlier one in the same folder
stays as it was).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from hamacho.config import settings_to_dict
from hamacho.data.dataset import DecodeCache
from hamacho.data.decoding import header_problem
from hamacho.data.discovery import Sample
from hamacho.data.formats import discover_training_data
from hamacho.data.framing import prepare_framing
from hamacho.data.splits import SPLITS_FILENAME, hold_out_labelled, make_splits, repeated_paths, split_names
from hamacho.errors import DatasetError, summarize
from hamacho.files import atomic_write_text, check_writable_dir, write_json
from hamacho.model_file import MODEL_FILENAME, save_model_file
from hamacho.post.threshold import GOOD_IMAGE_RULES, resolved_method
from hamacho.predictor import Predictor
from hamacho.progress import RunControl
from hamacho.report.pictures import PictureWriter
from hamacho.report.results import write_metrics_json, write_results_csv
from hamacho.resources import peak_rss_mb
from hamacho.results.calibration import CalibrationCollector
from hamacho.results.collector import ResultsCollector
from hamacho.results.held_out import held_out_summary
from hamacho.results.out_of_fold import out_of_fold_scores
from hamacho.results.summary import RunSummary
from hamacho.results.synthetic_recall import synthetic_recall, synthetic_recall_text, synthetic_scores
from hamacho.results.types import ImageResult
from hamacho.settings import Settings

STOP_NOTE = "no model file was written"


def refuse_unreadable(samples: list[Sample]) -> None:
    """Stop before any work when training files are empty or not images (quick header check).

    Damaged files that pass it (truncated data) are caught while fitting, again with the full list.
    """
    problems = [problem for problem in (header_problem(s.path) for s in samples) if problem]
    if problems:
        raise DatasetError(f"{len(problems)} training image(s) cannot be read, fix or remove them: "
                           f"{summarize(problems)}")


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
    summary: RunSummary
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None


def run_training(settings: Settings, control: RunControl | None = None,
                 log: Callable[[str], None] = print) -> TrainResult:
    """Train, calibrate and test one model on one dataset root, then write its files.

    Args:
        settings: Validated settings (see :func:`hamacho.config.build_config`).
        control: Progress bars, observer and stop requests (default: none of them).
        log: Where one-line messages go.

    Returns:
        Paths, metrics, thresholds and timings of the run.

    Raises:
        Interrupted: When a stop was requested (nothing of the model is written).
    """
    import lightning.pytorch as pl

    from hamacho.models.factory import build_model
    from hamacho.models.lightning_module import fit_features
    from hamacho.runtimes.torch_runtime import resolve_device

    control = control or RunControl(stop_note=STOP_NOTE)
    data, seed = settings.dataset, settings.project.seed
    with control.phase("loading", total=1, unit="steps", bar=False) as phase:
        layout = discover_training_data(data, seed)
        refuse_unreadable(layout.train)
        splits = make_splits(layout, data.calibration_split, seed)
        splits.calibration, held_out = hold_out_labelled(splits.calibration, data.holdout, seed)
        framing, valid_area = prepare_framing(data, splits.train[0].path)
        if settings.threshold.method == "f1" and not any(s.label == 1 for s in splits.calibration):
            raise DatasetError("threshold.method f1 needs defective calibration images, and this dataset has none; "
                               "use auto, sigma, percentile or manual (docs/training.md#thresholds)")
        notes = list(layout.warnings) + list(splits.notes)
        if held_out:
            notes.append(f"{len(held_out)} labelled image(s) held out of the thresholds (dataset.holdout "
                         f"{data.holdout:g}): metrics.json's held_out gives their metrics")
        for note in notes:
            log(f"note: {note}")
        output_dir = check_writable_dir(
            Path(settings.project.result_path) / settings.model.name / layout.category, "result folder")
        pl.seed_everything(seed, workers=True, verbose=False)
        model = build_model(settings)
        phase.advance()

    with control.phase("feature extraction", total=len(splits.train)) as phase:
        fit_features(model, splits.train, data.batch_size, data.num_workers, settings.trainer.accelerator, phase,
                     framing)
    # The good-image rule: every training image also calibrates, scored out of fold (hamacho.results.out_of_fold).
    rule = settings.threshold
    defects = sum(1 for s in splits.calibration if s.label == 1)
    goods = sum(1 for s in splits.calibration if s.label == 0)  # synthetic defects go on (some of) these
    # balanced or fpr, a rule of good images either way: whether the training images are scored out of fold
    good_rule = resolved_method(rule.method, defects, rule.few_defects) in GOOD_IMAGE_RULES
    fold_source = model.fold_source() if good_rule and 2 <= rule.folds <= len(splits.train) else None
    calibrating = goods + (len(splits.train) if fold_source is not None else 0)  # good scores calibrate() gets
    chosen_rule = resolved_method(rule.method, defects, rule.few_defects,
                                  synthetic=rule.synthetic_images > 0 and goods > 0, goods=calibrating)
    with control.phase("fit", unit="steps") as phase:
        model.to(resolve_device(settings.trainer.accelerator)).fit(phase)

    predictor = Predictor.from_model(model, settings, settings.trainer.accelerator, valid_area=valid_area)
    again = repeated_paths(splits)
    cache = DecodeCache(again) if again else None  # test images also used for calibration: decoded once
    out_of_fold_steps = 2 * len(splits.train) if fold_source is not None else 0
    placing = None
    if chosen_rule == "balanced" and not defects:
        # balanced (auto's rule without real defects) weighs synthetic ones (another seed than the recall estimate's)
        with control.phase("synthetic defects", total=min(goods, rule.synthetic_images)) as phase:
            placing = synthetic_scores(predictor, splits.calibration, rule.synthetic_images, seed + 1, phase.advance)
    with control.phase("calibration", total=len(splits.calibration) + out_of_fold_steps) as phase:
        calibration = CalibrationCollector(settings.threshold)
        if placing is not None:
            calibration.add_synthetic_scores(placing)
        for scored in predictor.score_samples(splits.calibration, cache=cache):
            calibration.add(scored)
            phase.advance(len(scored))
            del scored  # frame-sized arrays: not kept while the next batch is scored, nor after the pass
        if fold_source is not None:
            calibration.add_good_scores(out_of_fold_scores(model, fold_source, splits.train, settings, framing,
                                                           valid_area, phase))
            del fold_source  # PaDiM's copy of the sums: freed before the test pass
        model.calibration.set(**calibration.finish())
        for note in calibration.notes:
            log(f"note: {note}")
        notes += calibration.notes
        threshold_info = {"method": settings.threshold.method, "rule": calibration.thresholds.rule,
                          "image": calibration.thresholds.image_source,
                          "pixel": calibration.thresholds.pixel_source, **calibration.thresholds.details}

    synthetic = None
    if not defects and settings.threshold.synthetic_images:
        # good images only: what the threshold would catch, estimated on synthetic defects (labelled so)
        with control.phase("synthetic defects", total=min(goods, settings.threshold.synthetic_images)) as phase:
            synthetic = synthetic_recall(predictor, splits.calibration, settings.threshold.synthetic_images, seed,
                                         phase.advance)
        if synthetic:
            note = f"synthetic defects: the threshold {synthetic_recall_text(synthetic)}"
            log(f"note: {note}")
            notes.append(note)

    collector = ResultsCollector(splits.test, model.calibration.as_dict(), report=settings.report.enabled,
                                 examples=settings.report.examples, pixel_sample=settings.report.pixel_sample,
                                 seed=seed)
    with control.phase("test", total=len(splits.test)) as phase, \
            PictureWriter(output_dir, splits.test, settings.visualization) as pictures:
        for scored in predictor.score_samples(splits.test, cache=cache):
            collector.add(scored)
            pictures.add(scored)
            phase.advance(len(scored))
            del scored  # only the picture writer keeps a batch's frame-sized arrays while the next is scored
        pictures.finish()
        collector.finish()

    timings = _timings(control.seconds, len(splits.test), model.fit_seconds_in_updates)
    held_out_metrics = held_out_summary(collector.rows, {s.name for s in held_out})
    if held_out_metrics and held_out_metrics["warning"]:
        notes.append(held_out_metrics["warning"])
    for problem in problem_notes(collector.rows):
        log(f"warning: {problem}")
        notes.append(problem)
    model_path = output_dir / MODEL_FILENAME
    config = settings_to_dict(settings)
    summary = RunSummary(
        calibration=model.calibration.as_dict(), thresholds=threshold_info, metrics=collector.metrics,
        model=settings.model.name, backbone=settings.model.backbone,
        backbone_weights=settings.model.backbone_weights, image_size=data.image_size,
        input_size=list(predictor.input_size), frame_size=list(predictor.frame_size), seed=seed,
        dataset=str(layout.root), category=layout.category, data_format=layout.data_format, counts=layout.counts(),
        images_fitted=len(splits.train), images_calibrated=calibration.count, notes=notes, timings=timings,
        model_file=str(model_path), config=config, held_out=held_out_metrics, synthetic_recall=synthetic)
    report_path = None
    if settings.report.enabled and collector.rows:
        with control.phase("report", unit="sections") as phase:
            from hamacho.report.html import write_report_or_warn  # matplotlib: loaded only for a report

            report_path = write_report_or_warn(log, output_dir=output_dir, summary=summary.as_dict(),
                                               rows=collector.rows,
                                               config=config, data=collector.report_data, step=phase.advance,
                                               model_title=predictor.display_name)

    with control.phase("saving", total=1, unit="files", bar=False) as phase:
        write_results_csv(output_dir / "results.csv", collector.rows)
        summary.report = report_path is not None
        write_metrics_json(output_dir / "metrics.json", summary.metrics_json())
        write_json(output_dir / SPLITS_FILENAME, split_names(splits, held_out))
        atomic_write_text(output_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        save_model_file(model_path, model, settings, extra={"dataset": summary.dataset_facts(),
                                                            "thresholds": threshold_info},
                        before_commit=phase.advance, valid_area=valid_area)
    return TrainResult(output_dir=output_dir, model_path=model_path, metrics=collector.metrics,
                       calibration=model.calibration.as_dict(), timings=timings, rows=collector.rows,
                       summary=summary, notes=notes, report_path=report_path)


def _timings(seconds: dict[str, float], tested: int, fitted_in_updates: float = 0.0) -> dict[str, float]:
    """Wall times of the phases, as metrics.json and the report show them; ``fitted_in_updates`` seconds of the
    feature-extraction phase were model fitting (PatchCore's coreset chunks) and count as such."""
    test = seconds.get("test", 0.0)
    extraction = seconds.get("feature extraction", 0.0)
    moved = min(fitted_in_updates, extraction)
    return {
        "fit_seconds": extraction + seconds.get("fit", 0.0),
        "feature_extraction_seconds": extraction - moved,
        "model_fit_seconds": seconds.get("fit", 0.0) + moved,
        "calibration_seconds": seconds.get("calibration", 0.0),
        "test_seconds": test,
        "test_images_per_second": tested / test if tested and test > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(),
    }
