"""Database tables (SQLAlchemy) of the service, and opening a database.

The schema is changed only by Alembic migrations (:mod:`.schema_upgrade`, ``hamacho/serve/migrations``),
run once under a lock when a process opens the database; the classes below mirror the newest revision.
SQLite runs in WAL mode with a busy timeout, so the API and the training workers (separate processes on
one machine) write to it side by side; a database shared by several machines is PostgreSQL (psycopg 3).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Boolean,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from hamacho.errors import ConfigError

ACTIVE_JOB_STATES = ("queued", "running")


def utcnow() -> str:
    """The current UTC time, ISO 8601 with seconds (how every timestamp is stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class ServiceInfo(Base):
    """Key/value facts about the service (``data_id``: the data folder the database belongs to)."""

    __tablename__ = "service_info"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImageRow(Base):
    """A registered image or mask; the file is ``<data_dir>/<stored>``."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    stored: Mapped[str] = mapped_column(String(255), unique=True)
    group: Mapped[str] = mapped_column(String(8), index=True)
    tag: Mapped[str | None] = mapped_column(String(128), index=True, nullable=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)  # of the file; None: not yet


class ModelRow(Base):
    """A trained or imported model; its files are in ``<data_dir>/<folder>``."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tag: Mapped[str] = mapped_column(String(128), unique=True)
    model: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(64))
    backbone: Mapped[str] = mapped_column(String(64))
    image_size: Mapped[str] = mapped_column(String(32))  # JSON: 256, or [height, width]
    format: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    folder: Mapped[str] = mapped_column(String(255))
    entry: Mapped[str] = mapped_column(String(255))  # model.pt or the export folder, relative to folder
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="{}")  # JSON: metrics, thresholds, dataset, config
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow)
    keep_loaded: Mapped[bool] = mapped_column(Boolean, default=False)  # "Load": every replica keeps it in memory
    memory_epoch: Mapped[int] = mapped_column(Integer, default=0)  # "Unload" counts up: older copies are dropped
    threshold_version: Mapped[int] = mapped_column(Integer, default=0)  # the cuts predictions use; 0: trained


class JobRow(Base):
    """A training job."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_tag: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    phase: Mapped[str] = mapped_column(String(255), default="")
    percent: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parameters: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    image_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON
    counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # runs started (the current one's number)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the worker holding the lease
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)  # database clock, epoch seconds
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow)
    started_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tag: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the dataset tag; None: images by id
    compare_with: Mapped[int | None] = mapped_column(Integer, nullable=True)  # a model to compare on held-out images


class ResultRow(Base):
    """A saved prediction; its pictures are in ``<data_dir>/<folder>``."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    folder: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)  # JSON: the prediction as the API returns it, without URLs
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow, index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)  # from data: what the log searches
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    raw_score: Mapped[float | None] = mapped_column(Float, nullable=True)  # ranks what the normalized score cannot
    decision: Mapped[str | None] = mapped_column(String(4), index=True, nullable=True)
    verdict: Mapped[str | None] = mapped_column(String(16), index=True, nullable=True)  # a reviewer's; None: not yet
    reviewed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reviewed_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class ThresholdRow(Base):
    """A saved version of a model's cuts (normalized, 0..1); version 0, the trained 0.5 and 0.5, has no row."""

    __tablename__ = "model_thresholds"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_thresholds_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    image: Mapped[float] = mapped_column(Float)
    pixel: Mapped[float] = mapped_column(Float)
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)


class ReplicaRow(Base):
    """A running ``hamacho serve`` process; alive while ``seen_until`` (database clock) is ahead."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[str] = mapped_column(String(32), default=utcnow)
    seen_until: Mapped[float] = mapped_column(Float)


class LoadedModelRow(Base):
    """A model in a replica's memory (as that replica last published it)."""

    __tablename__ = "loaded_models"
    replica_id: Mapped[str] = mapped_column(ForeignKey("replicas.id", ondelete="CASCADE"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True, index=True)
    last_used: Mapped[float] = mapped_column(Float)  # seconds since the epoch


def saved_threshold(session: Session, model_id: int, version: int) -> ThresholdRow | None:
    """A model's saved threshold version (caller's transaction); None when none has that number (version 0,
    the trained thresholds, is never saved)."""
    return session.scalar(select(ThresholdRow).where(ThresholdRow.model_id == model_id,
                                                     ThresholdRow.version == version))


def loads(text_value: str | None) -> Any:
    """A JSON column's value (empty -> None)."""
    return json.loads(text_value) if text_value else None


def engine_url(url: str) -> str:
    """``url`` with PostgreSQL's driver spelled out: ``postgresql://`` means psycopg 3 here.

    Raises:
        ConfigError: Not a database URL.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # SQLAlchemy raises ArgumentError or ValueError
        raise ConfigError(f"{url!r} is not a database URL (e.g. postgresql://user:pw@host/hamacho)") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def open_database(url: str, migrate: bool = True) -> sessionmaker[Session]:
    """Connect, bring the schema to this Hamacho's revision (once, under a lock), return a session factory.

    Args:
        url: SQLAlchemy URL (``sqlite:///path``, ``postgresql://user:pw@host/db``).
        migrate: Run the migrations (False: only check the database is at this Hamacho's revision).

    Raises:
        ConfigError: The database cannot be reached, its driver is missing, it was written by a newer
            Hamacho, or (``migrate=False``) it needs ``hamacho db upgrade``.
    """
    from hamacho.serve.schema_upgrade import check_schema, upgrade_schema

    engine = _connect(url, upgrade_schema if migrate else check_schema)[0]
    return sessionmaker(engine, expire_on_commit=False)


def upgrade_database(url: str) -> tuple[str | None, str]:
    """Migrate the database (``hamacho db upgrade``); return its revision before and after.

    Raises:
        ConfigError: As :func:`open_database`.
    """
    from hamacho.serve.schema_upgrade import upgrade_schema

    engine, outcome = _connect(url, upgrade_schema)
    engine.dispose()
    return outcome


def _connect(url: str, action: Callable[[Engine], Any]) -> tuple[Engine, Any]:
    """An engine for ``url`` and what ``action`` returned on it; every failure is one :class:`ConfigError` line."""
    full = engine_url(url)
    is_sqlite = full.startswith("sqlite")
    shown = make_url(full).render_as_string(hide_password=True)
    try:
        # a prediction holds one connection while it runs (replicas.model_in_use), and the server runs at most
        # 40 requests at once (anyio's thread pool): 5 kept + 40 more never makes a request wait for the pool
        engine = create_engine(full, pool_pre_ping=not is_sqlite, pool_size=5, max_overflow=40,
                               connect_args={"timeout": 30, "check_same_thread": False} if is_sqlite
                               else {"connect_timeout": 10})
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot open {shown}: the driver {exc.name} is missing: "
                          "pip install 'hamacho[postgres]'") from exc
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        return engine, action(engine)
    except ConfigError:
        engine.dispose()
        raise
    except Exception as exc:
        engine.dispose()
        raise ConfigError(f"cannot open the database {shown}: {str(exc).strip().splitlines()[0]}") from exc


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
