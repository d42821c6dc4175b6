"""Database tables (SQLAlchemy) and the versioned schema of the service.

The schema carries a version in table ``schema_info``. A new database is created at the current
version; an older one is brought up by the steps in :data:`MIGRATIONS`; a newer one (written by a later
Hamacho) is refused in one line rather than misread. SQLite runs in WAL mode with a busy timeout, so
the API and the training workers (separate processes) write to it side by side.
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
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from hamacho.errors import ConfigError

SCHEMA_VERSION = 1
# version -> step that brings a database at that version to version + 1
MIGRATIONS: dict[int, Callable[[Any], None]] = {}
ACTIVE_JOB_STATES = ("queued", "running")


def utcnow() -> str:
    """The current UTC time, ISO 8601 with seconds (how every timestamp is stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class Base(DeclarativeBase):
    """Declarative base of the service's tables."""


class SchemaInfo(Base):
    """One row: the schema version."""

    __tablename__ = "schema_info"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


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


class JobRow(Base):
    """A training job."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_tag: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    phase: Mapped[str] = mapped_column(String(64), default="")
    percent: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    parameters: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    image_ids: Mapped[str] = mapped_column(Text, default="[]")  # JSON
    counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow)
    started_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ResultRow(Base):
    """A saved prediction; its pictures are in ``<data_dir>/<folder>``."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    folder: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)  # JSON: the prediction as the API returns it, without URLs
    created_at: Mapped[str] = mapped_column(String(32), default=utcnow)


def loads(text_value: str | None) -> Any:
    """A JSON column's value (empty -> None)."""
    return json.loads(text_value) if text_value else None


def open_database(url: str) -> sessionmaker[Session]:
    """Connect, create or migrate the schema, and return a session factory.

    Raises:
        ConfigError: The database cannot be opened, or was written by a newer Hamacho.
    """
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False} if is_sqlite else {})
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        _ensure_schema(engine)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot open the database {engine.url.render_as_string(hide_password=True)}: "
                          f"{str(exc).splitlines()[0]}") from exc
    return sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _ensure_schema(engine: Engine) -> None:
    Base.metadata.create_all(engine, tables=[SchemaInfo.__table__])
    with Session(engine) as session, session.begin():
        info = session.scalar(select(SchemaInfo))
        if info is None:
            Base.metadata.create_all(session.connection())
            session.add(SchemaInfo(id=1, version=SCHEMA_VERSION))
            return
        if info.version > SCHEMA_VERSION:
            raise ConfigError(f"the database has schema version {info.version}, newer than this Hamacho "
                              f"understands ({SCHEMA_VERSION}); upgrade Hamacho")
        while info.version < SCHEMA_VERSION:
            MIGRATIONS[info.version](session.connection())
            info.version += 1
        session.execute(text("SELECT 1"))
