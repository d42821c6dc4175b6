"""Test seam: a Ray actor that dies at a chosen point, once, so a test can check that Ray Data replaces it
and runs its blocks again, however busy the machine is.

tests/test_ray_engine.py starts its Ray with this folder on the workers' ``PYTHONPATH``, ``HAMACHO_KILL_DIR``
set and :func:`install` as the workers' setup hook. A test then writes ``<HAMACHO_KILL_DIR>/after`` holding a
number N: the first worker process whose Predictor has scored N images since ends itself (``os._exit``) right
after scoring its N-th, before the batch is returned, and marks ``<HAMACHO_KILL_DIR>/killed`` (created
exclusively, so exactly one process dies, once). While ``<HAMACHO_KILL_DIR>/unopenable`` exists, the workers'
``Predictor.load`` raises :class:`~hamacho.errors.ModelFileError` with its text instead (a node that cannot
open the model). Nothing of this is in Hamacho itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV = "HAMACHO_KILL_DIR"


def _claim(marker: Path) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def install() -> None:
    """Patch :meth:`hamacho.predictor.Predictor.score_batch` in this worker (when ``HAMACHO_KILL_DIR`` is set)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    from hamacho.predictor import Predictor

    original = Predictor.score_batch
    scored = 0

    def score_then_maybe_die(self: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal scored
        result = original(self, batch, *args, **kwargs)
        request = Path(folder) / "after"
        if request.is_file():
            scored += len(batch)
            if scored >= int(request.read_text()) and _claim(Path(folder) / "killed"):
                os._exit(1)
        return result

    Predictor.score_batch = score_then_maybe_die  # type: ignore[method-assign]
    load = Predictor.load.__func__  # type: ignore[attr-defined]

    def load_unless_unopenable(cls: Any, *args: Any, **kwargs: Any) -> Any:
        unopenable = Path(folder) / "unopenable"
        if unopenable.is_file():
            from hamacho.errors import ModelFileError

            raise ModelFileError(unopenable.read_text())
        return load(cls, *args, **kwargs)

    Predictor.load = classmethod(load_unless_unopenable)  # type: ignore[method-assign, assignment]
