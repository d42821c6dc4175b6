"""Every operation of the OpenAPI schema, fed generated input (schemathesis): never a 500, errors are one line.

Bounded for CI: a few dozen examples per operation and generation mode, no deadline (a busy machine is slow,
not wrong). The app and its data folder are made when the test runs, and the operations are driven with
schemathesis' strategies and hypothesis directly (no pytest plugin, whose fixture support follows pytest's
internals).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig

EXAMPLES = 50


def _strategy(operation):
    """Valid and invalid requests for one operation."""
    return st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))


def test_no_input_gives_a_server_error(tmp_path):
    app = create_app(ServiceConfig(data_dir=tmp_path / "data", allowed_roots=[tmp_path / "import"]), start_jobs=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30  # every route of the API, not a schema that failed to load

    for operation in operations:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large])
        @given(case=_strategy(operation))
        def answers_without_a_server_error(case):
            response = case.call()
            where = f"{case.method} {case.formatted_path}"
            assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
            if response.status_code >= 400:
                body = response.json()
                # one line, and with it the files a request skipped when it kept none (docs/service.md)
                assert set(body) - {"skipped"} == {"error"} and isinstance(body["error"], str), (where, body)
                assert "\n" not in body["error"], (where, body)

        answers_without_a_server_error()
