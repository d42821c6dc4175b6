"""A request's database session (hamacho/serve/deps.py): one per request, closed when the route ends, raising
or not, with no connection left checked out; the service layer opens its transactions itself."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, sessionmaker

from hamacho.serve.app import create_app
from hamacho.serve.db import ImageRow
from hamacho.serve.deps import get_session
from hamacho.serve.routes import models as model_routes
from hamacho.serve.service_config import ServiceConfig
from tests.databases import service_database_url
from tests.serve_support import API, png_bytes


class RecordedSession(Session):
    """A session that notes when it is closed, and whether a transaction was still open then."""

    made: ClassVar[list[RecordedSession]] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.closed = False
        self.open_at_close = False
        RecordedSession.made.append(self)

    def close(self) -> None:
        self.open_at_close = self.open_at_close or self.in_transaction()
        self.closed = True
        super().close()


@pytest.fixture
def app_and_sessions(tmp_path, monkeypatch, database_url):
    """The app (jobs off) whose requests' sessions are recorded."""
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=service_database_url(database_url))
    app = create_app(config, start_jobs=False)
    service = app.state.service
    recorded = sessionmaker(service.factory.kw["bind"], class_=RecordedSession, expire_on_commit=False)
    monkeypatch.setattr(service, "factory", recorded)
    monkeypatch.setattr(RecordedSession, "made", [])
    with TestClient(app) as client:
        yield client, service, RecordedSession.made


def test_every_request_session_is_closed_raising_or_not(app_and_sessions, monkeypatch):
    client, service, made = app_and_sessions
    engine = service.factory.kw["bind"]
    before = engine.pool.checkedout()
    requests = [("get", "/images", 200), ("get", "/tags", 200), ("get", "/health", 200),
                ("get", "/models/nope", 404),  # a refusal raised in the service layer
                ("get", "/images/123", 404), ("post", "/jobs/5/cancel", 404),
                ("delete", "/images", 400),  # an HTTPException raised in the route itself
                ("get", "/results?model=nope", 404)]
    for method, path, status in requests:
        response = getattr(client, method)(f"{API}{path}")
        assert response.status_code == status, (path, response.text)
    assert len(made) == len(requests)  # one session per request
    assert all(session.closed and not session.open_at_close for session in made)
    assert engine.pool.checkedout() == before

    def broken(*_args) -> list:
        raise RuntimeError("the cache broke")

    monkeypatch.setattr(model_routes, "live_holders", broken)
    response = client.get(f"{API}/loaded")  # an unexpected error: 500, and the session still closed
    assert response.status_code == 500 and "the cache broke" in response.json()["error"]
    assert len(made) == len(requests) + 1 and made[-1].closed
    assert engine.pool.checkedout() == before


def test_uploads_commit_in_the_service_layer_and_close(app_and_sessions):
    client, service, made = app_and_sessions
    image = png_bytes(np.zeros((8, 8, 3), np.uint8))
    response = client.post(f"{API}/images", data={"group": "good", "tag": "s"},
                           files=[("files", ("a.png", image, "image/png"))])
    assert response.status_code == 201, response.text
    assert made[-1].closed and not made[-1].open_at_close
    with service.factory() as session:  # committed: another session sees it
        assert session.scalar(select(ImageRow.name).where(ImageRow.tag == "s")) == "a.png"


def test_the_dependency_closes_its_session_when_the_route_raises(tmp_path, database_url):
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=service_database_url(database_url))
    app = create_app(config, start_jobs=False)
    service = app.state.service
    service.factory = sessionmaker(service.factory.kw["bind"], class_=RecordedSession, expire_on_commit=False)
    RecordedSession.made = []
    dependency = get_session(service)
    session = next(dependency)
    with pytest.raises(InvalidRequestError, match="[Aa]utobegin is disabled"):
        session.execute(select(ImageRow.id))  # outside `with session.begin():`: refused, nothing held
    session.begin()
    session.execute(select(ImageRow.id))  # a transaction the route never ended ...
    with pytest.raises(RuntimeError, match="route failed"):
        dependency.throw(RuntimeError("route failed"))
    assert session.closed and session.open_at_close  # ... is rolled back by the close
    assert not session.in_transaction()
    assert service.factory.kw["bind"].pool.checkedout() == 0
    service.runner.close()
