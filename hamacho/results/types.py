"""Result types shared by the scoring runs (which fill them) and the report (which renders them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hamacho.post.curves import Curves, PixelSample
from hamacho.results.examples import ExampleTracker

LABEL_NAMES = {0: "good", 1: "defective"}
PIXEL_METRICS = ("pixel_AUROC", "pixel_F1", "pixel_AUPRO")
RESULT_COLUMNS = ("file", "name", "defect_type", "label", "raw_score", "normalized_score", "decision", "status")


@dataclass
class ImageResult:
    """Outcome for one image (one row of results.csv)."""

    file: str
    name: str
    defect_type: str
    label: str  # good | defective | "" when unknown
    raw_score: float
    normalized_score: float
    decision: str  # OK | NG | "" when the image could not be read
    status: str  # ok, or why the image (or its mask) was not used

    @property
    def correct(self) -> bool | None:
        """Whether the decision matches the label (None when either is unknown)."""
        if not self.label or not self.decision:
            return None
        return (self.decision == "NG") == (self.label == "defective")


@dataclass
class ReportData:
    """What the HTML report needs beyond the rows; its size does not grow with the number of images.

    Attributes:
        examples: The worst and best scored images (at most ``n`` per group) with their pictures' data.
        show_gt: Whether the run has masks at all (example pictures then get a ground-truth panel).
        pixel_sample: Seeded sample of labelled pixels (raw map values), when defect masks exist.
        pixel_curves: Pixel ROC and precision-recall points over *all* labelled pixels, when masks exist.
    """

    examples: ExampleTracker
    show_gt: bool = False
    pixel_sample: PixelSample | None = None
    pixel_curves: Curves | None = None


def result_table(rows: list[ImageResult]) -> list[list[Any]]:
    """Rows for results.csv in the order of ``RESULT_COLUMNS`` (scores with full precision)."""
    def number(value: float) -> str:
        return "" if math.isnan(value) else repr(value)

    return [
        [r.file, r.name, r.defect_type, r.label, number(r.raw_score), number(r.normalized_score), r.decision, r.status]
        for r in rows
    ]
