"""Fresh, empty databases for the service tests: SQLite in a temporary folder, or PostgreSQL.

The service suite runs once per kind (tests/conftest.py: fixtures ``database_url`` and
``module_database_url``). A PostgreSQL variant gets a database of its own, ``hamacho_t_<random hex>``,
created on the server that ``HAMACHO_TEST_DATABASE_URL`` names (a role allowed to create databases:
``.ci/run`` starts Debian's PostgreSQL and sets it) and dropped afterwards. Without the variable, or with
a server that does not answer, the variant is skipped with the reason, and fails under ``CI=true``
(:func:`tests.conftest.require_component`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_component

ENV = "HAMACHO_TEST_DATABASE_URL"
KINDS = ("sqlite", "postgresql")
PREFIX = "hamacho_t_"
CONNECT_TIMEOUT = 10  # seconds
HOW = (f"run `bash .ci/run` (it starts Debian's PostgreSQL and sets {ENV}), or set {ENV} to "
       "postgresql://user:password@host:port/database of a role that may create databases")


@contextmanager
def fresh_database(kind: str, folder: Path) -> Iterator[str]:
    """A new, empty database of ``kind`` for one test (or one module-scoped fixture); its URL.

    Args:
        kind: ``sqlite`` (``sqlite:///<folder>/hamacho.db``) or ``postgresql`` (a new database on the
            server of ``HAMACHO_TEST_DATABASE_URL``, as ``postgresql+psycopg://...``, dropped on exit).
        folder: A temporary folder of the test, for the SQLite file.
    """
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'hamacho.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r} (one of {', '.join(KINDS)})")
    server = os.environ.get(ENV, "").strip()
    require_component(bool(server), f"PostgreSQL: {ENV} is not set; {HOW}")
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        require_component(False, "PostgreSQL: the driver psycopg is missing: pip install -e '.[postgres]'")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        base = make_url(server)
    except (ArgumentError, ValueError) as exc:
        require_component(False, f"PostgreSQL: {ENV} is not a database URL ({exc}); {HOW}")
    shown = base.render_as_string(hide_password=True)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)  # libpq's spelling
    name = f"{PREFIX}{secrets.token_hex(6)}"

    def run(statement: sql.Composable) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute(statement)

    try:
        run(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        require_component(False, f"PostgreSQL: cannot create a test database on {shown}: {first}; {HOW}")
    try:
        yield base.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends the connections still open (a service's pool, a worker that outlived its test)
        run(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def service_database_url(url: str) -> str | None:
    """``ServiceConfig.database_url`` (``hamacho serve --database-url``) for a test database's ``url``.

    ``None`` for SQLite: the service keeps its own default, ``hamacho.db`` inside its data folder, exactly as
    it always ran in these tests; the URL itself for any other database.
    """
    return None if url.startswith("sqlite") else url


def serve_arguments(url: str) -> list[str]:
    """The ``hamacho serve`` options that select a test database's ``url`` (none for SQLite)."""
    chosen = service_database_url(url)
    return [] if chosen is None else ["--database-url", chosen]
