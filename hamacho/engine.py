"""Lightning Trainer set-up shared by training and inference."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar

from hamacho.errors import HamachoError

_NOISY_WARNINGS = (
    r".*does not have many workers.*",
    r".*configure_optimizers.*",
    r".*`training_step` returned `None`.*",
    r".*LightningModule.*has parameters that were not used.*",
    r".*GPU available but not used.*",
    r".*The number of training batches.*",
    r".*Total length of .* across ranks is zero.*",
    r".*is not a valid configuration for.*",
    r".*You defined a `validation_step` but have no `val_dataloader`.*",
    r".*Found .* module\(s\) in eval mode at the start of training.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


class Interrupted(HamachoError):
    """The user pressed Ctrl-C."""


def quiet_lightning() -> None:
    """Hide Lightning's start-up banners and warnings that do not concern our one-pass models."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


class StderrProgressBar(TQDMProgressBar):
    """Lightning's progress bars on stderr, so that stdout carries only results (and can be piped)."""

    def _on_stderr(self, make):  # noqa: ANN001, ANN202
        with contextlib.redirect_stdout(sys.stderr):
            return make()

    def init_train_tqdm(self):  # noqa: ANN201
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):  # noqa: ANN201
        return self._on_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):  # noqa: ANN201
        return self._on_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):  # noqa: ANN201
        return self._on_stderr(super().init_predict_tqdm)

    def close_all(self) -> None:
        """Close open bars (after an interruption), so that the last line printed is ours."""
        for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar", "_predict_progress_bar"):
            bar = getattr(self, name, None)
            if bar is not None:
                bar.close()


def build_trainer(accelerator: str, callbacks: Sequence[pl.Callback], progress: bool = True) -> pl.Trainer:
    """A Trainer for one pass over the data: no optimiser, no checkpoints, no logger.

    Args:
        accelerator: ``auto`` uses a GPU when one exists.
        callbacks: Calibration, normalization, visualizer and result callbacks as needed.
        progress: Show progress bars.
    """
    quiet_lightning()
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        enable_progress_bar=progress,
        callbacks=[*callbacks, StderrProgressBar()] if progress else list(callbacks),
    )


@contextlib.contextmanager
def interruptible(trainer: pl.Trainer, message: str) -> Iterator[None]:
    """Turn Lightning's Ctrl-C handling (it calls ``sys.exit(1)``) into :class:`Interrupted` with ``message``."""
    try:
        yield
    except (SystemExit, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt) or trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if isinstance(trainer.progress_bar_callback, StderrProgressBar):
                trainer.progress_bar_callback.close_all()
            raise Interrupted(message) from None
        raise
