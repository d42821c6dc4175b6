"""Jobs owned through leases in the database: claim, heartbeat, give back, expire, finish.

The guarantees come from the database, so they hold across replicas and machines:

* :func:`claim` takes the oldest queued job in one ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
  LOCKED) RETURNING``: on PostgreSQL two workers never take the same row, nor wait for each other; SQLite
  runs one writer at a time, and the statement is atomic there too. The claim starts attempt
  ``attempts + 1`` and a lease of ``lease_seconds`` on the database's clock (machines' clocks may differ).
* The holder is ``(owner, attempt)``: every later write (:func:`renew`, :func:`release`, :func:`finish`, the
  model's publication) applies only while the row is still running under that holder, so a worker that
  lost its lease (paused, cut off) can neither overwrite a newer attempt nor publish a second model.
* :func:`expire_leases` queues a job again when its lease ran out (its worker was killed or its machine
  lost), or fails it with one line once ``max_attempts`` runs were started, or cancels it when a cancel was
  asked. Any replica or worker may call it; it touches nothing whose lease is alive.

No broker and no files: the ``jobs`` table is the queue. (procrastinate gives the same on PostgreSQL only,
and ``hamacho serve`` alone runs on SQLite: docs/architecture.md.)
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import and_, select, text, update
from sqlalchemy.orm import Session

from hamacho.serve.db import JobRow, utcnow
from hamacho.serve.storage import JOBS

LEASE_SECONDS = 60.0  # a worker's heartbeat renews it every third of this
REQUEUED = "queued again: its worker stopped"  # the phase of a job its worker gave back
LEASE_LOST = "the worker running this job stopped answering (lease expired on {owner})"


@dataclass(frozen=True)
class Claim:
    """A job a worker holds: renewals and its result must name the same ``owner`` and ``attempt``."""

    job_id: int
    attempt: int
    owner: str


def job_folder(data_dir: Path, held: Claim) -> Path:
    """The working folder of one attempt of a job (``jobs/<id>.<attempt>``: attempts never share one)."""
    return data_dir / JOBS / f"{held.job_id}.{held.attempt}"


def new_owner() -> str:
    """A worker's name in the ``owner`` column: host, process id and a random part (unique per process)."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def database_now(session: Session) -> float:
    """The database server's clock, seconds since the epoch (the one clock all leases are read on)."""
    if session.get_bind().dialect.name == "postgresql":
        return float(session.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))
    return float(session.scalar(text("SELECT (julianday('now') - 2440587.5) * 86400.0")))


def _held(claim: Claim) -> object:
    return and_(JobRow.id == claim.job_id, JobRow.status == "running", JobRow.owner == claim.owner,
                JobRow.attempts == claim.attempt)


def claim(session: Session, owner: str, lease_seconds: float = LEASE_SECONDS) -> Claim | None:
    """Take the oldest queued job for ``owner`` (in its own transaction); None when none is queued."""
    with session.begin():
        until = database_now(session) + lease_seconds
        oldest = (select(JobRow.id).where(JobRow.status == "queued").order_by(JobRow.id).limit(1)
                  .with_for_update(skip_locked=True).scalar_subquery())
        taken = session.execute(
            update(JobRow).where(JobRow.id == oldest, JobRow.status == "queued")
            .values(status="running", attempts=JobRow.attempts + 1, owner=owner, lease_until=until,
                    started_at=utcnow(), phase="starting", percent=0.0, error=None)
            .returning(JobRow.id, JobRow.attempts)).first()
    return Claim(taken[0], taken[1], owner) if taken else None


def renew(session: Session, held: Claim, lease_seconds: float = LEASE_SECONDS) -> str:
    """Extend the lease; return ``"held"``, ``"cancel"`` (a cancel was asked) or ``"lost"`` (no longer ours)."""
    with session.begin():
        until = database_now(session) + lease_seconds
        row = session.execute(update(JobRow).where(_held(held)).values(lease_until=until)
                              .returning(JobRow.cancel_requested)).first()
    if row is None:
        return "lost"
    return "cancel" if row[0] else "held"


def release(session: Session, held: Claim, note: str) -> bool:
    """Put a held job back in the queue (its worker is stopping); the attempt does not count. True if it was held."""
    with session.begin():
        done = session.execute(update(JobRow).where(_held(held)).values(
            status="queued", owner=None, lease_until=None, attempts=JobRow.attempts - 1, phase=note,
            percent=0.0))
    return done.rowcount == 1


def finish(session: Session, held: Claim, status: str, error: str | None) -> bool:
    """End a held job as ``failed`` or ``cancelled`` with its one-line reason; True if it was still held."""
    with session.begin():
        done = session.execute(update(JobRow).where(_held(held)).values(
            status=status, error=error, finished_at=utcnow(), lease_until=None))
    return done.rowcount == 1


def expire_leases(session: Session) -> dict[str, list[int]]:
    """Queue again, fail or cancel the running jobs whose lease has run out; return their ids by outcome.

    A job that has started ``max_attempts`` runs fails with :data:`LEASE_LOST` and its attempt count; one
    whose cancel was asked ends cancelled. Rows without a lease (running under no owner) are left alone.
    """
    outcome: dict[str, list[int]] = {"queued": [], "failed": [], "cancelled": []}
    with session.begin():
        now = database_now(session)
        expired = list(session.execute(
            select(JobRow.id, JobRow.attempts, JobRow.max_attempts, JobRow.owner, JobRow.cancel_requested)
            .where(JobRow.status == "running", JobRow.lease_until.is_not(None), JobRow.lease_until < now)
            .with_for_update(skip_locked=True)))
        for job_id, attempts, max_attempts, owner, cancel in expired:
            lost = LEASE_LOST.format(owner=owner)
            still = and_(JobRow.id == job_id, JobRow.status == "running", JobRow.attempts == attempts)
            if cancel:
                values = {"status": "cancelled", "error": f"cancelled; {lost}", "finished_at": utcnow()}
            elif attempts >= max_attempts:
                values = {"status": "failed", "finished_at": utcnow(),
                          "error": f"{lost}; gave up after {attempts} attempts"}
            else:
                values = {"status": "queued", "phase": f"queued again: {lost}", "percent": 0.0}
            done = session.execute(update(JobRow).where(still).values(owner=None, lease_until=None, **values))
            if done.rowcount == 1:
                outcome[values["status"]].append(job_id)
    return outcome
