"""The run summary: one typed record from the training run to metrics.json, the model file and the service."""

from __future__ import annotations

import json

from hamacho.results.summary import RunSummary


def test_round_trip_and_what_each_reader_gets():
    summary = RunSummary(calibration={"image_threshold": 4.2}, thresholds={"method": "auto", "image": "F1"},
                         metrics={"image_AUROC": 0.9, "pixel_F1": None}, model="padim", counts={"test": {"good": 3}},
                         images_fitted=10, notes=["no defective calibration images"], config={"model": {}},
                         report=True)
    assert RunSummary.from_json(summary.to_json()) == summary
    metrics_json = summary.metrics_json()
    assert "config" not in metrics_json and "report" not in metrics_json and metrics_json["images_fitted"] == 10
    assert summary.dataset_facts()["notes"] == ["no defective calibration images"]
    assert set(summary.dataset_facts()) == {"dataset", "data_format", "category", "counts", "images_fitted",
                                            "images_calibrated", "notes"}


def test_rows_written_by_earlier_versions_still_read():
    # a model row of the previous release: a plain dict with a few keys, nulls and one key no longer known
    old = json.dumps({"calibration": {"image_threshold": 1.0}, "thresholds": None, "metrics": None,
                      "notes": None, "report": True, "retired_key": 3})
    summary = RunSummary.from_json(old)
    assert summary.calibration == {"image_threshold": 1.0} and summary.thresholds == {} and summary.notes == []
    assert summary.report is True and summary.metrics is None
    assert RunSummary.from_json("") == RunSummary.from_json("not json") == RunSummary(calibration={})
