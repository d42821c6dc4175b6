"""The Ray engine's checkpoint: rows saved as they come, so a stopped run continues with ``--resume``.

``<save path>/results.parts/`` holds ``run.json`` (what the run scores: the model's digest, the images,
batch size and cuts) and Parquet parts of finished rows (``part-<first index>.parquet``, each whole
model batches, written atomically every :data:`FLUSH_ROWS` rows or :data:`FLUSH_SECONDS` seconds and
when the run stops or fails). ``--resume`` reads them and scores only the batches no part holds; at
the end the parts are merged by image index into the rows of results.csv (each image once, in the
run's order) and the folder is removed. A run without ``--resume`` refuses to overwrite a folder
that holds an unfinished run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamacho.errors import ConfigError, HamachoError
from hamacho.files import write_json
from hamacho.inference import InferenceSetup
from hamacho.ray_engine.parquet import rows_table, table_rows, write_table
from hamacho.results.types import ImageResult
from hamacho.runtimes.export_folder import sha256_file

PARTS = "results.parts"
IDENTITY = "run.json"
FLUSH_ROWS = 2048
FLUSH_SECONDS = 30.0


def run_identity(setup: InferenceSetup) -> dict[str, Any]:
    """What a resumed run must share with the one it continues: the model's bytes, the images, batches, cuts."""
    path = setup.predictor.path
    assert path is not None
    model_file = path / "metadata.json" if path.is_dir() else path  # an export's metadata: its files' digests
    images = hashlib.sha256()
    for sample in setup.samples:
        images.update(f"{sample.path}\0{sample.label}\0{sample.mask_path}\n".encode())
    return {"model": str(path.resolve()), "model_sha256": sha256_file(model_file),
            "images": len(setup.samples), "images_sha256": images.hexdigest(), "batch_size": setup.predictor.batch_size,
            "image_threshold": setup.image_threshold, "pixel_threshold": setup.pixel_threshold}


class Checkpoint:
    """The parts folder of one run (see the module docstring); use :meth:`open`.

    Args:
        folder: ``<save path>/results.parts``.
        identity: :func:`run_identity` of the run.
        batch_size: Images per model batch.
        total: Images in the run.
        done: Indices of the images already saved.
    """

    def __init__(self, folder: Path, identity: dict[str, Any], batch_size: int, total: int,
                 done: np.ndarray) -> None:
        self.folder = folder
        self.identity = identity
        self.batch_size = batch_size
        self.total = total
        self.done = done
        self._rows: list[ImageResult] = []
        self._indices: list[int] = []
        self._last_flush = time.monotonic()
        self._last_index = -1

    @classmethod
    def open(cls, setup: InferenceSetup, resume: bool, log: Callable[[str], None]) -> Checkpoint:
        """The checkpoint of a run into ``setup.output_dir``: empty, or with ``resume`` what was saved there.

        Raises:
            ConfigError: An unfinished run is there and ``resume`` is off, or it scored something else.
        """
        folder = setup.output_dir / PARTS
        identity = run_identity(setup)
        done = np.zeros(0, dtype=np.int64)
        if _parts(folder):  # a folder with no part yet saved nothing: it is started again
            if not resume:
                raise ConfigError(f"{folder} holds an unfinished run's results: add --resume to continue it, or "
                                  "delete that folder to start again")
            saved = _read_identity(folder)
            changed = [key for key in identity if saved.get(key) != identity[key]]
            if changed:
                raise ConfigError(f"--resume: the unfinished run in {folder} had another {', '.join(changed)}; run "
                                  "it with what it had, or delete that folder to start again")
            done = np.unique(np.concatenate([_read_part(p, rows=False)[0] for p in _parts(folder)] or [done]))
            if len(done) and (done[0] < 0 or done[-1] >= len(setup.samples)):
                raise ConfigError(f"--resume: {folder} holds images this run does not have; delete it to start "
                                  "again")
            log(f"resuming: {len(done)} of {len(setup.samples)} image(s) already scored in {folder}")
        elif resume:
            log(f"nothing to resume in {setup.output_dir}; scoring every image")
        return cls(folder, identity, setup.predictor.batch_size, len(setup.samples), done)

    def todo(self) -> list[int]:
        """Numbers of the model batches that are not saved whole (all of them, on a fresh run)."""
        batches = -(-self.total // self.batch_size)
        saved = np.bincount(self.done // self.batch_size, minlength=batches)
        sizes = np.minimum(self.batch_size, self.total - np.arange(batches) * self.batch_size)
        return np.flatnonzero(saved < sizes).tolist()

    def start(self) -> None:
        """Create the folder and its ``run.json`` (before the first image is scored)."""
        write_json(self.folder / IDENTITY, self.identity)

    def add(self, indices: Sequence[int], rows: Sequence[ImageResult]) -> None:
        """Keep the rows of scored images; saved in parts as they accumulate. Repeated indices are ignored
        (an image is saved once, however many times it was scored)."""
        for index, row in zip(indices, rows):
            if index > self._last_index:  # the stream comes in order
                self._indices.append(int(index))
                self._rows.append(row)
                self._last_index = int(index)
        if len(self._rows) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Save the rows kept so far as one part (nothing when there are none)."""
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        part = self.folder / f"part-{self._indices[0]:012d}.parquet"
        write_table(part, rows_table(self._rows, self._indices))
        self._rows, self._indices = [], []

    def close(self) -> None:
        """Save what is kept; a folder that holds no part then is removed (there is nothing to resume)."""
        self.flush()
        if not _parts(self.folder):
            self.remove()

    def merged_rows(self) -> list[ImageResult]:
        """Every image's row from the parts, in the run's order, each once.

        Raises:
            HamachoError: When the parts do not hold every image (they were changed by hand).
        """
        indices, rows = [], []
        for path in _parts(self.folder):
            part_indices, part_rows = _read_part(path)
            indices.append(part_indices)
            rows.extend(part_rows)
        order = np.argsort(np.concatenate(indices or [np.zeros(0, np.int64)]), kind="stable")
        flat = np.concatenate(indices or [np.zeros(0, np.int64)])[order]
        keep = np.ones(len(flat), dtype=bool)
        keep[1:] = flat[1:] != flat[:-1]
        if int(keep.sum()) != self.total or (self.total and (flat[0] != 0 or flat[-1] != self.total - 1)):
            raise HamachoError(f"{self.folder} does not hold every image's result ({int(keep.sum())} of "
                               f"{self.total}); delete it and run again")
        return [rows[i] for i in order[keep]]

    def remove(self) -> None:
        """Delete the parts folder (results.csv and results.parquet hold everything now)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def _read_identity(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / IDENTITY).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: cannot read {folder / IDENTITY} ({exc}); delete {folder} to start "
                          "again") from exc


def _read_part(path: Path, rows: bool = True) -> tuple[np.ndarray, list[ImageResult]]:
    """A part's image indices and (with ``rows``) its rows."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=None if rows else ["index"])
    except Exception as exc:  # a damaged part: pyarrow's errors have no common base beyond Exception
        raise ConfigError(f"--resume: cannot read {path} ({exc}); delete {path.parent} to start "
                          "again") from exc
    return table.column("index").to_numpy().astype(np.int64), table_rows(table) if rows else []
