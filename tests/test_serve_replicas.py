"""Models coherent across replicas: two services on one database and one data folder, in this process.

Each replica's sync (hamacho/serve/replicas.py) is called by the test, never waited for (``sync_seconds`` is an
hour here), so what every step sees is fixed. The real processes' version is in tests/test_serve_cluster.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hamacho.serve.app import create_app
from hamacho.serve.db import LoadedModelRow, ReplicaRow
from hamacho.serve.job_lease import database_now
from hamacho.serve.replicas import model_in_use
from hamacho.serve.service_config import ServiceConfig
from tests.databases import service_database_url
from tests.serve_support import API, FAST_PARAMETERS, dataset_files, upload_dataset, wait_job


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> dict:
    """A model.pt trained once by a job (64 px PaDiM), and an image to score."""
    base = tmp_path_factory.mktemp("replicas-model")
    files = dataset_files(base / "parts")
    with TestClient(create_app(ServiceConfig(data_dir=base / "data", sync_seconds=3600))) as client:
        upload_dataset(client, files)
        job = client.post(f"{API}/jobs", json={"model_tag": "m", "tag": "parts", "parameters": FAST_PARAMETERS})
        assert wait_job(client, job.json()["id"])["status"] == "succeeded"
        return {"bytes": client.get(f"{API}/models/m/download").content, "image": files["bad"][0]}


@contextlib.contextmanager
def replicas(url: str, data_dir: Path, model_file: dict, max_loaded: tuple[int, int] = (2, 2)) -> Iterator[tuple]:
    """Replicas A and B (their clients) with models m1 and m2, imported through A."""
    configs = [ServiceConfig(data_dir=data_dir, database_url=url, workers=0, sync_seconds=3600, max_loaded=most)
               for most in max_loaded]
    with TestClient(create_app(configs[0], start_jobs=False)) as a, \
            TestClient(create_app(configs[1], start_jobs=False)) as b:
        for tag in ("m1", "m2"):
            response = a.post(f"{API}/models/import", data={"tag": tag},
                              files=[("file", ("m.pt", model_file["bytes"], "application/octet-stream"))])
            assert response.status_code == 201, response.text
        yield a, b


def service(client: TestClient):
    return client.app.state.service


def in_memory(client: TestClient) -> list[int]:
    """Ids of the models in this replica's own memory."""
    return sorted(entry["id"] for entry in service(client).cache.loaded())


def loaded(client: TestClient) -> list[tuple[str, list[str], bool]]:
    """``(tag, replicas, keep_loaded)`` per model of GET /loaded."""
    response = client.get(f"{API}/loaded")
    assert response.status_code == 200, response.text
    return [(item["tag"], item["replicas"], item["keep_loaded"]) for item in response.json()["items"]]


def predict(client: TestClient, ref: str, image: Path):
    return client.post(f"{API}/models/{ref}/predict", files=[("files", (image.name, image.read_bytes(), "image/png"))])


def test_load_and_unload_reach_every_replica(tmp_path, database_url, model_file):
    with replicas(service_database_url(database_url), tmp_path / "data", model_file) as (a, b):
        id_a, id_b = service(a).replica.id, service(b).replica.id
        m1 = a.get(f"{API}/models/m1").json()["id"]
        answer = a.post(f"{API}/models/m1/load")
        assert answer.status_code == 200 and answer.json()["replica"] == id_a
        assert loaded(a) == [("m1", [id_a], True)] and loaded(b) == loaded(a)  # the same list on every replica
        assert in_memory(b) == []
        service(b).replica.sync()  # B's next sync loads the kept model
        assert in_memory(b) == [m1] and loaded(b) == [("m1", sorted([id_a, id_b]), True)]
        assert b.get(f"{API}/models/m1").json()["loaded"] is True
        listed = {item["id"]: item["models"] for item in a.get(f"{API}/replicas").json()["items"]}
        assert listed == {id_a: [m1], id_b: [m1]}
        # unloaded through B: gone from the list at once, from B's memory at once, from A's at A's next sync
        assert b.post(f"{API}/models/m1/unload").json()["items"] == []
        assert in_memory(b) == [] and in_memory(a) == [m1] and loaded(a) == []
        assert a.get(f"{API}/models/m1").json()["loaded"] is False
        service(a).replica.sync()
        assert in_memory(a) == [] and loaded(a) == []
        assert "not loaded" in a.post(f"{API}/models/m1/unload").json()["error"]
        # a prediction loads a fresh copy where it runs, and only there (not kept: B's sync leaves it)
        assert predict(b, "m1", model_file["image"]).status_code == 200
        service(b).replica.sync()
        service(a).replica.sync()
        assert in_memory(b) == [m1] and in_memory(a) == [] and loaded(a) == [("m1", [id_b], False)]


def test_an_unload_on_another_replica_is_not_undone(tmp_path, database_url, model_file):
    """A copy loaded before an unload elsewhere is dropped at the next use or sync, never published again."""
    with replicas(service_database_url(database_url), tmp_path / "data", model_file) as (a, b):
        m1 = a.get(f"{API}/models/m1").json()["id"]
        assert predict(a, "m1", model_file["image"]).status_code == 200
        before = service(a).cache.loaded()[0]["epoch"]
        assert b.post(f"{API}/models/m1/unload").status_code == 200  # A's copy is listed: B can unload it
        service(a).replica.publish()  # a late publish of A's old copy: refused and dropped
        assert loaded(b) == [] and in_memory(a) == []
        assert predict(a, "m1", model_file["image"]).status_code == 200  # loads the model again, current epoch
        assert [(e["id"], e["epoch"]) for e in service(a).cache.loaded()] == [(m1, before + 1)]


def test_kept_models_never_push_others_out(tmp_path, database_url, model_file):
    with replicas(service_database_url(database_url), tmp_path / "data", model_file, max_loaded=(2, 1)) as (a, b):
        for tag in ("m1", "m2"):
            assert a.post(f"{API}/models/{tag}/load").status_code == 200
        service(b).replica.sync()
        assert len(in_memory(b)) == 1  # B keeps one model at most: the first kept one, by id
        assert in_memory(b) == [a.get(f"{API}/models/m1").json()["id"]]
        assert predict(b, "m2", model_file["image"]).status_code == 200  # a request may still swap it
        service(b).replica.sync()
        assert in_memory(b) == [a.get(f"{API}/models/m2").json()["id"]]


def test_a_delete_frees_every_replica(tmp_path, database_url, model_file):
    with replicas(service_database_url(database_url), tmp_path / "data", model_file) as (a, b):
        id_b = service(b).replica.id
        assert predict(b, "m1", model_file["image"]).status_code == 200
        assert loaded(a) == [("m1", [id_b], False)]  # B published the copy its request loaded
        assert a.delete(f"{API}/models/m1").status_code == 200
        assert loaded(a) == [] and len(in_memory(b)) == 1  # B's memory: until its next sync
        gone = predict(b, "m1", model_file["image"])
        assert gone.status_code == 404 and gone.json() == {"error": "no model with id or tag 'm1'"}
        service(b).replica.sync()
        assert in_memory(b) == []


def test_dead_replicas_are_removed_with_what_they_held(tmp_path, database_url, model_file):
    with replicas(service_database_url(database_url), tmp_path / "data", model_file) as (a, b):
        m1 = a.get(f"{API}/models/m1").json()["id"]
        with service(a).factory() as session, session.begin():  # a replica killed with kill -9 a while ago
            session.add(ReplicaRow(id="lost:1:x", host="lost", pid=1, seen_until=database_now(session) - 1))
            session.flush()
            session.add(LoadedModelRow(replica_id="lost:1:x", model_id=m1, last_used=1.0))
        assert loaded(a) == []  # a dead replica's models are not listed
        assert "lost:1:x" not in [item["id"] for item in a.get(f"{API}/replicas").json()["items"]]
        service(b).replica.sync()
        with service(a).factory() as session:
            assert session.get(ReplicaRow, "lost:1:x") is None
            assert session.query(LoadedModelRow).count() == 0


def test_a_prediction_on_another_replica_holds_off_a_delete(tmp_path, postgresql_url, model_file):
    """On PostgreSQL a prediction share-locks its model's row: a delete on another replica waits a moment for
    it, then is refused in one line; once the prediction ends the delete goes through."""
    with replicas(service_database_url(postgresql_url), tmp_path / "data", model_file) as (a, b):
        m1 = a.get(f"{API}/models/m1").json()["id"]
        with model_in_use(service(b).factory, m1) as row:  # what B's predict holds while it scores
            assert row.tag == "m1"
            refused = a.delete(f"{API}/models/m1")
            assert refused.status_code == 409
            assert refused.json() == {"error": "model 'm1' is in use by a prediction request on another replica; "
                                               "try again"}
        assert a.delete(f"{API}/models/m1").status_code == 200
        assert predict(b, "m1", model_file["image"]).status_code == 404
