"""Phases, progress and stop requests of long runs (training, inference, the service's training jobs).

A run goes through named phases (``loading``, ``feature extraction``, ``fit``, ``calibration``, ``test``,
``report``, ``saving``; ``inference``). Long loops call :meth:`Phase.advance`, which

* draws the phase's progress bar on stderr (CLI only; ``TQDM_DISABLE=1`` hides it),
* tells an observer the phase and how far it is (the service's job rows show it),
* raises :class:`~hamacho.errors.Interrupted` once a stop was requested.

Stopping is cooperative: Ctrl-C (or SIGTERM) only sets a flag (:func:`stop_on_signals`), and the run
stops at the next ``advance`` or phase start. So it never stops half-way through a library call, a
thread pool, Lightning's loop or a file write, and cleanup code runs as written; a second Ctrl-C
raises ``KeyboardInterrupt`` at once, for a run stuck in a long call.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from hamacho.errors import Interrupted

Observer = Callable[[str, int, "int | None"], None]  # (phase, steps done, total steps or None)


class RunControl:
    """The progress and stop state of one run.

    Args:
        bars: Draw progress bars on stderr.
        observer: Called with ``(phase, done, total)`` at every phase start and step.
        stop_note: What a stop leaves behind, appended to the :class:`Interrupted` message, e.g.
            ``"no model file was written"``.
    """

    def __init__(self, bars: bool = False, observer: Observer | None = None, stop_note: str = "") -> None:
        self.bars = bars
        self.observer = observer
        self.stop_note = stop_note
        self.current = "start-up"
        self.stop_signal: int | None = None
        self.seconds: dict[str, float] = {}  # wall seconds of each finished phase
        self._stop = threading.Event()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called."""
        return self._stop.is_set()

    def request_stop(self, signum: int | None = None) -> None:
        """Ask the run to stop at its next step (thread- and signal-safe)."""
        if self.stop_signal is None:
            self.stop_signal = signum
        self._stop.set()

    def check(self) -> None:
        """Raise :class:`Interrupted` if a stop was requested."""
        if self._stop.is_set():
            note = f"; {self.stop_note}" if self.stop_note else ""
            raise Interrupted(f"Interrupted during {self.current}{note}.", self.stop_signal)

    @contextlib.contextmanager
    def phase(self, name: str, total: int | None = None, unit: str = "images", bar: bool = True) -> Iterator[Phase]:
        """Enter a phase (after checking for a stop request); its wall time goes to :attr:`seconds`.

        Args:
            name: Shown on the bar and in the stop message.
            total: Steps expected, when known (see :meth:`Phase.set_total`).
            unit: What a step is, for the bar.
            bar: Draw a bar (when the control draws bars); off for phases that take no noticeable time.
        """
        self.check()
        self.current = name
        phase = Phase(self, name, total, unit, bar and self.bars)
        start = time.perf_counter()
        try:
            yield phase
        finally:
            phase.close()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class Phase:
    """One phase of a run: counts steps, draws its bar, reports to the observer, honours stop requests."""

    def __init__(self, control: RunControl, name: str, total: int | None, unit: str, bar: bool = False) -> None:
        self.control = control
        self.bar = bar
        self.name = name
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._unit = unit
        self._notify()

    def set_total(self, total: int) -> None:
        """Set (or change) the number of steps expected."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()
        self._notify()

    def advance(self, steps: int = 1) -> None:
        """Count ``steps`` done; raises :class:`Interrupted` if a stop was requested."""
        self.done += steps
        if self.bar:
            if self._bar is None:
                self._bar = _new_bar(self.name, self.total, self._unit)
            self._bar.update(steps)
        self._notify()
        self.control.check()

    def close(self) -> None:
        """Remove the bar (the phase is over)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _notify(self) -> None:
        if self.control.observer is not None:
            self.control.observer(self.name, self.done, self.total)


NULL_CONTROL = RunControl()


def null_phase(name: str = "work") -> Phase:
    """A phase that draws nothing and is never stopped: for library calls outside a run."""
    return Phase(NULL_CONTROL, name, None, "steps")


def _new_bar(name: str, total: int | None, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name.capitalize(), unit=f" {unit}", leave=False, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


@contextlib.contextmanager
def stop_on_signals(control: RunControl, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """While inside, Ctrl-C (and SIGTERM) request a stop of ``control``; a second one raises KeyboardInterrupt.

    Only the main thread can install signal handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if control.stop_requested:
            raise KeyboardInterrupt
        control.request_stop(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
