"""One training job, run in a child process so that the API stays responsive.

The job's images are hard-linked (copied where links are not possible) into the folder layout
(``good/``, ``bad/``, ``mask/<stem>_mask.*``) and trained with the same code as ``hamacho train``. Progress
(phase and percent) goes to the job's row at most twice a second; a cancel request there, or the
server's death, stops the run at its next step (:class:`~hamacho.progress.RunControl`); Linux also
sends the worker SIGTERM when its server dies. The model is
listed only after all its files are in place: the folder is moved into ``models/`` and the model row
and the job's final state are committed in one transaction, and only while the job is still running
(a restarted server that already marked it failed wins, and the files are removed).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hamacho.config import build_config
from hamacho.errors import ConfigError, HamachoError, Interrupted, first_line
from hamacho.extras import training_unavailable
from hamacho.models.registry import display_name
from hamacho.serve.db import ImageRow, JobRow, ModelRow, open_database, utcnow
from hamacho.serve.schemas import SERVICE_KEYS
from hamacho.serve.storage import JOBS, MODELS, new_name, remove_tree
from hamacho.settings import Settings

if TYPE_CHECKING:  # hamacho.train imports torch: only when a job runs
    from hamacho.train import TrainResult

# Share of the whole run each phase stands for, for one percent figure (measured on bottle, PaDiM).
PHASE_WEIGHTS = {"loading": 2, "feature extraction": 45, "fit": 13, "calibration": 10, "test": 15,
                 "report": 12, "saving": 3}
# What training imports beyond an inference-only install (``hamacho[serve,onnx]``).
UPDATE_SECONDS = 0.5
SERVER_GONE = "the server stopped while this job was running; start it again"
log = logging.getLogger("hamacho.serve")
EXIT_SECONDS = 10.0


def job_settings(model: str, parameters: dict[str, Any], folder: Path | None = None,
                 counts: dict[str, int] | None = None) -> Settings:
    """The training settings of a job: its parameters over the model's defaults, and the service's own keys.

    Args:
        model: Registered model name.
        parameters: Dotted config keys and values, as ``hamacho train`` takes them.
        folder: The job's working folder (None to only validate the parameters).
        counts: Images per group laid out by :func:`link_dataset`; a group without any has no folder, and
            its folder is not named (a job of good images only trains like ``hamacho train`` on a root
            holding ``good/`` alone). None names all three (to validate the parameters).

    Raises:
        ConfigError: Unknown keys, bad values, or a key the service sets itself.
    """
    for key in parameters:
        if key in SERVICE_KEYS:
            raise ConfigError(f"parameter '{key}' is set by the service and cannot be given")
        if not isinstance(key, str) or not key or any(part == "" for part in key.split(".")):
            raise ConfigError(f"parameter name {key!r} is not a dotted config key such as model.backbone")
    base = folder or Path("job")
    fixed: dict[str, Any] = {"dataset.format": "folder", "dataset.good_dir": str(base / "dataset" / "good"),
                             "dataset.mask_suffix": "_mask", "dataset.name": "dataset",
                             "dataset.num_workers": 0, "project.result_path": str(base / "results")}
    for group in ("bad", "mask"):
        if counts is None or counts.get(group):
            fixed[f"dataset.{group}_dir"] = str(base / "dataset" / group)
    return build_config(model, options={**parameters, **fixed})


def link_dataset(session: Session, data_dir: Path, image_ids: list[int], folder: Path) -> dict[str, int]:
    """Lay the job's images out as good/, bad/ and mask/ under ``folder``; return the counts.

    Files are hard links (copies where the file system has none) named ``<id>-<name stem>``.
    """
    rows = list(session.scalars(select(ImageRow).where(ImageRow.id.in_(image_ids))))
    by_id = {row.id: row for row in rows}
    counts = {"good": 0, "bad": 0, "mask": 0}
    for sub in ("good", "bad", "mask"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for row in rows:
        source = data_dir / row.stored
        ext = Path(row.stored).suffix
        if row.group == "mask":
            target = by_id.get(row.image_id) if row.image_id is not None else None
            if target is None or target.group != "bad":
                continue  # a mask of an image outside this job, or of a good image: not used
            destination = folder / "mask" / f"{_file_stem(target)}_mask{ext}"
        else:
            destination = folder / row.group / f"{_file_stem(row)}{ext}"
        try:
            os.link(source, destination)
        except OSError:
            shutil.copyfile(source, destination)
        counts[row.group] += 1
    (folder / "bad").rmdir() if counts["bad"] == 0 else None
    (folder / "mask").rmdir() if counts["mask"] == 0 else None
    return counts


def _file_stem(row: ImageRow) -> str:
    """``<id>-<name stem>``: unique, and the report and results.csv show the name the user gave."""
    stem = Path(row.name).stem.replace("/", "_").replace("\\", "_")[:80].strip(" .")
    return f"{row.id}-{stem}" if stem else str(row.id)


class ProgressWriter:
    """Observer of a run: writes phase and percent to the job row (at most every :data:`UPDATE_SECONDS`)."""

    def __init__(self, factory: sessionmaker[Session], job_id: int) -> None:
        self.factory = factory
        self.job_id = job_id
        self._last = 0.0
        self._phase = ""
        self._done_weight = 0.0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        changed = phase != self._phase
        if changed:
            self._done_weight += PHASE_WEIGHTS.get(self._phase, 0)
            self._phase = phase
        if not changed and now - self._last < UPDATE_SECONDS:
            return
        self._last = now
        share = min(done / total, 1.0) if total else 0.0
        percent = min(99.0, (self._done_weight + share * PHASE_WEIGHTS.get(phase, 0)) * 100.0
                      / sum(PHASE_WEIGHTS.values()))
        with self.factory() as session, session.begin():
            session.execute(update(JobRow).where(JobRow.id == self.job_id)
                            .values(phase=phase, percent=round(percent, 1)))


class Watchdog(threading.Thread):
    """Stops the run when the job is cancelled or the server is gone (checked every :data:`UPDATE_SECONDS`).

    A run stops at its next step; one that has not ended :data:`EXIT_SECONDS` after its server died
    exits at once (its job is failed by the restarted server, and nothing of it is listed).
    """

    def __init__(self, factory: sessionmaker[Session], job_id: int, control: Any) -> None:
        super().__init__(name="hamacho-watchdog", daemon=True)
        self.factory = factory
        self.job_id = job_id
        self.control = control
        self.parent = os.getppid()
        self.finished = threading.Event()
        self.orphaned = False

    def run(self) -> None:
        orphaned_at = None
        while not self.finished.wait(UPDATE_SECONDS):
            if os.getppid() != self.parent:
                self.orphaned = True
                orphaned_at = orphaned_at or time.monotonic()
                self.control.request_stop()
                if time.monotonic() - orphaned_at > EXIT_SECONDS:
                    os._exit(1)
                continue
            try:
                with self.factory() as session:
                    cancel = session.scalar(select(JobRow.cancel_requested).where(JobRow.id == self.job_id))
            except Exception:  # a locked database: look again next time
                log.debug("watchdog: the database did not answer", exc_info=True)
                continue
            if cancel:
                self.control.request_stop()


def run_job(url: str, data_dir: str, job_id: int) -> None:
    """Run training job ``job_id`` to its end (the entry point of the worker process)."""
    _die_with_parent()
    data = Path(data_dir)
    factory = open_database(url)
    missing = training_unavailable()  # queued before PyTorch was removed: fail with the same line as the API's
    if missing:
        with factory() as session, session.begin():
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                            .values(status="failed", error=missing, finished_at=utcnow()))
        return
    from hamacho.progress import RunControl
    from hamacho.train import run_training

    folder = data / JOBS / str(job_id)
    control = RunControl(observer=ProgressWriter(factory, job_id), stop_note="no model was saved")
    watchdog = Watchdog(factory, job_id, control)
    watchdog.start()
    status, error, model_id = "failed", None, None
    try:
        with factory() as session:
            job = session.get(JobRow, job_id)
            if job is None:
                return
            remove_tree(folder)
            counts = link_dataset(session, data, json.loads(job.image_ids), folder / "dataset")
            session.execute(update(JobRow).where(JobRow.id == job_id).values(counts=json.dumps(counts)))
            session.commit()
            settings = job_settings(job.model, json.loads(job.parameters), folder, counts)
            tag = job.model_tag
        result = run_training(settings, control, log=lambda _line: None)
        model_id = _publish(factory, data, job_id, tag, settings, result)
        status = "succeeded" if model_id is not None else "failed"
    except Interrupted as exc:
        status, error = ("failed", SERVER_GONE) if watchdog.orphaned else ("cancelled", first_line(exc))
    except HamachoError as exc:
        error = first_line(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: the job fails with its one line, the server lives on
        error = f"internal error: {type(exc).__name__}: {first_line(exc)}"
    finally:
        watchdog.finished.set()
        remove_tree(folder)
    if status != "succeeded":
        with factory() as session, session.begin():
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                            .values(status=status, error=error, finished_at=utcnow()))


def _publish(factory: sessionmaker[Session], data: Path, job_id: int, tag: str, settings: Settings,
             result: TrainResult) -> int | None:
    """Move the model's folder into models/ and list it, in one transaction with the job's success."""
    name = new_name()
    destination = data / MODELS / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(result.output_dir), destination)
    summary = dataclasses.replace(result.summary, model_file=None)  # its folder moved: the row says where
    row = ModelRow(tag=tag, model=settings.model.name, display_name=display_name(settings.model.name),
                   backbone=settings.model.backbone, image_size=json.dumps(settings.dataset.image_size), format="model.pt",
                   source="trained", folder=f"{MODELS}/{name}", entry="model.pt", job_id=job_id,
                   summary=summary.to_json())
    with factory() as session:
        session.add(row)
        session.flush()
        done = session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                               .values(status="succeeded", model_id=row.id, percent=100.0, phase="done",
                                       finished_at=utcnow()))
        if done.rowcount != 1:  # the server gave the job up meanwhile: list nothing
            session.rollback()
            remove_tree(destination)
            return None
        session.commit()
        return row.id


def _die_with_parent() -> None:
    """Ask Linux to end this process when the server dies (kill -9 included); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


if __name__ == "__main__":  # python -m hamacho.serve.worker URL DATA_DIR JOB_ID (started by the job queue)
    run_job(sys.argv[1], sys.argv[2], int(sys.argv[3]))
