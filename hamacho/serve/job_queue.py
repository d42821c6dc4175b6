"""The training queue: starts queued jobs in worker processes, watches them, cancels them.

At most ``workers`` jobs run at once, each in a fresh process (``python -m hamacho.serve.worker``: the server's
threads and loaded models are not copied, and all memory of a run is returned when it ends). A thread checks the
processes twice a second (and at once when a job is queued): a process that ended without writing its
job's final state (killed, out of memory) fails the job with its exit code.

At start-up, :meth:`JobRunner.recover` marks jobs that were running when the server stopped as failed
and removes their working folders; queued jobs stay queued and run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hamacho.serve.db import JobRow, utcnow
from hamacho.serve.storage import JOBS, remove_tree
from hamacho.serve.worker import SERVER_GONE

POLL_SECONDS = 0.5
log = logging.getLogger("hamacho.serve")
STOP_GRACE_SECONDS = 10.0


class JobRunner:
    """Runs training jobs in worker processes (see the module docstring).

    Args:
        factory: Database sessions.
        url: The database URL (for the workers).
        data_dir: The service's data folder.
        workers: Jobs that may run at once.
    """

    def __init__(self, factory: sessionmaker[Session], url: str, data_dir: Path, workers: int) -> None:
        self.factory = factory
        self.url = url
        self.data_dir = data_dir
        self.workers = max(1, workers)
        self.processes: dict[int, Any] = {}
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def recover(self) -> int:
        """Fail the jobs a stopped server left running and remove their folders; return how many."""
        with self.factory() as session, session.begin():
            stale = list(session.scalars(select(JobRow.id).where(JobRow.status == "running")))
            session.execute(update(JobRow).where(JobRow.status == "running").values(
                status="failed", finished_at=utcnow(),
                error=SERVER_GONE))
            active = set(session.scalars(select(JobRow.id).where(JobRow.status == "queued")))
        jobs = self.data_dir / JOBS
        if jobs.is_dir():
            for entry in jobs.iterdir():
                if not (entry.name.isdigit() and int(entry.name) in active):
                    remove_tree(entry)
        return len(stale)

    def start(self) -> None:
        """Start watching the queue."""
        self._thread = threading.Thread(target=self._loop, name="hamacho-jobs", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the queue now (a job was queued or cancelled)."""
        self._wake.set()

    def cancel(self, job_id: int) -> None:
        """Cancel a queued job at once; ask a running one to stop at its next step."""
        with self.factory() as session, session.begin():
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued").values(
                status="cancelled", cancel_requested=True, finished_at=utcnow(), error="cancelled before it started"))
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                            .values(cancel_requested=True))
        self.wake()

    @property
    def running(self) -> int:
        """Worker processes alive now."""
        with self._lock:
            return sum(1 for process in self.processes.values() if process.poll() is None)

    def close(self) -> None:
        """Stop the workers (asking first, then terminating) and fail their jobs; for server shutdown."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            processes = dict(self.processes)
        with self.factory() as session, session.begin():
            for job_id in processes:
                session.execute(update(JobRow).where(JobRow.id == job_id).values(cancel_requested=True))
        for process in processes.values():
            _wait(process, STOP_GRACE_SECONDS)
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=5)
        self._reap(message=SERVER_GONE)

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._reap()
                self._launch()
            except Exception:  # a database hiccup must not end the queue; try again
                log.exception("job queue: check failed; trying again")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def _reap(self, message: str | None = None) -> None:
        with self._lock:
            ended = {job_id: p for job_id, p in self.processes.items() if p.poll() is not None}
            for job_id in ended:
                del self.processes[job_id]
        for job_id, process in ended.items():
            error = message or f"the training process ended unexpectedly (exit code {process.returncode})"
            with self.factory() as session, session.begin():
                session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                                .values(status="failed", error=error, finished_at=utcnow()))
            remove_tree(self.data_dir / JOBS / str(job_id))

    def _launch(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                if len(self.processes) >= self.workers:
                    return
            with self.factory() as session, session.begin():
                job_id = session.scalar(select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.id))
                if job_id is None:
                    return
                claimed = session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued")
                                          .values(status="running", started_at=utcnow(), phase="starting"))
                if claimed.rowcount != 1:
                    continue
            process = _spawn(self.url, self.data_dir, job_id)
            with self._lock:
                self.processes[job_id] = process


def _spawn(url: str, data_dir: Path, job_id: int) -> subprocess.Popen:
    """Start ``python -m hamacho.serve.worker`` for one job, importing this same copy of Hamacho."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TQDM_DISABLE", "1")
    return subprocess.Popen([sys.executable, "-m", "hamacho.serve.worker", url, str(data_dir), str(job_id)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _wait(process: subprocess.Popen, seconds: float) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass
