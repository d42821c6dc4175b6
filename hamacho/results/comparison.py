"""Two models on the same held-out images: a retrained model against the one it replaces.

The images are the new model's held-out ones (``splits.json``: labelled, not fitted, not calibrating) that
the earlier model did not see either (its own ``splits.json``: fitted or calibrating), so neither model's
figures are flattered. Both are measured at the cut each would decide with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hamacho.data.discovery import Sample
from hamacho.data.splits import SPLITS_FILENAME, read_split_names
from hamacho.predictor import Predictor
from hamacho.results.collector import ResultsCollector
from hamacho.results.held_out import subset_metrics
from hamacho.results.types import ImageResult

LABELS = {"good": 0, "defective": 1}


def seen_names(folder: Path) -> set[str] | None:
    """The images a model in ``folder`` was fitted or calibrated on (None when its ``splits.json`` is missing:
    a model imported, or trained before the file was written)."""
    splits = read_split_names(folder)
    return None if splits is None else set(splits.get("fitted", [])) | set(splits.get("calibrated", []))


def compare_on_held_out(earlier: Path, earlier_cut: float, rows: list[ImageResult], held_out: set[str],
                        label: str = "") -> dict[str, Any]:
    """Metrics of an earlier model and of the new one on the new one's held-out images the earlier did not see.

    Args:
        earlier: The earlier model's file (``model.pt``) or export folder; its folder may hold ``splits.json``.
        earlier_cut: The normalized image cut the earlier model decides with (its current threshold version).
        rows: The new model's test rows (the held-out images among them).
        held_out: The new model's held-out image names.
        label: How the earlier model is named in the result (its tag).

    Returns:
        ``{"earlier", "images", "before", "after", "note"}``: ``before`` and ``after`` as
        :func:`~hamacho.results.held_out.subset_metrics`; ``note`` says what limits the comparison (None: nothing).
    """
    seen = seen_names(earlier.parent if earlier.is_file() else earlier)
    chosen = [r for r in rows if r.name in held_out and r.label in LABELS and r.decision
              and (seen is None or r.name not in seen)]
    note = None
    if seen is None:
        note = (f"which images {label or 'the earlier model'} was trained on is not known (no {SPLITS_FILENAME}): "
                "it may have seen some of these")
    elif len(chosen) < sum(1 for r in rows if r.name in held_out):
        note = f"held-out images {label or 'the earlier model'} was trained or calibrated on are left out"
    samples = [Sample(Path(r.file), r.name, LABELS[r.label], r.defect_type) for r in chosen]
    before: list[ImageResult] = []
    if samples:
        predictor = Predictor.load(earlier)
        collector = ResultsCollector(samples, predictor.calibration, image_cut=earlier_cut)
        for scored in predictor.score_samples(samples, earlier_cut):
            collector.add(scored)
        before = collector.rows
    return {"earlier": label, "images": len(chosen), "before": subset_metrics(before),
            "after": subset_metrics(chosen), "note": note}
