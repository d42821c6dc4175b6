"""Atomic file writing: a temporary file beside the target, then a rename. Readers never see half a file.

Used by the model file, training and inference results and the report alike; it knows nothing about them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hamacho.errors import HamachoError


@contextlib.contextmanager
def atomic_path(
    path: str | Path, durable: bool = False, before_commit: Callable[[], None] | None = None
) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path`` in one rename.

    On any exception (including Ctrl-C) the temporary file is removed and ``path`` is untouched.

    Args:
        path: The file to write.
        durable: Also flush the data to disk before the rename (for model files: a power cut then
            leaves the old file or the new one, never an empty one).
        before_commit: Called after the data is written, just before the rename; if it raises (a stop
            request, say), the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise HamachoError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        if before_commit is not None:
            before_commit()
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise HamachoError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON (indented, NaN written as null) atomically."""
    atomic_write_text(path, json.dumps(_clean(data), indent=2) + "\n")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV file atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Encode an RGB (or single-channel) uint8 image as PNG and write it atomically."""
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise HamachoError(f"cannot encode image {path}")
    atomic_write_bytes(path, encoded.tobytes())


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Check that ``path`` is, or can be created as, a writable folder, without creating anything.

    Nothing is created until the first result is written, so a run that fails early leaves no trace.

    Raises:
        HamachoError: When it (or the nearest existing folder above it) is a file or not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HamachoError(f"{what} is a file, expected a folder: {path}")
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise HamachoError(f"cannot create {what} {path}: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise HamachoError(f"cannot write to {what} {path}: permission denied on {probe}")
    return path
