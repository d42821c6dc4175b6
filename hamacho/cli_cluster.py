"""``hamacho worker`` and ``hamacho db``: the commands of a service spread over several machines.

Thin like the rest of the CLI: parse, then call :mod:`hamacho.serve.worker_main` or
:mod:`hamacho.serve.schema_upgrade` (imported inside the commands: ``hamacho --help`` stays light).
"""

from __future__ import annotations

import importlib.util

import click

from hamacho.errors import ConfigError

DATABASE_HELP = "The service's database, e.g. postgresql://user:pw@host/hamacho (also HAMACHO_DATABASE_URL)."


def _need(*packages: str) -> None:
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"this command needs {', '.join(missing)}: pip install 'hamacho[serve]'")


@click.command()
@click.option("--database-url", envvar="HAMACHO_DATABASE_URL", required=True, help=DATABASE_HELP)
@click.option("--data-dir", envvar="HAMACHO_DATA_DIR", required=True,
              help="The service's data folder as this machine mounts it (the API's --data-dir).")
@click.option("--device", default="auto", show_default=True, help="Where jobs train: auto, cpu or cuda:N.")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Training jobs run at once, each in its own process.")
@click.option("--lease-seconds", type=click.FloatRange(3, 3600), default=60.0, show_default=True,
              help="A job whose worker stops answering for this long is queued again (heartbeat: a third).")
def worker(database_url, data_dir, device, jobs, lease_seconds) -> None:
    """Run training jobs queued through any replica of the service (docs/service.md, "Scale out").

    Stops on SIGTERM or Ctrl-C, putting its running jobs back in the queue.
    """
    _need("sqlalchemy", "alembic")
    from hamacho.serve.worker_main import run_worker

    run_worker(database_url, data_dir, device, jobs, lease_seconds, echo=lambda line: click.echo(line, err=True))


@click.group()
def db() -> None:
    """The service's database schema (Alembic migrations)."""


@db.command()
@click.option("--database-url", envvar="HAMACHO_DATABASE_URL", required=True, help=DATABASE_HELP)
def upgrade(database_url) -> None:
    """Bring the database to this Hamacho's schema, once, under a lock (replicas also do at start)."""
    _need("sqlalchemy", "alembic")
    from hamacho.serve.db import upgrade_database

    before, after = upgrade_database(database_url)
    click.echo(f"schema revision {after}" + (" (already)" if before == after else
                                            f" (was {before or 'an empty database'})"))


@db.command()
@click.option("--database-url", envvar="HAMACHO_DATABASE_URL", required=True, help=DATABASE_HELP)
def current(database_url) -> None:
    """Print the database's schema revision and this Hamacho's (exit 1 when they differ)."""
    _need("sqlalchemy", "alembic")
    from hamacho.serve.db import open_database

    open_database(database_url, migrate=False)
    from hamacho.serve.schema_upgrade import head_revision

    click.echo(f"schema revision {head_revision()} (this Hamacho's newest)")
