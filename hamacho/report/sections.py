"""HTML fragments of the report: summary, thresholds, timings, metrics, confusion matrix, per-image table.

Every function returns a string of escaped HTML; numbers are printed with fixed precision (metrics
with 4 decimals, as on the terminal) so that a reader can compare them with metrics.json.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from hamacho.post.normalization import raw_threshold
from hamacho.report.results import METRIC_ORDER
from hamacho.results.types import ImageResult

METRIC_TEXT = {
    "image_AUROC": ("Image AUROC", ("How well scores rank defective above good images, whatever the threshold "
                                    "(1 = perfect, 0.5 = chance).")),
    "image_F1": ("Image F1", "Balance of precision and recall of the OK/NG decisions at the threshold."),
    "pixel_AUROC": ("Pixel AUROC", "Ranking quality of defective over good pixels, whatever the threshold."),
    "pixel_F1": ("Pixel F1", "Overlap of the predicted masks with the ground truth at the pixel threshold."),
    "pixel_AUPRO": ("Pixel AUPRO", ("Share of each defect region covered, every region weighted the same, "
                                    "averaged up to 30 % false-positive pixels (MVTec AD).")),
}
TIMING_TEXT = {
    "fit_seconds": ("Fitting (total)", "s"),
    "feature_extraction_seconds": ("\u2003feature extraction", "s"),
    "model_fit_seconds": ("\u2003model fit (covariance / coreset)", "s"),
    "calibration_seconds": ("Calibration (threshold)", "s"),
    "test_seconds": ("Test", "s"),
    "test_images_per_second": ("Test throughput", "images/s"),
    "inference_seconds": ("Inference", "s"),
    "images_per_second": ("Throughput", "images/s"),
    "peak_rss_mb": ("Peak memory (RSS)", "MiB"),
}


def metric_text(value: float | None) -> str:
    """A metric as shown in the report (4 decimals, n/a when undefined)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def score_text(value: float) -> str:
    """A normalized score as shown in the per-image table."""
    return "" if math.isnan(value) else f"{value:.4f}"


def raw_text(value: float) -> str:
    """A raw score as shown in the per-image table."""
    return "" if math.isnan(value) else f"{value:.4f}"


class Markup(str):
    """A ready-made ``<td>``/``<th>`` cell (not escaped again by :func:`table`)."""


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "", css: str = "",
          row_css: Sequence[str] = ()) -> str:
    """A plain table; plain cells are escaped, :class:`Markup` cells (see :func:`cell`) are used as they are.

    ``row_css`` optionally gives each body row a class (by position; empty for none).
    """
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    classes = list(row_css)
    body = "".join(
        (f'<tr class="{classes[i]}">' if i < len(classes) and classes[i] else "<tr>")
        + "".join(c if isinstance(c, Markup) else f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    attrs = (f' id="{table_id}"' if table_id else "") + (f' class="{css}"' if css else "")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell(text: str, css: str = "", **data: str) -> Markup:
    """A ``<td>`` with an optional class and ``data-*`` attributes."""
    attrs = (f' class="{css}"' if css else "") + "".join(f' data-{k}="{escape(v)}"' for k, v in data.items())
    return Markup(f"<td{attrs}>{escape(text)}</td>")


def facts_table(facts: Sequence[tuple[str, str]]) -> str:
    """Two-column key/value table."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in facts)
    return f'<table id="facts" class="facts"><tbody>{rows}</tbody></table>'


def counts_table(counts: dict[str, dict[str, int]]) -> str:
    """Images per type (rows) and split (columns), with totals; ``good`` first."""
    splits = [s for s in ("train", "test") if s in counts] + [s for s in counts if s not in ("train", "test")]
    types = sorted({t for split in splits for t in counts[split]}, key=lambda t: (t != "good", t == "unknown", t))
    rows = [[t] + [cell(str(counts[s].get(t, 0)) if counts[s].get(t) else "\u2013", "num") for s in splits]
            for t in types]
    rows.append([Markup("<th>total</th>")] + [cell(str(sum(counts[s].values())), "num total") for s in splits])
    return table(["type"] + splits, rows, "counts")


def thresholds_table(calibration: dict[str, float], image_cut: float, pixel_cut: float,
                     sources: dict[str, str] | None = None) -> str:
    """Calibrated raw thresholds, the normalized cuts in use and their raw values, the normalization range,
    and how each threshold was set (``sources``: the training run's ``thresholds`` facts)."""
    rows = []
    for level, cut in (("image", image_cut), ("pixel", pixel_cut)):
        rows.append([
            level,
            cell(raw_text(calibration[f"{level}_threshold"]), "num", value="raw"),
            cell(f"{cut:g}", "num", value="normalized"),
            cell(raw_text(raw_threshold(calibration, level, cut)), "num"),
            cell(f"{raw_text(calibration[f'{level}_min'])} \u2013 {raw_text(calibration[f'{level}_max'])}", "num"),
            (sources or {}).get(level, "not recorded"),
        ])
    headers = ["level", "calibrated threshold (raw)", "cut in use (normalized)", "cut in use (raw)",
               "normalization range (raw min \u2013 max)", "set by"]
    return table(headers, rows, "thresholds")


def timings_table(timings: dict[str, float]) -> str:
    """Wall times, throughput and memory."""
    rows = []
    for key, value in timings.items():
        label, unit = TIMING_TEXT.get(key, (key.replace("_", " "), ""))
        digits = ".0f" if unit == "MiB" else ".1f" if unit == "images/s" else ".2f"
        rows.append([label, cell(f"{value:{digits}} {unit}".strip(), "num")])
    return table(["step", "value"], rows, "timings")


def metrics_table(metrics: dict[str, float | None]) -> str:
    """The metrics in the terminal's order, 4 decimals, n/a where undefined, with what each means."""
    names = [m for m in METRIC_ORDER if m in metrics] + [m for m in metrics if m not in METRIC_ORDER]
    rows = []
    for name in names:
        label, meaning = METRIC_TEXT.get(name, (name, ""))
        rows.append([label, cell(metric_text(metrics[name]), "num metric", metric=name), meaning])
    return table(["metric", "value", "meaning"], rows, "metrics-table")


def confusion_counts(rows: Sequence[ImageResult]) -> dict[str, int]:
    """TP/FP/TN/FN of the labelled, readable images (NG = positive)."""
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for row in rows:
        if row.label and row.decision:
            ng, defective = row.decision == "NG", row.label == "defective"
            counts[("t" if ng == defective else "f") + ("p" if ng else "n")] += 1
    return counts


def _rate(numerator: int, denominator: int) -> str:
    return f"{numerator / denominator:.1%} ({numerator}/{denominator})" if denominator else "n/a"


def confusion_table(counts: dict[str, int]) -> str:
    """Confusion matrix (actual rows, decision columns) and the rates a line owner asks about."""
    tp, fp, tn, fn = (counts[k] for k in ("tp", "fp", "tn", "fn"))
    matrix = table(
        ["actual \u2193 / decision \u2192", "NG", "OK", "total"],
        [
            ["defective", cell(f"{tp}", "num hit", count="tp"), cell(f"{fn}", "num miss", count="fn"),
             cell(str(tp + fn), "num")],
            ["good", cell(f"{fp}", "num miss", count="fp"), cell(f"{tn}", "num hit", count="tn"),
             cell(str(fp + tn), "num")],
        ],
        "confusion", "confusion",
    )
    rates = table(["rate", "value"], [
        ["Accuracy", cell(_rate(tp + tn, tp + tn + fp + fn), "num")],
        ["Escapes: defective called OK (FN rate)", cell(_rate(fn, tp + fn), "num")],
        ["Overkill: good called NG (FP rate)", cell(_rate(fp, fp + tn), "num")],
        ["Precision: NG calls that are defective", cell(_rate(tp, tp + fp), "num")],
    ], "rates")
    return f'<div class="pair">{matrix}{rates}</div>'


def per_image_table(rows: Sequence[ImageResult]) -> str:
    """One row per image, in the order of results.csv; wrong decisions highlighted."""
    body, row_css = [], []
    for index, row in enumerate(rows, start=1):
        row_css.append("wrong" if row.correct is False else "")
        verdict = {True: "right", False: "wrong", None: "\u2013"}[row.correct]
        decision_css = "ng" if row.decision == "NG" else "ok" if row.decision == "OK" else ""
        body.append([
            cell(str(index), "num"),
            Markup(f'<td title="{escape(row.file)}">{escape(row.name)}</td>'),
            row.defect_type,
            row.label or "\u2013",
            cell(score_text(row.normalized_score), "num"),
            cell(raw_text(row.raw_score), "num"),
            cell(row.decision, decision_css),
            cell(verdict, "wrong" if row.correct is False else ""),
            row.status,
        ])
    headers = ["#", "image", "type", "label", "score (normalized)", "score (raw)", "decision", "check", "status"]
    return table(headers, body, "per-image", "per-image", row_css)
