"""A training worker's loop: claims queued jobs from the database and runs each in a child process.

The same loop runs inside ``hamacho serve --workers N`` (a thread of the server, as on one machine) and as
``hamacho worker`` (the foreground of its own process, on any machine that reaches the database and the
shared data folder). At most ``workers`` jobs run at once, each in a fresh process (``python -m
hamacho.serve.worker``: all memory of a run is returned when it ends), which renews the job's lease by
heartbeat (:mod:`.job_lease`). The loop looks at the database every :data:`POLL_SECONDS` (and at once when
its own server queues a job): it expires dead leases (anyone's), reaps ended children and claims new jobs.

* A child that ends without writing its job's final state (killed, out of memory) fails its job with the
  exit code, as on one machine.
* :meth:`JobRunner.close` (server shutdown, SIGTERM or Ctrl-C of a worker) asks the children to stop; each
  puts its job back in the queue, where this or another worker runs it again. Children also get SIGTERM
  from Linux when their runner dies (kill -9 included); a whole machine lost is left to the lease.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hamacho.serve.db import JobRow, utcnow
from hamacho.serve.job_lease import (
    LEASE_SECONDS,
    REQUEUED,
    Claim,
    claim,
    expire_leases,
    finish,
    job_folder,
    new_owner,
    release,
    renew,
)
from hamacho.serve.storage import JOBS, remove_orphans, remove_tree

POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 15.0
JOB_FOLDER_GRACE_SECONDS = 600.0  # a job folder no live attempt holds is removed once this old
log = logging.getLogger("hamacho.serve")
Report = Callable[[str], None]


class JobRunner:
    """Claims and runs training jobs (see the module docstring).

    Args:
        factory: Database sessions.
        url: The database URL (for the children).
        data_dir: The shared data folder.
        workers: Jobs that may run at once (0: none; the runner then only expires leases).
        lease_seconds: Lease of a claimed job; the child renews it every third of this.
        device: ``auto``, ``cpu`` or ``cuda:N``: where this worker's jobs train.
        report: Called with one line per job started or ended (``hamacho worker`` prints them).
    """

    def __init__(self, factory: sessionmaker[Session], url: str, data_dir: Path, workers: int,
                 lease_seconds: float = LEASE_SECONDS, device: str = "auto", report: Report | None = None) -> None:
        self.factory = factory
        self.url = url
        self.data_dir = data_dir
        self.workers = max(0, workers)
        self.lease_seconds = lease_seconds
        self.device = device
        self.report = report or (lambda line: log.info("%s", line))
        self.owner = new_owner()
        self.processes: dict[Claim, subprocess.Popen] = {}
        self._renewed: dict[Claim, float] = {}  # when this loop last renewed each child's lease (monotonic)
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def recover(self) -> dict[str, list[int]]:
        """Expire dead leases and remove job folders no live attempt holds (once old); return the expired ids."""
        with self.factory() as session:
            expired = expire_leases(session)
            with session.begin():
                held = {f"{job_id}.{attempt}" for job_id, attempt in session.execute(
                    select(JobRow.id, JobRow.attempts).where(JobRow.status == "running"))}
        remove_orphans(self.data_dir / JOBS, held, JOB_FOLDER_GRACE_SECONDS)
        return expired

    def start(self) -> None:
        """Start the loop in a thread (inside ``hamacho serve``)."""
        self._thread = threading.Thread(target=self.run, name="hamacho-jobs", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """The loop, until :meth:`close` (``hamacho worker`` runs it in the foreground)."""
        while not self._closing.is_set():
            try:
                with self.factory() as session:
                    expire_leases(session)
                self._reap()
                self._renew()
                self._launch()
            except Exception:  # a database hiccup must not end the queue; try again
                log.exception("job queue: check failed; trying again")
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def request_stop(self) -> None:
        """End :meth:`run` at its next look (safe from a signal handler); :meth:`close` stops the children."""
        self._closing.set()
        self._wake.set()

    def wake(self) -> None:
        """Look at the queue now (a job was queued or cancelled)."""
        self._wake.set()

    def cancel(self, job_id: int) -> None:
        """Cancel a queued job at once; ask a running one, wherever it runs, to stop at its next step."""
        with self.factory() as session, session.begin():
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "queued").values(
                status="cancelled", cancel_requested=True, finished_at=utcnow(), error="cancelled before it started"))
            session.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == "running")
                            .values(cancel_requested=True))
        self.wake()

    @property
    def running(self) -> int:
        """Children alive now."""
        with self._lock:
            return sum(1 for process in self.processes.values() if process.poll() is None)

    def close(self) -> None:
        """Stop: each child puts its job back in the queue (SIGTERM, then a kill after a grace period)."""
        self._closing.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            processes = dict(self.processes)
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        with self._lock:
            self.processes.clear()
            self._renewed.clear()
        for held in processes:  # a child killed before it could: give its job back here
            with self.factory() as session:
                if release(session, held, REQUEUED):
                    self.report(f"job {held.job_id}: put back in the queue")
            remove_tree(job_folder(self.data_dir, held))

    def _reap(self) -> None:
        with self._lock:
            ended = {held: p for held, p in self.processes.items() if p.poll() is not None}
            for held in ended:
                del self.processes[held]
                self._renewed.pop(held, None)
        for held, process in ended.items():
            with self.factory() as session:
                finish(session, held, "failed",
                       f"the training process ended unexpectedly (exit code {process.returncode})")
                with session.begin():
                    row = session.get(JobRow, held.job_id, populate_existing=True)
                    state = (row.status, row.error, row.phase) if row is not None else ("deleted", None, "")
            remove_tree(job_folder(self.data_dir, held))
            status, error, phase = state
            why = f": {error}" if error else (f" ({phase})" if status == "queued" and phase else "")
            self.report(f"job {held.job_id} attempt {held.attempt}: {status}{why}")

    def _renew(self) -> None:
        """Renew the leases of live children every third of the lease. Their own heartbeat does too; this one
        does not stall when a child's Python is busy (matplotlib drawing the report held a child's GIL long
        enough, on a busy 2-core machine, for a 6 s lease to run out)."""
        now = time.monotonic()
        with self._lock:
            due = [held for held, process in self.processes.items()
                   if process.poll() is None and now - self._renewed.get(held, 0.0) >= self.lease_seconds / 3]
        for held in due:
            with self.factory() as session:
                renew(session, held, self.lease_seconds)
            self._renewed[held] = now

    def _launch(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                if len(self.processes) >= self.workers:
                    return
            with self.factory() as session:
                held = claim(session, self.owner, self.lease_seconds)
                if held is None:
                    return
                with session.begin():
                    row = session.get(JobRow, held.job_id)
                    what = f"{row.model} -> model {row.model_tag!r}" if row is not None else ""
            self.report(f"job {held.job_id} attempt {held.attempt}: running {what}")
            process = _spawn(self.url, self.data_dir, held, self.lease_seconds, self.device)
            with self._lock:
                self.processes[held] = process
                self._renewed[held] = time.monotonic()


def device_environment(device: str) -> dict[str, str]:
    """Environment a job's process gets for ``device`` (``cpu``: no GPU visible; ``cuda:N``: GPU N only)."""
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": "", "HAMACHO_WORKER_ACCELERATOR": "cpu"}
    if device.startswith("cuda:"):
        return {"CUDA_VISIBLE_DEVICES": device.split(":", 1)[1], "HAMACHO_WORKER_ACCELERATOR": "gpu"}
    return {}


def _spawn(url: str, data_dir: Path, held: Claim, lease_seconds: float, device: str) -> subprocess.Popen:
    """Start ``python -m hamacho.serve.worker`` for one claimed job, importing this same copy of Hamacho."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, **device_environment(device)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("TQDM_DISABLE", "1")
    arguments = [url, str(data_dir), str(held.job_id), str(held.attempt), held.owner, str(lease_seconds)]
    return subprocess.Popen([sys.executable, "-m", "hamacho.serve.worker", *arguments], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
