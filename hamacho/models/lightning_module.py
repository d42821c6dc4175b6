"""The thin Lightning wrapper that fits a plain model: Lightning drives the one pass over the training images.

Lightning places the model on the accelerator (``trainer.accelerator: auto`` uses a GPU when there is
one) and feeds it batches; the wrapper hands each batch's readable images to ``model.update`` and counts
them in the run's phase (progress bar, stop requests). Before the pass, the model is told the images (or
tiles) of every update to come (``model.expect_updates``: PatchCore selects its coreset chunks as they
fill). Fitting the statistics (``model.fit``) and all scoring happen outside Lightning, through the
model's own forward (:mod:`hamacho.predictor`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from hamacho.data.batch import Batch, collate
from hamacho.data.dataset import AnomalyDataset, Source
from hamacho.data.framing import Framing
from hamacho.data.geometry import iter_tiles
from hamacho.errors import DatasetError, summarize
from hamacho.models.base import AnomalyModel
from hamacho.progress import Phase, null_phase

_NOISY_WARNINGS = (
    r".*does not have many workers.*",
    r".*configure_optimizers.*",
    r".*`training_step` returned `None`.*",
    r".*LightningModule.*has parameters that were not used.*",
    r".*GPU available but not used.*",
    r".*The number of training batches.*",
    r".*Total length of .* across ranks is zero.*",
    r".*is not a valid configuration for.*",
    r".*Found .* module\(s\) in eval mode at the start of training.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


class AnomalyModule(pl.LightningModule):
    """Feeds training batches to ``model.update``; no optimiser, no checkpoints.

    With tiling, each batch of frames is cut into tiles that reach ``model.update`` at most ``tile_batch``
    at a time (PaDiM: one shared set of per-position Gaussians over all tiles; PatchCore: one memory bank).

    Args:
        model: The plain model to fit.
        phase: The run's feature-extraction phase (progress and stop requests).
        framing: How images are framed (for the tiles); None: plain.
        tile_batch: Most tiles per update.
    """

    def __init__(self, model: AnomalyModel, phase: Phase | None = None, framing: Framing | None = None,
                 tile_batch: int = 8) -> None:
        super().__init__()
        self.model = model
        self.phase = phase or null_phase("feature extraction")
        self.framing = framing
        self.tile_batch = tile_batch
        self.unreadable_training_files: list[str] = []
        self.automatic_optimization = False

    def update_sizes(self, images: int, batch_size: int) -> list[int]:
        """Images (or tiles) of each ``model.update`` that :meth:`training_step` makes of ``images`` readable
        images in batches of ``batch_size`` (in loader order)."""
        tiles = len(self.framing.origins()) if self.framing is not None and self.framing.tiled else 0
        sizes = []
        for start in range(0, images, batch_size):
            frames = min(batch_size, images - start)
            if not tiles:
                sizes.append(frames)
                continue
            count = frames * tiles  # iter_tiles: the batch's tiles, tile_batch at a time
            sizes += [min(self.tile_batch, count - first) for first in range(0, count, self.tile_batch)]
        return sizes

    def configure_optimizers(self) -> None:
        """No optimiser: the models are fitted statistically, in one pass."""
        return

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        self.unreadable_training_files += [error for ok, error in zip(batch.valid.tolist(), batch.errors) if not ok]
        if not batch.valid.any():
            return
        images = batch.images if batch.valid.all() else batch.images[batch.valid]  # no copy of whole frames
        with torch.no_grad():
            if self.framing is None or not self.framing.tiled:
                self.model.update(torch.from_numpy(images).to(self.device))
                return
            for tiles, _ in iter_tiles(images, self.framing.origins(), self.framing.input_size, self.tile_batch):
                self.model.update(torch.from_numpy(tiles).to(self.device))

    def on_train_batch_end(self, outputs: object, batch: Batch, batch_idx: int) -> None:
        self.phase.advance(len(batch))

    def on_train_epoch_end(self) -> None:
        bad = self.unreadable_training_files
        if bad:
            raise DatasetError(f"{len(bad)} training image(s) cannot be read, fix or remove them: {summarize(bad)}")


def fit_features(model: AnomalyModel, samples: Sequence[Source], batch_size: int, num_workers: int,
                 accelerator: str, phase: Phase, framing: Framing | None = None) -> None:
    """One pass of ``model.update`` over the training images with a Lightning Trainer.

    Args:
        model: The plain model (Lightning moves it to the accelerator for the pass).
        samples: Training images.
        batch_size: Images per batch (and tiles per update with tiling).
        num_workers: Data-loading processes (0: decoding threads in this process).
        accelerator: Lightning accelerator, ``auto`` for a GPU when there is one.
        phase: Progress and stop requests; a stop raises :class:`~hamacho.errors.Interrupted`.
        framing: Crop, resize, padding, masking and tiles (None: a plain resize to the model's input).

    Raises:
        DatasetError: When training images could not be read (all of them listed).
    """
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=1, logger=False,
                             enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                             num_sanity_val_steps=0)
        framing = framing or Framing.plain(model.input_size)
        loader = DataLoader(AnomalyDataset(samples, framing), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=collate)
        module = AnomalyModule(model, phase, framing, batch_size)
        model.expect_updates(module.update_sizes(len(samples), batch_size), phase)
        trainer.fit(module, train_dataloaders=loader)
