"""Phases, progress reports and cooperative stopping of long runs."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from hamacho.errors import Interrupted
from hamacho.progress import Phase, RunControl, stop_on_signals
from tests.conftest import SEAMS


def test_phases_report_progress_and_record_their_time():
    seen = []
    control = RunControl(observer=lambda phase, done, total: seen.append((phase, done, total)))
    with control.phase("fit", total=3) as phase:
        phase.advance()
        phase.set_total(4)
        phase.advance(3)
    with control.phase("test") as phase:
        phase.advance(2)
    assert seen == [("fit", 0, 3), ("fit", 1, 3), ("fit", 1, 4), ("fit", 4, 4), ("test", 0, None), ("test", 2, None)]
    assert set(control.seconds) == {"fit", "test"} and all(s >= 0 for s in control.seconds.values())


def test_a_stop_request_ends_the_run_at_its_next_step():
    control = RunControl(stop_note="no model file was written")
    steps = 0
    with pytest.raises(Interrupted) as info, control.phase("feature extraction", total=10) as phase:
        for _ in range(10):
            steps += 1
            if steps == 3:
                threading.Thread(target=control.request_stop).start()  # from another thread (a service job)
                threading.Event().wait(0.05)
            phase.advance()
    assert steps == 3
    assert str(info.value) == "Interrupted during feature extraction; no model file was written."
    assert info.value.signum is None
    with pytest.raises(Interrupted), control.phase("fit"):  # and no later phase starts
        pass


def test_ctrl_c_only_requests_a_stop_and_a_second_one_interrupts_at_once():
    control = RunControl()
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals(control):
        os.kill(os.getpid(), signal.SIGINT)
        assert control.stop_requested and control.stop_signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert signal.getsignal(signal.SIGINT) is before


def test_the_pause_hook_waits_inside_the_named_phase(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SEAMS))
    import hamacho_pause_hook  # tests/seams

    marker = tmp_path / "paused"
    monkeypatch.setattr(Phase, "advance", hamacho_pause_hook.pausing(Phase.advance))
    monkeypatch.setenv("HAMACHO_PAUSE_AT", "test")
    monkeypatch.setenv("HAMACHO_PAUSE_FILE", str(marker))
    control = RunControl()

    def stop_when_paused():
        while not marker.exists():
            threading.Event().wait(0.01)
        control.request_stop()

    with control.phase("calibration") as phase:
        phase.advance()  # another phase: no pause
    assert not marker.exists()
    helper = threading.Thread(target=stop_when_paused)
    helper.start()
    with pytest.raises(Interrupted, match="Interrupted during test"), control.phase("test") as phase:
        phase.advance()
    helper.join()
    assert marker.read_text() == "test\n"
