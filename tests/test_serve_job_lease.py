"""The job queue's guarantees, straight on the database (SQLite and PostgreSQL): atomic claims, leases renewed
by their holder only, expiry that queues a job again up to max_attempts, a give-back that does not count, and
writes of a holder that lost its lease that change nothing. Leases are given in the past (negative seconds)
to expire them: no clock is raced."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("sqlalchemy")
from sqlalchemy import select

from hamacho.serve.db import JobRow, open_database
from hamacho.serve.job_lease import claim, expire_leases, finish, release, renew


@pytest.fixture
def factory(database_url):
    return open_database(database_url)


def queue(factory, count: int, max_attempts: int = 3) -> list[int]:
    with factory() as session, session.begin():
        rows = [JobRow(model_tag=f"m{i}", model="padim", max_attempts=max_attempts) for i in range(count)]
        session.add_all(rows)
    return [row.id for row in rows]


def job(factory, job_id: int) -> JobRow:
    with factory() as session:
        return session.get(JobRow, job_id)


def test_claims_are_atomic_oldest_first_and_never_shared(factory):
    ids = queue(factory, 6)
    taken: list = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with factory() as session:
                held = claim(session, name, 60)
            if held is None:
                return
            with lock:
                taken.append(held)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(h.job_id for h in taken) == ids  # each job once, none twice
    assert all(h.attempt == 1 for h in taken)
    for held in taken:
        row = job(factory, held.job_id)
        assert row.status == "running" and row.owner == held.owner and row.attempts == 1
    with factory() as session:
        assert claim(session, "late", 60) is None


def test_expired_lease_queues_again_then_fails_after_max_attempts(factory):
    (job_id,) = queue(factory, 1, max_attempts=2)
    with factory() as session:
        first = claim(session, "a", -1.0)  # a lease already over: its worker "died"
    with factory() as session:
        assert expire_leases(session) == {"queued": [job_id], "failed": [], "cancelled": []}
    row = job(factory, job_id)
    assert row.status == "queued" and row.owner is None and row.attempts == 1
    assert row.phase == "queued again: the worker running this job stopped answering (lease expired on a)"
    # the old holder wakes up: nothing it writes counts any more
    with factory() as session:
        assert renew(session, first, 60) == "lost"
        assert finish(session, first, "failed", "late") is False
        assert release(session, first, "late") is False
    with factory() as session:
        second = claim(session, "b", -1.0)
    assert second.attempt == 2 and second.job_id == job_id
    with factory() as session:
        assert expire_leases(session) == {"queued": [], "failed": [job_id], "cancelled": []}
    row = job(factory, job_id)
    assert row.status == "failed" and row.finished_at
    assert row.error == ("the worker running this job stopped answering (lease expired on b); "
                         "gave up after 2 attempts")
    assert "\n" not in row.error


def test_live_leases_are_left_alone_and_renewal_reports_cancel(factory):
    live, dead = queue(factory, 2)
    with factory() as session:
        held = claim(session, "alive", 600)
        lost = claim(session, "gone", -1.0)
    assert (held.job_id, lost.job_id) == (live, dead)
    with factory() as session:
        assert expire_leases(session)["queued"] == [dead]
        assert renew(session, held, 600) == "held"
    assert job(factory, live).status == "running"
    with factory() as session, session.begin():
        session.get(JobRow, live).cancel_requested = True
    with factory() as session:
        assert renew(session, held, -1.0) == "cancel"  # and its lease is now over: a cancelled job stays cancelled
        assert expire_leases(session)["cancelled"] == [live]
    row = job(factory, live)
    assert row.status == "cancelled" and row.error.startswith("cancelled; the worker running this job stopped")


def test_give_back_does_not_count_as_an_attempt_and_finish_needs_the_lease(factory):
    (job_id,) = queue(factory, 1, max_attempts=1)
    with factory() as session:
        held = claim(session, "w", 60)
        assert release(session, held, "queued again: its worker stopped") is True
    row = job(factory, job_id)
    assert row.status == "queued" and row.attempts == 0 and row.phase == "queued again: its worker stopped"
    with factory() as session:
        again = claim(session, "w2", 60)
        assert again.attempt == 1
        assert finish(session, again, "failed", "out of memory") is True
        assert finish(session, again, "cancelled", "twice") is False
    row = job(factory, job_id)
    assert (row.status, row.error) == ("failed", "out of memory")
    with factory() as session:
        assert session.scalars(select(JobRow.status)).all() == ["failed"]
