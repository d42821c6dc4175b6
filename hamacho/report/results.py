"""Result files (results.csv, metrics.json) and the metrics table printed on the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hamacho.files import write_csv, write_json
from hamacho.results.types import RESULT_COLUMNS, ImageResult, result_table

METRIC_ORDER = ("image_AUROC", "image_F1", "pixel_AUROC", "pixel_F1", "pixel_AUPRO")


def write_results_csv(path: str | Path, rows: list[ImageResult]) -> Path:
    """One row per image: file, name, type, label, raw and normalized score, decision, status."""
    write_csv(path, RESULT_COLUMNS, result_table(rows))
    return Path(path)


def write_metrics_json(path: str | Path, summary: dict[str, Any]) -> Path:
    """Metrics, thresholds, timings and counts as JSON."""
    write_json(path, summary)
    return Path(path)


def format_metrics_table(metrics: dict[str, float | None]) -> str:
    """A two-column text table; undefined metrics show as n/a."""
    names = [m for m in METRIC_ORDER if m in metrics] + [m for m in metrics if m not in METRIC_ORDER]
    if not names:
        return "no metrics: the test images need both good and defective labels"
    width = max(len(n) for n in names)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  ------"]
    for name in names:
        value = metrics[name]
        lines.append(f"{name.ljust(width)}  {'n/a' if value is None else f'{value:.4f}'}")
    return "\n".join(lines)


def decision_summary(rows: list[ImageResult]) -> str:
    """E.g. ``83 images: 60 NG, 23 OK, 0 unreadable; 80 of 83 labelled decisions right``."""
    ng = sum(r.decision == "NG" for r in rows)
    ok = sum(r.decision == "OK" for r in rows)
    bad = sum(not r.decision for r in rows)
    text = f"{len(rows)} image(s): {ng} NG, {ok} OK, {bad} unreadable"
    judged = [r.correct for r in rows if r.correct is not None]
    if judged:
        text += f"; {sum(judged)} of {len(judged)} labelled decisions right"
    return text


def held_out_text(held: dict[str, Any]) -> str:
    """One line on the held-out images' metrics (metrics.json's ``held_out``), with its warning."""
    auroc = held.get("image_AUROC")
    f1 = held.get("image_F1")
    text = (f"held out of the threshold: {held['images']} image(s) ({held['good']} good, {held['defective']} "
            f"defective): image_AUROC {'n/a' if auroc is None else f'{auroc:.4f}'}, image_F1 "
            f"{'n/a' if f1 is None else f'{f1:.4f}'}, {held['false_alarms']} false alarm(s), "
            f"{held['missed_defects']} missed defect(s)")
    return text + (f" ({held['warning']})" if held.get("warning") else "")
