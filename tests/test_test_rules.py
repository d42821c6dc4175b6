"""Rules of the test suite itself: a missing component skips with its reason, and fails under CI=true."""

from __future__ import annotations

import pytest

from tests.conftest import require_component


def test_a_missing_component_skips_with_its_reason(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium on PATH"):
        require_component(False, "no chromium on PATH")
    require_component(True, "never shown")  # present: nothing happens


def test_under_ci_a_missing_component_fails(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no chromium on PATH; CI=true, so .ci/run must provide it"):
        require_component(False, "no chromium on PATH")
