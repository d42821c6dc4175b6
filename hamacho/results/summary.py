"""What a training run found, as one typed record: metrics.json, the report's facts, the model file's
dataset facts and the service's model card all read it.

A model imported into the service (a model file or an export, without its training run) fills what its
metadata holds (calibration, thresholds, configuration, counts) and leaves the rest empty.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

# Written to metrics.json (the configuration has its own file, config.yaml).
METRICS_JSON_EXCLUDES = ("config", "report", "precision")
# The facts of the data a model file keeps (``extra["dataset"]``).
DATASET_FACTS = ("dataset", "data_format", "category", "counts", "images_fitted", "images_calibrated", "notes")


@dataclass
class RunSummary:
    """One training run's outcome (see the module docstring).

    Attributes:
        calibration: Raw thresholds and score ranges (``image_threshold``, ``image_min``, ...).
        thresholds: How each threshold was set: ``{"method", "image", "pixel"}`` in words.
        metrics: Test metrics (None where undefined); None when the run had no labelled test images to
            score or the model was imported without them.
        model: Model name.
        backbone: Backbone name.
        backbone_weights: Where the backbone's weights came from.
        image_size: ``dataset.image_size`` (N or [H, W]).
        input_size: Model input (height, width).
        frame_size: Frame the maps are computed on (height, width).
        seed: The run's seed.
        dataset: The dataset root.
        category: The results folder's name.
        data_format: ``mvtec``, ``folder`` or ``filelist``.
        counts: Images per split and label.
        images_fitted: Images the model was fitted on.
        images_calibrated: Images that set the thresholds.
        notes: Warnings and facts worth reading (no defective images, masks ignored, ...).
        timings: Wall times and peak memory.
        model_file: Where the model file was written.
        config: The effective configuration (settings as a plain dict).
        report: Whether report.html was written.
        precision: An export's precision (fp32, fp16, bf16), for imported exports.
        held_out: Metrics on the labelled images held out of the thresholds (``dataset.holdout``;
            :func:`hamacho.results.held_out.held_out_summary`), None when none were.
        synthetic_recall: Without defective calibration images, the share of synthetic defects on held-out good
            images the threshold flags (:func:`hamacho.results.synthetic_recall.synthetic_recall`), or None.
        comparison: An earlier model against this one on the same held-out images
            (:func:`hamacho.results.comparison.compare_on_held_out`; a retrain in the service), or None.
    """

    calibration: dict[str, float]
    thresholds: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float | None] | None = None
    model: str = ""
    backbone: str = ""
    backbone_weights: str | None = None
    image_size: Any = None
    input_size: list[int] | None = None
    frame_size: list[int] | None = None
    seed: int | None = None
    dataset: str | None = None
    category: str | None = None
    data_format: str | None = None
    counts: dict[str, Any] | None = None
    images_fitted: int | None = None
    images_calibrated: int | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model_file: str | None = None
    config: dict[str, Any] | None = None
    report: bool = False
    precision: str | None = None
    held_out: dict[str, Any] | None = None
    comparison: dict[str, Any] | None = None
    synthetic_recall: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Every field as plain data."""
        return dataclasses.asdict(self)

    def metrics_json(self) -> dict[str, Any]:
        """What metrics.json holds: everything but the configuration and the service's flags."""
        return {key: value for key, value in self.as_dict().items() if key not in METRICS_JSON_EXCLUDES}

    def dataset_facts(self) -> dict[str, Any]:
        """The facts of the data, as the model file keeps them."""
        return {key: getattr(self, key) for key in DATASET_FACTS}

    def to_json(self) -> str:
        """JSON text (the service's database column)."""
        return json.dumps(self.as_dict(), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunSummary:
        """A summary from plain data written by this or an earlier version (unknown keys are ignored)."""
        data = dict(data or {})
        known = {item.name for item in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known and value is not None}
        values.setdefault("calibration", {})
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | None) -> RunSummary:
        """:meth:`from_dict` of JSON text (empty or invalid text: an empty summary)."""
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {}
        return cls.from_dict(data if isinstance(data, dict) else {})
