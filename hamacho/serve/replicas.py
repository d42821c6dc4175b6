"""This replica in the database: its heartbeat, and the models in memory kept coherent across replicas.

Every ``hamacho serve`` process has a row in ``replicas``, renewed every ``sync_seconds`` by
:meth:`Replica.sync` (a thread of its own); a row whose ``seen_until`` passed belongs to a replica that died,
and the next replica to sync removes it, with what it had published. Each sync also:

* drops the models this replica holds whose row is gone or whose ``memory_epoch`` moved on ("Unload" on any
  replica counts it up), so an unload or a delete frees every replica's memory within ``sync_seconds``;
* loads the models marked ``keep_loaded`` ("Load" on any replica) while its cache has room (the cache stays
  bounded by ``max_loaded``: a kept model never pushes another out);
* publishes what it holds in ``loaded_models``, under a share lock on the models' rows, and only copies of
  the current epoch: an unload that commits first is never undone by a late publish.

The list of loaded models, the "loaded" flag of a model and ``/replicas`` read these rows, so every replica
answers the same. A prediction reads the model's row again under a share lock (:func:`model_in_use`): a
delete on any replica waits for it or is refused while it runs (:func:`lock_for_delete`), and the copy it
uses is of the row's current file and epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hamacho.errors import first_line
from hamacho.serve.db import LoadedModelRow, ModelRow, ReplicaRow, utcnow
from hamacho.serve.job_lease import database_now, new_owner
from hamacho.serve.predictors import PredictorCache

log = logging.getLogger("hamacho.serve")
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout runs out


class ModelGone(Exception):
    """The model's row is gone (deleted, on this replica or another)."""


class ModelBusy(Exception):
    """A prediction holds the model's row (on this replica or another)."""


@dataclass
class Holder:
    """A model in a replica's memory, as the list of loaded models shows it.

    Attributes:
        model_id: The model.
        tag: Its tag.
        last_used: Seconds since the epoch, the latest over the replicas holding it.
        replicas: Ids of the live replicas holding it.
        keep_loaded: "Load" asked every replica to keep it.
    """

    model_id: int
    tag: str
    last_used: float
    replicas: list[str]
    keep_loaded: bool


class Replica:
    """This process's row in ``replicas`` and the thread that syncs its memory with the database.

    Args:
        factory: Sessions on the service's database.
        cache: This process's loaded models.
        data_dir: The data folder (model files are under it).
        sync_seconds: Between two syncs; a replica silent for ``alive_seconds`` counts as dead.
    """

    def __init__(self, factory: sessionmaker[Session], cache: PredictorCache, data_dir: Path,
                 sync_seconds: float = 2.0) -> None:
        self.factory = factory
        self.cache = cache
        self.data_dir = data_dir
        self.sync_seconds = sync_seconds
        self.alive_seconds = max(30.0, 5 * sync_seconds)  # a replica busy with forwards may miss a few syncs
        self.id = new_owner()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sync_lock = threading.Lock()
        self._publish_lock = threading.Lock()  # one publish at a time (a request's and the sync's)
        self._published = -1  # the cache's ``changes`` when it was last published

    def register(self) -> None:
        """Add this replica's row (once, at start)."""
        with self.factory() as session, session.begin():
            self._renew(session)

    def start(self) -> None:
        """Sync every ``sync_seconds`` in a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="hamacho-replica", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop syncing and remove this replica's row (and with it what it published)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            with self.factory() as session, session.begin():
                session.execute(delete(LoadedModelRow).where(LoadedModelRow.replica_id == self.id))
                session.execute(delete(ReplicaRow).where(ReplicaRow.id == self.id))
        except OperationalError as exc:  # the database went first: the others remove the row once it is stale
            log.warning("could not remove replica %s from the database: %s", self.id, first_line(exc))

    def sync(self) -> None:
        """Renew this replica's row, remove dead replicas, drop stale copies, load kept models, publish."""
        with self._sync_lock:
            wanted = self._heartbeat()
            for row_id, path, epoch in wanted:
                if not self.cache.has_room():
                    break
                try:
                    self.cache.load(row_id, path, epoch)
                except Exception as exc:  # noqa: BLE001 - a broken file: the model's own requests say why
                    log.warning("could not keep model %s loaded: %s", row_id, first_line(exc))
            self.publish()

    def publish_if_changed(self) -> None:
        """:meth:`publish` when a model was loaded or released since the last time (a request loaded one)."""
        if self.cache.changes != self._published:
            self.publish()

    def publish(self) -> None:
        """Write what this replica holds to ``loaded_models``; drop copies whose model was deleted or unloaded."""
        with self._publish_lock:
            self._published = self.cache.changes
            entries = {entry["id"]: entry for entry in self.cache.loaded()}
            with self.factory() as session, session.begin():
                self._renew(session)
                current = dict(session.execute(
                    select(ModelRow.id, ModelRow.memory_epoch).where(ModelRow.id.in_(list(entries)))
                    .with_for_update(read=True)).all()) if entries else {}
                session.execute(delete(LoadedModelRow).where(LoadedModelRow.replica_id == self.id))
                kept = [key for key, entry in entries.items() if current.get(key) == entry["epoch"]]
                session.add_all([LoadedModelRow(replica_id=self.id, model_id=key,
                                                last_used=entries[key]["last_used"]) for key in kept])
            stale = set(entries) - set(kept)
            if stale:
                self.cache.drop(stale)

    def _heartbeat(self) -> list[tuple[int, Path, int]]:
        """Renew this row, remove dead replicas, drop stale copies; return the kept models this one lacks."""
        held = {entry["id"]: entry["epoch"] for entry in self.cache.loaded()}
        with self.factory() as session, session.begin():
            now = self._renew(session)
            dead = list(session.scalars(select(ReplicaRow.id).where(ReplicaRow.seen_until < now)))
            if dead:
                session.execute(delete(LoadedModelRow).where(LoadedModelRow.replica_id.in_(dead)))
                session.execute(delete(ReplicaRow).where(ReplicaRow.id.in_(dead)))
            rows = session.execute(select(ModelRow.id, ModelRow.memory_epoch, ModelRow.keep_loaded, ModelRow.folder,
                                          ModelRow.entry)
                                   .where(or_(ModelRow.id.in_(list(held)), ModelRow.keep_loaded.is_(True)))
                                   .order_by(ModelRow.id)).all()
        current = {row.id: row.memory_epoch for row in rows}
        self.cache.drop({key for key, epoch in held.items() if current.get(key) != epoch})
        return [(row.id, self.data_dir / row.folder / row.entry, row.memory_epoch) for row in rows
                if row.keep_loaded and row.id not in held]

    def _renew(self, session: Session) -> float:
        """Push this replica's ``seen_until`` on, adding its row when there is none (at start, or after a stall
        long enough for another replica to take it for dead); return the database's clock (caller's
        transaction)."""
        now = database_now(session)
        renewed = session.execute(update(ReplicaRow).where(ReplicaRow.id == self.id)
                                  .values(seen_until=now + self.alive_seconds)).rowcount
        if not renewed:
            session.add(ReplicaRow(id=self.id, host=socket.gethostname()[:255], pid=os.getpid(), started_at=utcnow(),
                                   seen_until=now + self.alive_seconds))
            session.flush()
        return now

    def _loop(self) -> None:
        while not self._stop.wait(self.sync_seconds):
            try:
                self.sync()
            except Exception as exc:  # noqa: BLE001 - the database is down a moment: the next sync tries again
                log.warning("replica sync failed: %s", first_line(exc))


def live_holders(session: Session) -> list[Holder]:
    """The models in the memory of live replicas, most recently used first (own transaction)."""
    with session.begin():
        now = database_now(session)
        rows = session.execute(
            select(LoadedModelRow.model_id, LoadedModelRow.replica_id, LoadedModelRow.last_used, ModelRow.tag,
                   ModelRow.keep_loaded)
            .join(ModelRow, ModelRow.id == LoadedModelRow.model_id)
            .join(ReplicaRow, ReplicaRow.id == LoadedModelRow.replica_id)
            .where(ReplicaRow.seen_until >= now)).all()
    holders: dict[int, Holder] = {}
    for row in rows:
        holder = holders.setdefault(row.model_id, Holder(row.model_id, row.tag, row.last_used, [], row.keep_loaded))
        holder.replicas.append(row.replica_id)
        holder.last_used = max(holder.last_used, row.last_used)
    for holder in holders.values():
        holder.replicas.sort()
    return sorted(holders.values(), key=lambda h: -h.last_used)


def live_replicas(session: Session) -> list[tuple[ReplicaRow, list[int]]]:
    """Live replicas, oldest first, each with the models it holds (own transaction)."""
    with session.begin():
        now = database_now(session)
        replicas = list(session.scalars(select(ReplicaRow).where(ReplicaRow.seen_until >= now)
                                        .order_by(ReplicaRow.started_at, ReplicaRow.id)))
        held: dict[str, list[int]] = {}
        for replica_id, model_id in session.execute(select(LoadedModelRow.replica_id, LoadedModelRow.model_id)
                                                    .order_by(LoadedModelRow.model_id)):
            held.setdefault(replica_id, []).append(model_id)
    return [(replica, held.get(replica.id, [])) for replica in replicas]


def held_models(session: Session, model_ids: list[int]) -> set[int]:
    """Which of ``model_ids`` some live replica holds in memory (caller's transaction)."""
    if not model_ids:
        return set()
    now = database_now(session)
    return set(session.scalars(select(LoadedModelRow.model_id).join(ReplicaRow)
                               .where(LoadedModelRow.model_id.in_(model_ids), ReplicaRow.seen_until >= now)))


@contextlib.contextmanager
def model_in_use(factory: sessionmaker[Session], model_id: int) -> Iterator[ModelRow]:
    """The model's row as it is now, share-locked while the block runs (PostgreSQL; SQLite has one writer and
    the service then runs as one replica, whose own count guards it: :meth:`PredictorCache.busy`).

    Holds one connection for the block's time (see ``db._connect`` for the pool's size).

    Raises:
        ModelGone: The row is gone (a delete on any replica committed first).
    """
    with factory() as session, session.begin():
        row = session.scalar(select(ModelRow).where(ModelRow.id == model_id).with_for_update(read=True))
        if row is None:
            raise ModelGone(model_id)
        session.expunge(row)
        yield row


def lock_for_delete(session: Session, model_id: int, wait_seconds: float = 2.0) -> None:
    """Lock the model's row for a delete, waiting at most ``wait_seconds`` for the predictions (and syncs) that
    hold it on any replica to end (caller's transaction; PostgreSQL, see :func:`model_in_use`).

    Raises:
        ModelBusy: A prediction still holds it.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text(f"SET LOCAL lock_timeout = {int(wait_seconds * 1000)}"))
    try:
        session.execute(select(ModelRow.id).where(ModelRow.id == model_id).with_for_update())
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise ModelBusy(model_id) from exc
        raise
