"""``hamacho inference --engine ray`` as a library call: the local engine's run, with the scoring on Ray."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from hamacho.errors import HamachoError
from hamacho.inference import (
    InferenceRequest,
    InferenceResult,
    InferenceSetup,
    finish_inference,
    prepare_inference,
)
from hamacho.progress import RunControl
from hamacho.ray_engine.checkpoint import Checkpoint
from hamacho.ray_engine.connection import check_nodes_read, pool_size, ray_failure, ray_session, require_ray
from hamacho.ray_engine.options import RayOptions
from hamacho.ray_engine.parquet import write_results_parquet
from hamacho.ray_engine.pipeline import ScoringJob, stream_scored
from hamacho.report.results import write_results_csv
from hamacho.results.collector import ResultsCollector
from hamacho.results.held_out import row_image_metrics
from hamacho.results.types import PIXEL_METRICS, ImageResult

STOP_NOTE = "results.csv was not written"
RESUME_NOTE = "the images scored so far are saved in {folder}; the same command with --resume scores the rest"


def run_ray_inference(
    request: InferenceRequest,
    options: RayOptions | None = None,
    resume: bool = False,
    control: RunControl | None = None,
    log: Callable[[str], None] = print,
) -> InferenceResult:
    """Score images on a pool of Ray actors: the rows, files and report of :func:`~hamacho.inference.run_inference`.

    Args:
        request: What to score and how, as for the local engine; the model path and the images must be paths
            every node of the cluster reads (the output folder is on the driver's machine, or on the head
            node through Ray Client).
        options: Where Ray is and the size of the actor pool (default: a local Ray, one actor per CPU).
        resume: Continue the unfinished run saved in the output folder, scoring only what it lacks.
        control: Progress bar and stop requests (default: none).
        log: Where one-line messages go.

    Returns:
        As :func:`~hamacho.inference.run_inference`; ``summary["ray"]`` tells the actors, and the images
        resumed and scored.

    Raises:
        RayEngineError: No Ray installed, a cluster out of reach, nodes that cannot read the files, or a
            failure inside Ray (what was scored stays saved for ``--resume``).
    """
    options = options or RayOptions()
    control = control or RunControl(stop_note=STOP_NOTE)
    require_ray()
    if (options.address or "").strip().startswith("ray://"):  # Ray Data needs a driver inside the cluster
        from hamacho.ray_engine.client import run_through_client

        return run_through_client(request, options, resume, control, log)
    with control.phase("loading", total=1, unit="steps", bar=False) as phase:
        setup = prepare_inference(request, device="cpu")
        checkpoint = Checkpoint.open(setup, resume, log)
        phase.advance()
    collector = setup.collector(request.report)
    facts = _score(setup, checkpoint, collector, options, request.report, control, log)
    collector.finish()
    seconds = control.seconds["inference"]
    rows = checkpoint.merged_rows()
    write_results_csv(setup.output_dir / "results.csv", rows)
    write_results_parquet(setup.output_dir / "results.parquet", rows)
    checkpoint.remove()
    metrics = _all_metrics(rows, collector, setup, log) if len(checkpoint.done) else collector.metrics
    timings = {"images_per_second": facts["scored_images"] / seconds if seconds else 0.0,
               "first_result_seconds": facts.pop("first_result_seconds"),
               "actor_peak_rss_mb": max(facts["actor_peak_rss_mb"], default=0.0)}
    return finish_inference(setup, rows, metrics, collector.report_data, seconds, control, log, request.report,
                            extra={"engine": "ray", "ray": facts, "timings": timings})


def _score(setup: InferenceSetup, checkpoint: Checkpoint, collector: ResultsCollector, options: RayOptions,
           report: bool, control: RunControl, log: Callable[[str], None]) -> dict[str, Any]:
    """Score what the checkpoint lacks on Ray (the ``cluster`` and ``inference`` phases); the run's facts."""
    todo = checkpoint.todo()
    facts: dict[str, Any] = {"address": options.address or os.environ.get("RAY_ADDRESS") or "local",
                             "actors": 0, "resumed_images": len(checkpoint.done), "scored_images": 0}
    peaks: dict[int, float] = {}
    first_result = 0.0
    # frames and maps travel back only when something draws or measures pixels
    arrays = report or setup.pictures().active or any(s.mask_path is not None for s in setup.samples)
    job = ScoringJob(os.path.abspath(str(setup.predictor.path)), setup.predictor.batch_size,
                     setup.image_threshold, setup.pixel_threshold, arrays)
    with ray_session(options.address) if todo else contextlib.nullcontext():
        if todo:
            with control.phase("cluster", total=1, unit="steps", bar=False) as phase:
                facts["actors"] = pool_size(options.actors, options.cpus_per_actor, options.gpus_per_actor,
                                            log)
                check_nodes_read(_probe_paths(setup), options.cpus_per_actor, options.gpus_per_actor)
                phase.advance()
        checkpoint.start()
        control.stop_note = RESUME_NOTE.format(folder=checkpoint.folder)
        with control.phase("inference", total=len(setup.samples)) as phase, setup.pictures() as pictures:
            started = time.perf_counter()
            if len(checkpoint.done):
                phase.advance(len(checkpoint.done))
            stream = stream_scored(job, setup.samples, todo, options, facts["actors"]) if todo else iter(())
            try:
                for scored, pids, rss in stream:
                    first_result = first_result or time.perf_counter() - started
                    _take(collector, scored, checkpoint)
                    pictures.add(scored)
                    for pid, peak in zip(pids.tolist(), rss.tolist()):
                        peaks[pid] = max(peak, peaks.get(pid, 0.0))
                    facts["scored_images"] += len(scored)
                    phase.advance(len(scored))
                pictures.finish()
            except (HamachoError, KeyboardInterrupt):
                raise
            except Exception as exc:  # Ray's errors, as one line (a HamachoError inside an actor as itself)
                raise ray_failure(exc, RESUME_NOTE.format(folder=checkpoint.folder)) from exc
            finally:
                getattr(stream, "close", lambda: None)()
                checkpoint.close()
    facts.update(actor_peak_rss_mb=sorted(peaks.values()), first_result_seconds=first_result)
    return facts


def _probe_paths(setup: InferenceSetup) -> list[str]:
    """What every actor's node must read: the model, and the first and last image."""
    assert setup.predictor.path is not None
    images = {os.path.abspath(setup.samples[0].path), os.path.abspath(setup.samples[-1].path)}
    return [os.path.abspath(setup.predictor.path), *sorted(images)]


def _take(collector: ResultsCollector, scored: Any, checkpoint: Checkpoint) -> None:
    """The rows of one scored block into the checkpoint, through the collector (which keeps no rows: the
    checkpoint holds them, and results.csv is written from it)."""
    collector.add(scored)
    checkpoint.add(scored.batch.indices.tolist(), collector.rows)
    collector.rows.clear()


def _all_metrics(rows: list[ImageResult], collector: ResultsCollector, setup: InferenceSetup,
                 log: Callable[[str], None]) -> dict[str, float | None]:
    """Metrics of a resumed run: image metrics over every row (the same numbers as one uninterrupted run);
    pixel metrics need every map, which the earlier runs did not keep."""
    if not any(r.label and r.decision for r in rows):
        return collector.metrics
    metrics = row_image_metrics(rows)
    metrics.update({name: None for name in PIXEL_METRICS})
    if any(s.mask_path is not None for s in setup.samples):
        log("note: pixel metrics are not computed after --resume (they need every image's map); image metrics "
            "cover every image")
    return metrics
