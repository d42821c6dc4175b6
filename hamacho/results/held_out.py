"""Metrics on the held-out images: the labelled images that did not set the thresholds (``dataset.holdout``).

Metrics on the images that set a threshold flatter it (a threshold chosen for the best F1 on them scores that
F1 on them); the held-out ones say what to expect on new parts. Few held-out images mean little, and the
summary says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from hamacho.post.metrics import image_metrics
from hamacho.results.types import ImageResult

FEW = 10  # fewer held-out images of a label than this: the metrics are shown with a warning


def _labelled(rows: Iterable[ImageResult]) -> tuple[int, np.ndarray, np.ndarray, dict[str, float | None]]:
    """Of the labelled, readable rows: their number, labels (1 defective), decisions (True NG) and image metrics."""
    kept = [r for r in rows if r.label and r.decision]
    labels = np.array([r.label == "defective" for r in kept], dtype=np.int64)
    flagged = np.array([r.decision == "NG" for r in kept], dtype=bool)
    metrics = image_metrics(np.array([r.raw_score for r in kept], dtype=np.float32), labels, flagged) if kept else {
        "image_AUROC": None, "image_F1": None}
    return len(kept), labels, flagged, metrics


def row_image_metrics(rows: Iterable[ImageResult]) -> dict[str, float | None]:
    """Image AUROC and F1 of the labelled, readable ``rows`` at their decisions (None where undefined): the
    numbers the results collector gives for the same images."""
    return _labelled(rows)[3]


def subset_metrics(rows: Iterable[ImageResult]) -> dict[str, Any]:
    """Image metrics, counts and error rates of the labelled, readable ``rows`` (at their decisions)."""
    count, labels, flagged, image = _labelled(rows)
    metrics: dict[str, Any] = dict(image)
    good, defective = int((labels == 0).sum()), int((labels == 1).sum())
    metrics.update(images=count, good=good, defective=defective,
                   false_alarms=int((flagged & (labels == 0)).sum()),
                   missed_defects=int((~flagged & (labels == 1)).sum()))
    return metrics


def held_out_summary(rows: list[ImageResult], names: set[str]) -> dict[str, Any] | None:
    """The held-out images' metrics (None when nothing was held out), with ``warning`` when they are few.

    Args:
        rows: The test rows (the held-out images among them, by ``name``).
        names: The held-out images' names.
    """
    if not names:
        return None
    summary = subset_metrics(r for r in rows if r.name in names)
    fewest = min(summary["good"], summary["defective"])
    summary["warning"] = (f"only {summary['good']} good and {summary['defective']} defective held-out image(s): "
                          "these metrics can move a lot with a few more images" if fewest < FEW else None)
    return summary
