"""Models kept in memory for predictions: at most ``max_loaded``, the least recently used unloaded first.

Requests run in parallel threads (decoding, resizing, maps at full size, pictures); at most one model
forward per CPU core runs at a time in the process (:class:`BoundedRuntime`), so a burst of requests
cannot pile dozens of forwards (and their memory) onto the cores. With ``benchmarks/serve_load.py``
(PaDiM resnet18, 256 px, 900x900 PNG, 2 busy cores, OpenMP waiting passively, see ``server.py``):
one forward at a time gave 10.7 img/s to 8 clients, at most two gave 19.4 img/s (p50 733 -> 403 ms),
and a lone request took 69 ms either way. Loading
happens outside the cache's lock (one load per model at a time). A model being used by a request counts
as busy (:meth:`PredictorCache.busy`): it is not deleted under the request's feet, and an unloaded one
finishes the requests it has.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hamacho.predictor import Predictor
from hamacho.runtimes import Runtime, RuntimeOutput, open_model


class BoundedRuntime:
    """A runtime whose :meth:`run` holds a slot of ``slots``: at most that many forwards of the models
    sharing it run at once.

    Args:
        inner: The runtime to wrap.
        slots: Shared by the wrapped runtimes of one process.
    """

    def __init__(self, inner: Runtime, slots: threading.Semaphore) -> None:
        self.inner = inner
        self.slots = slots
        self.name = inner.name

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.inner.input_size

    @property
    def calibration(self) -> dict[str, float]:
        """The wrapped runtime's calibration."""
        return self.inner.calibration

    def run(self, images: np.ndarray) -> RuntimeOutput:
        """Run the wrapped model once a slot is free."""
        with self.slots:
            return self.inner.run(images)


def load_predictor(path: Path, device: str, slots: threading.Semaphore) -> Predictor:
    """A Predictor for a model file or export folder whose forwards take a slot of ``slots``."""
    opened = open_model(path, device)
    return Predictor(BoundedRuntime(opened.runtime, slots), opened.settings, None, opened.metadata, opened.path,
                     opened.display_name, opened.valid_area)


@dataclass
class _Entry:
    """A loaded model: its Predictor, when it was last used, and the file and memory epoch it was loaded at."""

    predictor: Predictor
    last_used: float
    path: Path
    epoch: int


class PredictorCache:
    """Loaded models by id, least recently used first.

    Each entry remembers the file it was loaded from and the model row's ``memory_epoch`` then, and a request
    names both as its model row has them now: a row that changed (another replica deleted the model and a new
    one took its id: SQLite reuses ids; or "Unload" counted the epoch up on some replica) is loaded again,
    never answered with the old copy. A deleted row is found missing before the cache is asked.

    Args:
        max_loaded: Models kept at once (at least 1).
        device: Where models run.
    """

    def __init__(self, max_loaded: int, device: str = "auto") -> None:
        self.max_loaded = max(1, max_loaded)
        self.device = device
        self._loaded: OrderedDict[int, _Entry] = OrderedDict()
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}
        self._forward = threading.Semaphore(os.cpu_count() or 1)  # forwards at once (module docstring)
        self.changes = 0  # counts up whenever a model is loaded or released (replicas.py publishes then)

    def load(self, model_id: int, path: Path, epoch: int = 0) -> Predictor:
        """The model's Predictor, loaded now if it is not in memory from ``path`` at ``epoch`` (then the least
        recently used may go)."""
        with self._lock:
            if self._holds(model_id, path, epoch):
                return self._touch(model_id)
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:
            with self._lock:
                if self._holds(model_id, path, epoch):
                    return self._touch(model_id)
            try:
                predictor = load_predictor(path, self.device, self._forward)
            finally:
                with self._lock:
                    self._loading.pop(model_id, None)
            with self._lock:
                self.changes += 1
                self._loaded[model_id] = _Entry(predictor, time.time(), path, epoch)
                self._loaded.move_to_end(model_id)
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
                return predictor

    def unload(self, model_id: int) -> bool:
        """Release a model; True if it was loaded."""
        with self._lock:
            self.changes += 1
            return self._loaded.pop(model_id, None) is not None

    def drop(self, model_ids: set[int]) -> list[int]:
        """Release the models of ``model_ids`` that are loaded; return those released."""
        with self._lock:
            self.changes += 1
            return [key for key in list(self._loaded) if key in model_ids and self._loaded.pop(key)]

    @contextlib.contextmanager
    def using(self, model_id: int, path: Path, epoch: int = 0) -> Iterator[Predictor]:
        """The model's Predictor (see :meth:`load`), marked busy while the block runs."""
        with self._lock:
            self._users[model_id] = self._users.get(model_id, 0) + 1
        try:
            yield self.load(model_id, path, epoch)
        finally:
            with self._lock:
                self._users[model_id] -= 1
                if not self._users[model_id]:
                    del self._users[model_id]

    def busy(self, model_id: int) -> int:
        """Requests using the model now."""
        with self._lock:
            return self._users.get(model_id, 0)

    def loaded(self) -> list[dict[str, Any]]:
        """``[{"id", "last_used", "epoch"}]`` of the loaded models, most recently used first."""
        with self._lock:
            return [{"id": key, "last_used": entry.last_used, "epoch": entry.epoch}
                    for key, entry in reversed(self._loaded.items())]

    def has_room(self) -> bool:
        """True when a model can be loaded without unloading another."""
        with self._lock:
            return len(self._loaded) < self.max_loaded

    def is_loaded(self, model_id: int) -> bool:
        """True when the model is in memory."""
        with self._lock:
            return model_id in self._loaded

    def close(self) -> None:
        """Unload every model (server shutdown)."""
        with self._lock:
            self.changes += 1
            self._loaded.clear()

    def _holds(self, model_id: int, path: Path, epoch: int) -> bool:
        entry = self._loaded.get(model_id)
        return entry is not None and entry.path == path and entry.epoch == epoch

    def _touch(self, model_id: int) -> Predictor:
        entry = self._loaded[model_id]
        entry.last_used = time.time()
        self._loaded.move_to_end(model_id)
        return entry.predictor
