"""An unexpected error answers its one-line 500 and leaves the client's keep-alive connection usable.

Against a real uvicorn server on a loopback port (a test client has no connections to lose).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
import httpx
import uvicorn

from hamacho.serve.app import create_app
from hamacho.serve.routes import models as model_routes
from hamacho.serve.service_config import ServiceConfig
from tests.databases import service_database_url
from tests.serve_support import API, free_port

START_TIMEOUT = 60.0



@pytest.fixture
def served(tmp_path, database_url) -> Iterator[tuple[str, object]]:
    """``(base URL, service)`` of the app run by uvicorn in a thread of this process."""
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=service_database_url(database_url))
    app = create_app(config, start_jobs=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)  # polling for the start, not a wait for a result
    try:
        yield f"http://127.0.0.1:{port}", app.state.service
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection that carried ``response``."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_an_unexpected_error_is_one_line_and_keeps_the_connection(served, monkeypatch, caplog):
    base, _service = served

    def broken(*_args) -> list:
        raise RuntimeError("the cache broke\nsecond line")

    with httpx.Client(base_url=base, timeout=30) as client:
        before = client.get(f"{API}/loaded")
        assert before.status_code == 200 and before.json()["items"] == []
        monkeypatch.setattr(model_routes, "live_holders", broken)
        failed = client.get(f"{API}/loaded")
        assert failed.status_code == 500
        expected = "unexpected RuntimeError: the cache broke (details in the server log)"  # first line only
        assert failed.json() == {"error": expected}
        assert failed.headers.get("connection", "keep-alive").lower() != "close"
        logged = [r for r in caplog.records if r.name == "hamacho.serve" and r.exc_info]
        assert [r.getMessage() for r in logged] == [f"unexpected error on GET {API}/loaded"]
        monkeypatch.undo()
        after = client.get(f"{API}/loaded")
        assert after.status_code == 200 and after.json()["items"] == []
        # the same connection carried all three
        assert local_port(before) == local_port(failed) == local_port(after)
        # an error the app answers itself (404) keeps it too
        assert client.get(f"{API}/models/nosuch").status_code == 404
        assert local_port(client.get(f"{API}/health")) == local_port(before)
