"""Test seam: a run that pauses inside a chosen phase until it is told to stop, so a test can stop it there
without racing it, however busy the machine is.

With ``HAMACHO_PAUSE_AT=<phase>`` and ``HAMACHO_PAUSE_FILE=<path>``, the first step of that phase writes
the file (the phase's name, written whole) and waits, at most five minutes, for a stop request; the
step then raises :class:`~hamacho.errors.Interrupted` as any stopped run does. Nothing of this is in
Hamacho itself: processes started by tests load it through ``sitecustomize.py`` beside this file (the
folder on ``PYTHONPATH``: :func:`tests.conftest.pause_env`), in-process tests through :func:`pausing`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PAUSE_SECONDS = 300.0


def pausing(advance: Callable[..., None]) -> Callable[..., None]:
    """``Phase.advance`` that pauses once in the phase named by ``HAMACHO_PAUSE_AT``."""
    from hamacho.files import atomic_write_text

    def advance_then_pause(self: Any, steps: int = 1) -> None:
        advance(self, steps)
        if getattr(self, "_test_paused", False) or os.environ.get("HAMACHO_PAUSE_AT") != self.name:
            return
        self._test_paused = True
        marker = os.environ.get("HAMACHO_PAUSE_FILE")
        if marker:
            atomic_write_text(Path(marker), f"{self.control.current}\n")
        deadline = time.monotonic() + PAUSE_SECONDS
        while not self.control.stop_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        self.control.check()

    return advance_then_pause


def install() -> None:
    """Patch :class:`hamacho.progress.Phase` in this process."""
    from hamacho.progress import Phase

    Phase.advance = pausing(Phase.advance)  # type: ignore[method-assign]
