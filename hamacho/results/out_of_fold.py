"""Out-of-fold scores: every training image scored by a model fitted without it, for the good-image rule.

The training images are dealt into ``k`` seeded folds. For each fold, the model takes that fold's images
out of its fit (:meth:`~hamacho.models.base.AnomalyModel.fold_model`: PaDiM subtracts the fold's sums, no
refit of the others) and scores them through the Predictor, exactly as new parts are scored. The scores
join the held-out images' as good calibration scores, so the threshold rests on every good image instead
of a 20 % hold-out. Cost: two passes over the training images (the fold's sums, then its scores) and ``k``
inversions of the Gaussians; memory: one copy of the sums while it runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from hamacho.data.dataset import iter_batches
from hamacho.data.discovery import Sample
from hamacho.data.framing import Framing
from hamacho.data.geometry import iter_tiles
from hamacho.predictor import Predictor
from hamacho.progress import Phase
from hamacho.settings import Settings


def deal_folds(count: int, folds: int, seed: int) -> list[list[int]]:
    """Indices ``0..count-1`` dealt into ``folds`` folds of near-equal size, in a seeded order."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [sorted(order[start::folds]) for start in range(folds)]


def _input_batches(samples: Sequence[Sample], framing: Framing, batch_size: int, device: Any) -> Iterator[Any]:
    """The samples as the model's training pass saw them: input-size uint8 tensors (tiles when tiled)."""
    import torch

    for batch in iter_batches(samples, framing, batch_size):
        images = batch.images if batch.valid.all() else batch.images[batch.valid]  # no copy of whole frames
        if not len(images):
            continue
        if not framing.tiled:
            yield torch.from_numpy(images).to(device)
            continue
        for tiles, _ in iter_tiles(images, framing.origins(), framing.input_size, batch_size):
            yield torch.from_numpy(tiles).to(device)


def out_of_fold_scores(model: Any, source: Any, samples: Sequence[Sample], settings: Settings, framing: Framing,
                       valid_area: np.ndarray | None, phase: Phase) -> np.ndarray:
    """Raw image scores of ``samples`` (the training images), each from a model fitted without its fold.

    Args:
        model: The fitted model (an AnomalyModel whose :meth:`fold_source` gave ``source`` before its fit).
        source: :meth:`fold_source`'s result.
        samples: The training images, in training order.
        settings: The run's settings (folds, seed, batch size, device).
        framing: How the model frames images.
        valid_area: The stored valid-area mask, or None.
        phase: Advanced by two steps per image (its fold's sums, its score).

    Returns:
        float64 scores of the readable images.
    """
    device = next(model.parameters()).device
    batch_size = settings.dataset.batch_size
    scores: list[np.ndarray] = []
    for fold in deal_folds(len(samples), settings.threshold.folds, settings.project.seed):
        chosen = [samples[i] for i in fold]
        fold_model = model.fold_model(source, _input_batches(chosen, framing, batch_size, device))
        phase.advance(len(chosen))
        predictor = Predictor.from_model(fold_model, settings, device=str(device), valid_area=valid_area)
        for scored in predictor.score_samples(chosen):
            scores.append(scored.raw_scores[scored.batch.valid].astype(np.float64))
            phase.advance(len(scored))
            del scored  # frame-sized maps: not kept while the next batch is scored
        del fold_model, predictor  # one fold's model at a time: freed before the next one is made
    return np.concatenate(scores) if scores else np.zeros(0)
