"""A scored batch as Ray Data columns (one row per image) and back, so the driver gets the local engine's
:class:`~hamacho.predictor.ScoredBatch` and feeds it to the same collector and picture writer.

Two sizes: with ``arrays`` (pictures, the report, or masks for pixel metrics) every array of the batch
travels (image, maps, masks, inspected area, placement: about 1 MB an image at 256 px); without, only
what a results.csv row needs (index, label, scores, decision, error: a few dozen bytes), and the batch
the driver rebuilds has empty (0 x 0) frames and no pixel labels, which the collector then never reads.
"""

from __future__ import annotations

import math

import numpy as np

from hamacho.data.batch import Batch
from hamacho.data.geometry import Placement
from hamacho.predictor import ScoredBatch

PLACEMENT_FIELDS = 13  # original (2), box (4), content (4), circle (3, NaN when none); NaN row: no placement


def _placement_row(placement: Placement | None) -> list[float]:
    if placement is None:
        return [math.nan] * PLACEMENT_FIELDS
    circle = list(placement.circle) if placement.circle is not None else [math.nan] * 3
    return [*placement.original, *placement.box, *placement.content, *circle]


def _placement(row: np.ndarray) -> Placement | None:
    if math.isnan(row[0]):
        return None
    ints = [int(v) for v in row[:10]]
    circle = None if math.isnan(row[10]) else (float(row[10]), float(row[11]), float(row[12]))
    return Placement((ints[0], ints[1]), (ints[2], ints[3], ints[4], ints[5]),
                     (ints[6], ints[7], ints[8], ints[9]), circle)


def to_columns(scored: ScoredBatch, arrays: bool) -> dict[str, np.ndarray]:
    """One row per image of a scored batch (``batch.indices`` are the images' places in the run).

    Args:
        scored: What the Predictor made of a batch.
        arrays: Include the frames, maps and masks (see the module docstring).
    """
    batch = scored.batch
    columns = {
        "index": batch.indices.astype(np.int64),
        "label": batch.labels.astype(np.int64),
        "valid": batch.valid.astype(bool),
        "error": np.array(batch.errors, dtype=object),
        "raw_score": scored.raw_scores.astype(np.float32),
        "score": scored.scores.astype(np.float32),
        "is_ng": scored.is_ng.astype(bool),
    }
    if arrays:
        columns.update({
            "image": batch.images,
            "mask": batch.masks,
            "has_mask": batch.has_mask,
            "raw_map": scored.raw_maps,
            "map": scored.maps,
            "pred_mask": scored.pred_masks,
            "original_size": np.array(batch.original_sizes, dtype=np.int64).reshape(len(batch), 2),
            "placement": np.array([_placement_row(p) for p in batch.placements], dtype=np.float64),
        })
        if batch.inspected is not None:
            columns["inspected"] = batch.inspected
    return columns


def from_columns(columns: dict[str, np.ndarray]) -> ScoredBatch:
    """The :class:`ScoredBatch` that :func:`to_columns` described (one or several batches' rows, in order)."""
    n = len(columns["index"])
    scores = np.asarray(columns["score"], dtype=np.float32)
    if "image" in columns:
        images, masks = np.asarray(columns["image"]), np.asarray(columns["mask"])
        has_mask, maps = np.asarray(columns["has_mask"], dtype=bool), np.asarray(columns["map"])
        raw_maps, pred_masks = np.asarray(columns["raw_map"]), np.asarray(columns["pred_mask"])
        sizes = [(int(h), int(w)) for h, w in np.asarray(columns["original_size"])]
        placements = [_placement(row) for row in np.asarray(columns["placement"])]
        inspected = np.asarray(columns["inspected"]) if "inspected" in columns else None
    else:  # rows only: empty frames, no pixel labels
        images, masks = np.zeros((n, 3, 0, 0), np.uint8), np.zeros((n, 0, 0), np.uint8)
        has_mask = np.zeros(n, bool)
        maps = raw_maps = np.zeros((n, 0, 0), np.float32)
        pred_masks = np.zeros((n, 0, 0), bool)
        sizes, placements, inspected = [(0, 0)] * n, [None] * n, None
    batch = Batch(images=images, masks=masks, has_mask=has_mask,
                  labels=np.asarray(columns["label"], np.int64), valid=np.asarray(columns["valid"], bool), indices=np.asarray(columns["index"], np.int64),
                  errors=[str(e) for e in columns["error"]], original_sizes=sizes, placements=placements,
                  inspected=inspected)
    return ScoredBatch(batch, raw_maps, np.asarray(columns["raw_score"], np.float32), maps, scores,
                       np.asarray(columns["is_ng"], bool), pred_masks)
