"""The service's database schema: Alembic migrations run once under a lock, a first-release database upgrades in
place, a newer one is refused untouched, and the worker's start-up refusals (database, data folder) are one line."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("alembic")
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from hamacho.errors import ConfigError
from hamacho.serve.app import create_app
from hamacho.serve.db import engine_url, open_database
from hamacho.serve.schema_upgrade import head_revision
from hamacho.serve.service_config import ServiceConfig
from tests.serve_support import API, free_port

FIRST_RELEASE = Path(__file__).resolve().parent / "data" / "first_release.sql"


def hamacho(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hamacho", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


def first_release_folder(data_dir: Path) -> Path:
    """A data folder as the first release left it: its SQLite database (from the dump) and the files it lists."""
    data_dir.mkdir(parents=True)
    with sqlite3.connect(data_dir / "hamacho.db") as connection:
        connection.executescript(FIRST_RELEASE.read_text())
    for folder in ("images", "models/cccc", "predictions/dddd"):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
    for name in ("aaaa.png", "bbbb.png"):
        (data_dir / "images" / name).write_bytes(b"\x89PNG")
    return data_dir


def scalar(url: str, query: str):
    engine = create_engine(engine_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(text(query)).scalar()
    finally:
        engine.dispose()


def test_first_release_data_folder_upgrades_in_place(tmp_path):
    data_dir = first_release_folder(tmp_path / "data")
    url = f"sqlite:///{data_dir / 'hamacho.db'}"
    upgraded = hamacho("db", "upgrade", "--database-url", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"schema revision {head_revision()} (was 0001)"
    assert scalar(url, "SELECT version_num FROM alembic_version") == head_revision()
    assert scalar(url, "SELECT version FROM schema_info") == 2  # the first release now refuses this database
    again = hamacho("db", "upgrade", "--database-url", url)
    assert again.returncode == 0 and again.stdout.strip() == f"schema revision {head_revision()} (already)"
    # every row is kept, and the service reads them (jobs not started: this is about the rows)
    config = ServiceConfig(data_dir=data_dir)
    with TestClient(create_app(config, start_jobs=False)) as client:
        images = client.get(f"{API}/images").json()
        assert images["total"] == 2 and [i["name"] for i in images["items"]] == ["good1.png", "good2.png"]
        assert [m["tag"] for m in client.get(f"{API}/models").json()["items"]] == ["line1"]
        jobs = {j["id"]: j for j in client.get(f"{API}/jobs").json()["items"]}
        assert jobs[1]["status"] == "succeeded" and jobs[1]["model_id"] == 1 and jobs[1]["attempt"] == 1
        assert jobs[2]["status"] == "queued" and jobs[2]["attempt"] == 0 and jobs[2]["max_attempts"] == 3
    assert scalar(url, "SELECT attempts FROM jobs WHERE id = 1") == 1
    assert scalar(url, "SELECT attempts FROM jobs WHERE id = 2") == 0
    assert json.loads(scalar(url, "SELECT data FROM results WHERE id = 1")) == {"score": 0.42}
    assert (data_dir / ".hamacho-data").read_text().strip() == scalar(
        url, "SELECT value FROM service_info WHERE key = 'data_id'")


def test_newer_database_is_refused_untouched(tmp_path):
    url = f"sqlite:///{tmp_path / 'h.db'}"
    open_database(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(ConfigError, match="schema revision 9999, newer than this Hamacho knows"):
        open_database(url)
    for command in (("db", "upgrade"), ("db", "current"), ("worker", "--data-dir", str(tmp_path))):
        result = hamacho(*command, "--database-url", url)
        assert result.returncode == 1, result
        assert result.stderr.strip().count("\n") == 0 and "revision 9999, newer" in result.stderr
        assert "Traceback" not in result.stderr
    assert scalar(url, "SELECT version_num FROM alembic_version") == "9999"


def test_replicas_migrating_at_the_same_moment_all_come_up(database_url):
    """Four processes migrate one empty database at once: the lock makes one migrate and the rest find it done."""
    processes = [subprocess.Popen([sys.executable, "-m", "hamacho", "db", "upgrade", "--database-url", database_url],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    said = sorted(out.strip() for out, _err in outputs)
    assert said == [f"schema revision {head_revision()} (already)"] * 3 + [
        f"schema revision {head_revision()} (was an empty database)"]
    assert scalar(database_url, "SELECT count(*) FROM alembic_version") == 1


def test_worker_refuses_an_old_database_an_unreachable_one_and_a_wrong_data_folder(tmp_path, database_url):
    data_dir = tmp_path / "data"
    # an empty database: the worker changes nothing and says what to run
    result = hamacho("worker", "--database-url", database_url, "--data-dir", str(data_dir))
    assert result.returncode == 1 and "run hamacho db upgrade" in result.stderr, result.stderr
    current = hamacho("db", "current", "--database-url", database_url)
    assert current.returncode == 1 and "none (empty)" in current.stderr
    # nobody answers on that port
    port = free_port()
    result = hamacho("worker", "--database-url", f"postgresql://nobody:pw@127.0.0.1:{port}/hamacho",
                     "--data-dir", str(data_dir))
    assert result.returncode == 1 and result.stderr.startswith("Error: cannot open the database postgresql")
    assert "***" in result.stderr and "pw@" not in result.stderr and result.stderr.count("\n") == 1
    # the API marks its folder; a worker on another folder (a wrong mount) refuses
    config = ServiceConfig(data_dir=data_dir, database_url=database_url)
    with TestClient(create_app(config, start_jobs=False)):
        pass
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    result = hamacho("worker", "--database-url", database_url, "--data-dir", str(elsewhere))
    assert result.returncode == 1 and "has no marker file (.hamacho-data)" in result.stderr, result.stderr
    (elsewhere / ".hamacho-data").write_text("0" * 32 + "\n")
    result = hamacho("worker", "--database-url", database_url, "--data-dir", str(elsewhere))
    assert result.returncode == 1 and "holds another service's marker" in result.stderr
    result = hamacho("worker", "--database-url", database_url, "--data-dir", str(tmp_path / "missing"))
    assert result.returncode == 1 and "does not exist" in result.stderr
    result = hamacho("worker", "--database-url", database_url, "--data-dir", str(data_dir), "--device", "gpu0")
    assert result.returncode == 1 and "give auto, cpu or cuda:N" in result.stderr
    # a replica on the wrong folder refuses too, rather than marking a second one or serving an empty one
    with pytest.raises(ConfigError, match="holds another service's marker"):
        create_app(ServiceConfig(data_dir=elsewhere, database_url=database_url), start_jobs=False)
    with pytest.raises(ConfigError, match="has no marker file"):
        create_app(ServiceConfig(data_dir=tmp_path / "unmounted", database_url=database_url), start_jobs=False)
    assert not (tmp_path / "unmounted" / ".hamacho-data").exists()


def test_a_database_that_stops_answering_is_503_in_one_line(tmp_path):
    from sqlalchemy.orm import sessionmaker

    with TestClient(create_app(ServiceConfig(data_dir=tmp_path / "data"), start_jobs=False)) as client:
        assert client.get(f"{API}/health").status_code == 200
        # the service's database is now a server that does not answer (nothing listens on the port)
        dead = create_engine(engine_url(f"postgresql://u:secret@127.0.0.1:{free_port()}/hamacho"),
                             connect_args={"connect_timeout": 2})
        client.app.state.service.factory = sessionmaker(dead)
        for response in (client.get(f"{API}/health"), client.get(f"{API}/images")):
            assert response.status_code == 503
            assert response.json() == {"error": "the database does not answer; try again (details in the server log)"}


def test_the_migrations_build_the_tables_the_code_declares(database_url):
    """Alembic's own comparison of the migrated database with db.py's tables finds no difference (columns,
    types, nullability, indexes, foreign keys), on SQLite and PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from hamacho.serve.db import Base

    open_database(database_url)
    engine = create_engine(engine_url(database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = [d for d in compare_metadata(context, Base.metadata)
                           if not (d[0] == "remove_table" and d[1].name in ("alembic_version", "schema_info"))]
    finally:
        engine.dispose()
    assert differences == []
