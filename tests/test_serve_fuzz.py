"""Every operation of the OpenAPI schema, fed generated input (schemathesis): never a 500, errors are one line.

Bounded for CI: a few dozen examples per operation, no deadline (a busy machine is slow, not wrong).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings

from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    """The app's OpenAPI schema, over a data folder made when the tests run (not at import)."""
    data = tmp_path_factory.mktemp("fuzz")
    app = create_app(ServiceConfig(data_dir=data / "data", allowed_roots=[data / "import"]), start_jobs=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_no_input_gives_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"], body
