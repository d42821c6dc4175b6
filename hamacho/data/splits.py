"""Which images fit the model, which calibrate the threshold, which are tested."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hamacho.data.discovery import DatasetLayout, Sample
from hamacho.errors import DatasetError


@dataclass
class Splits:
    """Samples per stage.

    Attributes:
        train: Images the model is fitted on.
        calibration: Labelled images that set thresholds and min/max (validation stage).
        test: Images scored, evaluated and visualised after training.
        notes: Human-readable remarks about choices made (shown to the user).
    """

    train: list[Sample]
    calibration: list[Sample]
    test: list[Sample]
    notes: list[str] = field(default_factory=list)


def make_splits(layout: DatasetLayout, calibration_split: float, seed: int) -> Splits:
    """Choose training, calibration and test samples.

    The labelled test images calibrate the threshold. When they hold no good image, a seeded share
    ``calibration_split`` of ``train/good`` is held out instead (and is the test set if ``test/`` is
    empty), so the threshold is never set on images the model was fitted on.

    Args:
        layout: Discovered dataset.
        calibration_split: Share of training images to hold out when needed.
        seed: Seed of the hold-out choice.

    Returns:
        The splits.
    """
    labelled = layout.labelled_test
    if any(s.label == 0 for s in labelled):
        return Splits(list(layout.train), labelled, list(layout.test))
    if len(layout.train) < 2:
        raise DatasetError(
            "test/good is empty and train/good has a single image: add test/good images or more training images"
        )
    n_hold = min(max(1, round(calibration_split * len(layout.train))), len(layout.train) - 1)
    order = list(range(len(layout.train)))
    random.Random(seed).shuffle(order)
    held = sorted(order[:n_hold])
    held_set = set(held)
    holdout = [layout.train[i] for i in held]
    train = [s for i, s in enumerate(layout.train) if i not in held_set]
    notes = [
        f"test/good has no images: {n_hold} of {len(layout.train)} train/good images held out to set the threshold"
    ]
    test = list(layout.test) if layout.test else holdout
    if not layout.test:
        notes.append("test/ has no images: the held-out good images are used as the test set")
    return Splits(train, holdout + labelled, test, notes)


def repeated_paths(splits: Splits) -> set:
    """Images scored twice by a training run (calibration, then test): worth keeping decoded in between."""
    return {s.path for s in splits.calibration} & {s.path for s in splits.test}
