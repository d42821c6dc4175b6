"""Find the Sample behind each scored item of the running stage."""

from __future__ import annotations

import lightning.pytorch as pl

from hamacho.data.discovery import Sample


def stage_samples(trainer: pl.Trainer) -> list[Sample]:
    """Samples of the dataset the trainer is currently iterating (validation, test or predict)."""
    if trainer.testing:
        loaders = trainer.test_dataloaders
    elif trainer.predicting:
        loaders = trainer.predict_dataloaders
    else:
        loaders = trainer.val_dataloaders
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    return loader.dataset.samples
