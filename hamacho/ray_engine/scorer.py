"""The scoring actor: a Predictor opened once per actor, then blocks of image paths decoded and scored.

Ray Data creates the pool (:mod:`hamacho.ray_engine.pipeline`) and sends each actor blocks of rows
``index, path, label, mask``. A block holds whole model batches of the run (images ``k*B .. k*B+B-1``
for the batch size ``B``), so an actor scores exactly the batches the local engine would, and the
scores are the same to the last bit. Decoding runs here, on the actor's own decoding threads, as in
:meth:`hamacho.predictor.Predictor.score_samples`; no image travels to or from the driver unless the
run writes pictures (:mod:`hamacho.ray_engine.columns`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hamacho.data.dataset import iter_batches
from hamacho.data.discovery import Sample
from hamacho.predictor import Predictor
from hamacho.ray_engine.columns import to_columns
from hamacho.resources import peak_rss_mb


def batch_runs(indices: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` positions of the runs of ``indices`` in one model batch each (``index // B``)."""
    if len(indices) == 0:
        return []
    batch = indices // batch_size
    cuts = [0, *(np.flatnonzero(np.diff(batch)) + 1).tolist(), len(indices)]
    return list(itertools.pairwise(cuts))


def _sample(block: dict[str, np.ndarray], row: int) -> Sample:
    """Row ``row`` of a block as the dataset reads it (path, label, mask; names are the driver's business)."""
    label, mask = int(block["label"][row]), str(block["mask"][row])
    return Sample(Path(str(block["path"][row])), "", None if label < 0 else label, "", Path(mask) if mask else None)


class BlockScorer:
    """A Ray Data actor (``map_batches`` callable class): the model once, then any number of blocks.

    Args:
        model_path: ``model.pt`` or an export folder, at a path every node reads.
        batch_size: Images per forward pass (the run's; the blocks are cut to it).
        image_cut: Normalized OK/NG cut.
        pixel_cut: Normalized mask cut.
        arrays: Send the frames, maps and masks back too (pictures, report, pixel metrics).
        device: Where the model runs (``cpu``, or ``auto`` for the actor's GPU).
    """

    def __init__(self, model_path: str, batch_size: int, image_cut: float, pixel_cut: float, arrays: bool,
                 device: str = "cpu") -> None:
        self.predictor = Predictor.load(model_path, device=device, batch_size=batch_size)
        self.batch_size = batch_size
        self.image_cut = image_cut
        self.pixel_cut = pixel_cut
        self.arrays = arrays

    def __call__(self, block: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Score one block, one model batch at a time; yields each batch's columns with this actor's pid and
        peak memory (MiB)."""
        indices = np.asarray(block["index"], dtype=np.int64)
        for start, stop in batch_runs(indices, self.batch_size):
            samples = [_sample(block, i) for i in range(start, stop)]
            batch = next(iter_batches(samples, self.predictor.framing, len(samples)))
            batch.indices = indices[start:stop].copy()
            scored = self.predictor.score_batch(batch, self.image_cut, self.pixel_cut)
            columns = to_columns(scored, self.arrays)
            columns["pid"] = np.full(stop - start, os.getpid(), dtype=np.int64)
            columns["peak_rss_mb"] = np.full(stop - start, peak_rss_mb(), dtype=np.float64)
            yield columns
