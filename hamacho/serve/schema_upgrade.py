"""Bring a database to the schema this Hamacho knows (Alembic), once, under a lock.

Every replica, worker and ``hamacho db upgrade`` calls :func:`upgrade_schema` at start. The first to take
the migration lock (PostgreSQL: an advisory lock held by the migrating connection; SQLite: an exclusive
``flock`` on a file beside the database, which is on one machine anyway) migrates; the others wait for it
and then find nothing to do, so replicas started at the same moment on an empty database all come up.

* A database of the first release (tables, ``schema_info`` and no ``alembic_version``) is stamped at
  revision ``0001`` and upgraded in place.
* A database at a revision this Hamacho does not have (written by a later one) is refused in one line,
  before anything is changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from hamacho.errors import ConfigError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ADVISORY_LOCK_KEY = 0x48414D41  # "HAMA": the key of hamacho's migration lock on PostgreSQL
FIRST_RELEASE = "0001"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, pointing at the packaged migrations (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this Hamacho has."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or FIRST_RELEASE


def current_revision(connection: Connection) -> str | None:
    """The database's revision: None for an empty database, ``0001`` for one of the first release."""
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None and inspect(connection).has_table("schema_info"):
        return FIRST_RELEASE
    return revision


def upgrade_schema(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to :func:`head_revision` under the migration lock; return (before, after).

    Raises:
        ConfigError: The database is at a revision this Hamacho does not know (a newer Hamacho wrote it).
    """
    script = ScriptDirectory.from_config(alembic_config())
    with _migration_lock(engine) as connection:
        before = current_revision(connection)
        if before is not None and before not in {rev.revision for rev in script.walk_revisions()}:
            raise ConfigError(f"the database is at schema revision {before}, newer than this Hamacho knows "
                              f"(its newest is {script.get_current_head()}): upgrade Hamacho")
        if before == FIRST_RELEASE and not MigrationContext.configure(connection).get_current_revision():
            command.stamp(alembic_config(connection), FIRST_RELEASE)
            connection.commit()
        command.upgrade(alembic_config(connection), "head")
        connection.commit()
        return before, current_revision(connection) or FIRST_RELEASE


def check_schema(engine: Engine) -> str:
    """The database's revision, which must be this Hamacho's newest (nothing is changed).

    Raises:
        ConfigError: An empty or older database (``hamacho db upgrade`` brings it up), or a newer one.
    """
    head = head_revision()
    with engine.connect() as connection:
        revision = current_revision(connection)
    if revision != head:
        known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        if revision is not None and revision not in known:
            raise ConfigError(f"the database is at schema revision {revision}, newer than this Hamacho knows "
                              f"(its newest is {head}): upgrade Hamacho")
        raise ConfigError(f"the database is at schema revision {revision or 'none (empty)'}, this Hamacho needs "
                          f"{head}: run hamacho db upgrade")
    return revision


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that holds the database's migration lock while the block runs."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    with _file_lock(Path(f"{database}.migrate.lock") if database and database != ":memory:" else None), \
            engine.connect() as connection:
        yield connection


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on ``path`` (none where there is no file or no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process per SQLite database is the rule there
        path = None
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
