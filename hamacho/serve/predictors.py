"""Models kept in memory for predictions: at most ``max_loaded``, the least recently used unloaded first.

A :class:`~hamacho.predictor.Predictor` is thread-safe, so requests share one per model. Loading happens
outside the cache's lock (one load per model at a time), so a slow load does not hold up predictions
with other models. A model being used by a request counts as busy (:meth:`PredictorCache.busy`): it is
not deleted under the request's feet, and an unloaded one stays alive until its requests finish.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hamacho.predictor import Predictor


class PredictorCache:
    """Loaded models by id, least recently used first.

    Args:
        max_loaded: Models kept at once (at least 1).
        device: Where models run.
    """

    def __init__(self, max_loaded: int, device: str = "auto") -> None:
        self.max_loaded = max(1, max_loaded)
        self.device = device
        self._loaded: OrderedDict[int, tuple[Predictor, float]] = OrderedDict()
        self._users: dict[int, int] = {}
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}

    def load(self, model_id: int, path: Path) -> Predictor:
        """The model's Predictor, loaded now if it is not in memory (then the least recently used may go)."""
        with self._lock:
            if model_id in self._loaded:
                return self._touch(model_id)
            gate = self._loading.setdefault(model_id, threading.Lock())
        with gate:
            with self._lock:
                if model_id in self._loaded:
                    return self._touch(model_id)
            predictor = Predictor.load(path, device=self.device)
            with self._lock:
                self._loaded[model_id] = (predictor, time.time())
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
                self._loading.pop(model_id, None)
                return predictor

    def unload(self, model_id: int) -> bool:
        """Release a model; True if it was loaded."""
        with self._lock:
            return self._loaded.pop(model_id, None) is not None

    @contextlib.contextmanager
    def using(self, model_id: int, path: Path) -> Iterator[Predictor]:
        """The model's Predictor, marked busy while the block runs."""
        with self._lock:
            self._users[model_id] = self._users.get(model_id, 0) + 1
        try:
            yield self.load(model_id, path)
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
        """``[{"id", "last_used"}]`` of the loaded models, most recently used first."""
        with self._lock:
            return [{"id": key, "last_used": stamp} for key, (_p, stamp) in reversed(self._loaded.items())]

    def is_loaded(self, model_id: int) -> bool:
        """True when the model is in memory."""
        with self._lock:
            return model_id in self._loaded

    def _touch(self, model_id: int) -> Predictor:
        predictor, _ = self._loaded[model_id]
        self._loaded[model_id] = (predictor, time.time())
        self._loaded.move_to_end(model_id)
        return predictor
