"""The Ray Data pipeline: image paths in blocks of whole model batches, a fixed pool of scoring actors,
results back in input order.

Blocks: each holds ``K`` consecutive model batches still to score (``K`` from 1 to :data:`MOST_BATCHES`,
so that every actor gets several blocks), as an Arrow table of ``index, path, label, mask``; only the
paths travel, the actors decode. A block is also the unit that runs again when an actor dies: Ray Data
restarts the actor (``max_restarts=-1``) and resubmits its unfinished blocks (``max_task_retries=-1``);
the outputs of a block come back once, from the attempt that finished.

Order: ``preserve_order`` makes the stream come back in the blocks' order, so rows, examples and metrics
are gathered in the local engine's order. Back-pressure: Ray Data's streaming executor launches blocks
only while the outputs waiting for the driver stay within its object store budget, so a slow driver
(writing pictures) holds the actors rather than filling memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from hamacho.data.discovery import Sample
from hamacho.predictor import ScoredBatch
from hamacho.ray_engine.columns import from_columns
from hamacho.ray_engine.options import RayOptions
from hamacho.ray_engine.scorer import BlockScorer

MOST_BATCHES = 8  # model batches per block at most (at 8 images a batch: 64 images, a few seconds of work)
BLOCKS_PER_ACTOR = 4  # at least this many blocks per actor when there are enough batches


@dataclass
class ScoringJob:
    """What the actors are asked to do.

    Attributes:
        model_path: Absolute path of the model file or export folder.
        batch_size: Images per forward pass.
        image_cut: Normalized OK/NG cut.
        pixel_cut: Normalized mask cut.
        arrays: Whether frames and maps come back (pictures, report, pixel metrics).
    """

    model_path: str
    batch_size: int
    image_cut: float
    pixel_cut: float
    arrays: bool


def batches_per_block(batches: int, actors: int) -> int:
    """``K``: enough blocks for every actor to have :data:`BLOCKS_PER_ACTOR`, at most :data:`MOST_BATCHES`."""
    return max(1, min(MOST_BATCHES, math.ceil(batches / (actors * BLOCKS_PER_ACTOR))))


def input_blocks(samples: Sequence[Sample], todo: Sequence[int], batch_size: int, per_block: int) -> list:
    """Arrow tables of the model batches ``todo`` (batch numbers, ascending), ``per_block`` batches each.

    Every block but the last holds ``per_block * batch_size`` images: only the run's last batch is short.
    """
    import pyarrow as pa

    tables = []
    for first in range(0, len(todo), per_block):
        indices = [i for number in todo[first:first + per_block]
                   for i in range(number * batch_size, min(len(samples), (number + 1) * batch_size))]
        chosen = [samples[i] for i in indices]
        tables.append(pa.table({
            "index": pa.array(indices, pa.int64()),
            "path": pa.array([str(s.path) for s in chosen], pa.string()),
            "label": pa.array([-1 if s.label is None else s.label for s in chosen], pa.int64()),
            "mask": pa.array(["" if s.mask_path is None else str(s.mask_path) for s in chosen], pa.string()),
        }))
    return tables


def stream_scored(job: ScoringJob, samples: Sequence[Sample], todo: Sequence[int], options: RayOptions,
                  actors: int) -> Iterator[tuple[ScoredBatch, np.ndarray, np.ndarray]]:
    """Score the batches ``todo`` on a pool of ``actors`` actors; yields, in order, each output block as a
    :class:`ScoredBatch` with its actors' pids and peak memory (MiB) per image.

    Closing the iterator (a stop, an error) ends the pipeline and frees its actors.
    """
    import ray

    per_block = batches_per_block(len(todo), actors)
    dataset = ray.data.from_arrow(input_blocks(samples, todo, job.batch_size, per_block))
    scored = dataset.map_batches(
        BlockScorer,
        fn_constructor_kwargs={"model_path": job.model_path, "batch_size": job.batch_size,
                               "image_cut": job.image_cut, "pixel_cut": job.pixel_cut, "arrays": job.arrays,
                               "device": options.device},
        batch_size=per_block * job.batch_size,  # one block per call: blocks are cut to it
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=options.cpus_per_actor,
        num_gpus=options.gpus_per_actor or None,
        batch_format="numpy",
    )
    scored.context.execution_options.preserve_order = True
    blocks = scored.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)
    try:
        for block in blocks:
            yield from_columns(block), np.asarray(block["pid"]), np.asarray(block["peak_rss_mb"])
    finally:
        getattr(blocks, "close", lambda: None)()  # stops Ray Data's executor and frees the actors now
