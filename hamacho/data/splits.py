"""Which images fit the model, which calibrate the threshold, which are tested."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

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


def held_out_share(name: str, seed: int) -> float:
    """A fixed number in [0, 1) for an image name and seed: the same whatever else the dataset holds."""
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hold_out_labelled(calibration: list[Sample], share: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Keep a share of the labelled calibration images out of the thresholds: ``(calibrating, held out)``.

    An image is held out when :func:`held_out_share` of its name is below ``share``, so that adding images to
    a dataset never moves an image between the two (a retrained model's held-out images were held out of the
    model before it too); each label keeps at least one image on either side when it has two. Nothing is held
    out unless both labels are there (a good-only dataset has no metrics to be honest about).

    Args:
        calibration: The images that would set the thresholds.
        share: Share to hold out (0: none).
        seed: The run's seed.
    """
    labels = {s.label for s in calibration}
    if share <= 0 or not {0, 1} <= labels:
        return list(calibration), []
    held: set[int] = set()
    for label in (0, 1):
        members = [i for i, s in enumerate(calibration) if s.label == label]
        ranked = sorted(members, key=lambda i: held_out_share(calibration[i].name, seed))
        chosen = [i for i in ranked if held_out_share(calibration[i].name, seed) < share]
        if len(members) >= 2:
            chosen = chosen[: len(members) - 1] or ranked[:1]
        else:
            chosen = []
        held.update(chosen)
    return ([s for i, s in enumerate(calibration) if i not in held],
            [s for i, s in enumerate(calibration) if i in held])


SPLITS_FILENAME = "splits.json"  # beside the model file: which images each stage used, by name


def read_split_names(folder: Path) -> dict[str, list[str]] | None:
    """A model folder's ``splits.json`` (None when it has none: a model imported, or trained before the file
    was written, or a file that is not JSON)."""
    try:
        return json.loads((folder / SPLITS_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def split_names(splits: Splits, held_out: list[Sample]) -> dict[str, list[str]]:
    """The names of the images each stage used (``splits.json``): what a later comparison must not count as
    unseen by this model."""
    return {"fitted": [s.name for s in splits.train], "calibrated": [s.name for s in splits.calibration],
            "held_out": [s.name for s in held_out], "tested": [s.name for s in splits.test]}
