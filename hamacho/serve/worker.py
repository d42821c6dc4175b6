"""One attempt of a training job, run in a child process of a worker loop (:mod:`.job_queue`).

The job's images are hard-linked (copied where links are not possible) into the folder layout
(``good/``, ``bad/``, ``mask/<stem>_mask.*``) and trained with the same code as ``hamacho train``. Progress
(phase and percent) goes to the job's row at most twice a second, and a heartbeat renews the job's lease
(:mod:`.job_lease`). A cancel request in the row stops the run at its next step
(:class:`~hamacho.progress.RunControl`) and ends the job cancelled; SIGTERM (the worker stopping, or Linux
when the worker died) or a worker gone stop it too and put the job back in the queue; a lost lease (another
attempt took over) stops it and leaves the row alone. The model is listed only after all its files are in
place: the folder is moved into ``models/`` and the model row and the job's success are committed in one
transaction, and only while this attempt still holds the job, so a job that ran twice lists one model.
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
from hamacho.data.splits import read_split_names
from hamacho.errors import ConfigError, HamachoError, Interrupted, first_line
from hamacho.extras import training_unavailable
from hamacho.models.registry import display_name
from hamacho.serve.db import ImageRow, JobRow, ModelRow, open_database, saved_threshold, utcnow
from hamacho.serve.job_lease import REQUEUED, Claim, finish, job_folder, release, renew
from hamacho.serve.schemas import SERVICE_KEYS
from hamacho.serve.storage import MODELS, new_name, remove_tree
from hamacho.settings import Settings

if TYPE_CHECKING:  # hamacho.train imports torch: only when a job runs
    from hamacho.train import TrainResult

# Share of the whole run each phase stands for, for one percent figure (measured on bottle, PaDiM).
PHASE_WEIGHTS = {"loading": 2, "feature extraction": 45, "fit": 13, "calibration": 10, "test": 15,
                 "report": 12, "saving": 3}
# What training imports beyond an inference-only install (``hamacho[serve,onnx]``).
UPDATE_SECONDS = 0.5
HOLDOUT = 0.3  # the service's dataset.holdout: a share of the labelled images kept out of the thresholds
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
    defaults = {"dataset.holdout": HOLDOUT}  # honest metrics on the model card unless the job says otherwise
    fixed: dict[str, Any] = {"dataset.format": "folder", "dataset.good_dir": str(base / "dataset" / "good"),
                             "dataset.mask_suffix": "_mask", "dataset.name": "dataset",
                             "dataset.num_workers": 0, "project.result_path": str(base / "results")}
    for group in ("bad", "mask"):
        if counts is None or counts.get(group):
            fixed[f"dataset.{group}_dir"] = str(base / "dataset" / group)
    return build_config(model, options={**defaults, **parameters, **fixed})


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

    def __init__(self, factory: sessionmaker[Session], held: Claim) -> None:
        self.factory = factory
        self.held = held
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
            session.execute(update(JobRow).where(JobRow.id == self.held.job_id, JobRow.owner == self.held.owner,
                                                 JobRow.attempts == self.held.attempt)
                            .values(phase=phase, percent=round(percent, 1)))


class Heartbeat(threading.Thread):
    """Renews the job's lease every third of it and stops the run when a cancel was asked, the lease was lost,
    SIGTERM came or the worker that started this process is gone (checked every :data:`UPDATE_SECONDS`).

    A run stops at its next step; one that has not ended :data:`EXIT_SECONDS` after its worker died exits at
    once (its job is given back first, or left to its lease).
    """

    def __init__(self, factory: sessionmaker[Session], held: Claim, lease_seconds: float, control: Any) -> None:
        super().__init__(name="hamacho-heartbeat", daemon=True)
        self.factory = factory
        self.held = held
        self.lease_seconds = lease_seconds
        self.control = control
        self.parent = os.getppid()
        self.finished = threading.Event()
        self.reason = ""  # why the run was stopped: "cancel", "lost", "stopping" (give the job back)

    def stop(self, reason: str) -> None:
        """Stop the run at its next step, remembering why (the first reason wins)."""
        self.reason = self.reason or reason
        self.control.request_stop()

    def run(self) -> None:
        orphaned_at = None
        renewed = time.monotonic()
        while not self.finished.wait(UPDATE_SECONDS):
            if os.getppid() != self.parent:
                self.stop("stopping")
                orphaned_at = orphaned_at or time.monotonic()
                if time.monotonic() - orphaned_at > EXIT_SECONDS:
                    self.give_back()
                    os._exit(1)
            due = time.monotonic() - renewed >= self.lease_seconds / 3
            try:
                with self.factory() as session:
                    if due:
                        state = renew(session, self.held, self.lease_seconds)
                        renewed = time.monotonic()
                    else:
                        cancel = session.scalar(select(JobRow.cancel_requested).where(JobRow.id == self.held.job_id))
                        state = "cancel" if cancel else "held"
            except Exception:  # the database did not answer: the lease is renewed next time, or expires
                log.debug("heartbeat: the database did not answer", exc_info=True)
                continue
            if state != "held":
                self.stop(state)

    def give_back(self) -> None:
        """Put the job back in the queue (if this attempt still holds it)."""
        try:
            with self.factory() as session:
                release(session, self.held, REQUEUED)
        except Exception:  # the lease will expire instead
            log.debug("heartbeat: could not give the job back", exc_info=True)


def run_job(url: str, data_dir: str, held: Claim, lease_seconds: float) -> None:
    """Run one attempt of a claimed training job to its end (the entry point of the child process)."""
    _die_with_parent()
    data = Path(data_dir)
    factory = open_database(url, migrate=False)
    missing = training_unavailable()  # queued before PyTorch was removed: fail with the same line as the API's
    if missing:
        with factory() as session:
            finish(session, held, "failed", missing)
        return
    from hamacho.progress import RunControl
    from hamacho.results.comparison import compare_on_held_out
    from hamacho.train import run_training

    folder = job_folder(data, held)
    control = RunControl(observer=ProgressWriter(factory, held), stop_note="no model was saved")
    heartbeat = Heartbeat(factory, held, lease_seconds, control)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: heartbeat.stop("stopping"))
    signal.signal(signal.SIGINT, lambda _signum, _frame: heartbeat.stop("stopping"))
    heartbeat.start()
    status, error = "failed", None
    try:
        with factory() as session:
            job = session.get(JobRow, held.job_id)
            if job is None:
                return
            remove_tree(folder)
            counts = link_dataset(session, data, json.loads(job.image_ids), folder / "dataset")
            session.execute(update(JobRow).where(JobRow.id == held.job_id).values(counts=json.dumps(counts)))
            session.commit()
            settings = job_settings(job.model, json.loads(job.parameters), folder, counts)
            tag = job.model_tag
            earlier = _earlier_model(session, data, job.compare_with)
        accelerator = os.environ.get("HAMACHO_WORKER_ACCELERATOR")  # the worker's --device wins
        if accelerator:
            settings.trainer.accelerator = accelerator
        result = run_training(settings, control, log=lambda _line: None)
        if earlier is not None:
            with control.phase("comparison", unit="images", bar=False):
                held_out = set((read_split_names(result.output_dir) or {}).get("held_out", []))
                path, cut, label = earlier
                result.summary.comparison = compare_on_held_out(path, cut, result.rows, held_out, label)
        status = "succeeded" if _publish(factory, data, held, tag, settings, result) else "lost"
    except Interrupted as exc:
        status, error = ("cancelled", first_line(exc)) if heartbeat.reason in ("cancel", "") else (
            heartbeat.reason, None)
    except HamachoError as exc:
        error = first_line(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: the job fails with its one line, the worker lives on
        error = f"internal error: {type(exc).__name__}: {first_line(exc)}"
    finally:
        heartbeat.finished.set()
        remove_tree(folder)
    if status == "stopping":
        heartbeat.give_back()
    elif status in ("failed", "cancelled"):
        with factory() as session:
            finish(session, held, status, error)


def _earlier_model(session: Session, data: Path, model_id: int | None) -> tuple[Path, float, str] | None:
    """The model a retrain is compared with: ``(its file, its current image cut, its tag)``; None when there is
    none (or it was deleted since the job was queued)."""
    row = session.get(ModelRow, model_id) if model_id is not None else None
    if row is None:
        return None
    version = saved_threshold(session, row.id, row.threshold_version) if row.threshold_version else None
    return data / row.folder / row.entry, version.image if version is not None else 0.5, row.tag


def _publish(factory: sessionmaker[Session], data: Path, held: Claim, tag: str, settings: Settings,
             result: TrainResult) -> int | None:
    """Move the model's folder into models/ and list it, in one transaction with the job's success, only while
    this attempt holds the job (None otherwise: the files are removed and nothing is listed)."""
    name = new_name()
    destination = data / MODELS / name
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(result.output_dir), destination)
    summary = dataclasses.replace(result.summary, model_file=None)  # its folder moved: the row says where
    row = ModelRow(tag=tag, model=settings.model.name, display_name=display_name(settings.model.name),
                   backbone=settings.model.backbone, image_size=json.dumps(settings.dataset.image_size), format="model.pt",
                   source="trained", folder=f"{MODELS}/{name}", entry="model.pt", job_id=held.job_id,
                   summary=summary.to_json())
    with factory() as session:
        try:
            done = session.execute(update(JobRow).where(
                JobRow.id == held.job_id, JobRow.status == "running", JobRow.owner == held.owner,
                JobRow.attempts == held.attempt).values(status="succeeded", percent=100.0, phase="done",
                                                        finished_at=utcnow(), lease_until=None))
            if done.rowcount == 1:
                session.add(row)
                session.flush()
                session.execute(update(JobRow).where(JobRow.id == held.job_id).values(model_id=row.id))
                session.commit()
                return row.id
            session.rollback()
        except Exception:
            session.rollback()
            remove_tree(destination)
            raise
    remove_tree(destination)  # another attempt holds the job now (this one's lease ran out)
    return None


def _die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its worker dies (kill -9 included); elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


if __name__ == "__main__":  # python -m hamacho.serve.worker URL DATA_DIR JOB ATTEMPT OWNER LEASE (job_queue)
    run_job(sys.argv[1], sys.argv[2], Claim(int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]), float(sys.argv[6]))
