"""Benchmark figures, ours / anomalib ratios, pass/fail against the issue's targets, and the table.

Pure functions over plain dicts: no torch, no Hamacho, no files. A *figures* dict holds one run's
numbers under the keys of :data:`ROWS` (None where unknown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

METRIC_KEYS = ("image_AUROC", "image_F1", "pixel_AUROC", "pixel_F1", "pixel_AUPRO")


@dataclass(frozen=True)
class Row:
    """One line of the comparison: a figure, how to print it and which direction is better."""

    key: str
    label: str
    better: str | None  # "higher", "lower" or None (informational)
    digits: int


ROWS = (
    Row("image_AUROC", "image AUROC", "higher", 4),
    Row("image_F1", "image F1", "higher", 4),
    Row("pixel_AUROC", "pixel AUROC", "higher", 4),
    Row("pixel_F1", "pixel F1", "higher", 4),
    Row("pixel_AUPRO", "pixel AUPRO (FPR <= 0.3)", "higher", 4),
    Row("fit_seconds", "fit wall s (incl. calibration/validation)", "lower", 2),
    Row("feature_extraction_seconds", "- feature extraction s", "lower", 2),
    Row("model_fit_seconds", "- model fit s (Gaussians / coreset)", "lower", 2),
    Row("calibration_seconds", "- calibration / validation pass s", "lower", 2),
    Row("test_seconds", "test wall s", "lower", 2),
    Row("test_images_per_second", "test images/s", "higher", 2),
    Row("peak_rss_mb", "peak RSS MiB", "lower", 0),
    Row("rss_above_startup_mb", "- above start-up (imports) MiB", "lower", 0),
    Row("forward_seconds", "backbone forward s (torchvision, floor for both)", None, 2),
    Row("extractor_forward_seconds", "- Hamacho's extractor forward s (BN folded)", None, 2),
    Row("test_over_forward", "test wall / forward", "lower", 2),
)

# Targets, as (comparison, ratio ours / anomalib). Accuracy: every metric >= anomalib's.
ACCURACY_TARGET = (">=", 1.0)
COST_TARGETS: dict[str, dict[str, tuple[str, float]]] = {
    "padim": {"fit_seconds": ("<=", 0.5), "peak_rss_mb": ("<=", 0.5), "test_images_per_second": (">=", 2.0)},
    "patchcore": {"fit_seconds": ("<=", 0.5), "test_seconds": ("<=", 0.5)},
}


def hamacho_figures(result: dict[str, Any], floor: dict[str, Any]) -> dict[str, float | None]:
    """Figures of a Hamacho run: fit wall = fit + calibration (anomalib's fit includes its validation)."""
    t = result["timings"]
    fit = t["fit_seconds"] + t["calibration_seconds"]
    return _with_floor({
        **{k: result["metrics"].get(k) for k in METRIC_KEYS},
        "fit_seconds": fit,
        "feature_extraction_seconds": t.get("feature_extraction_seconds"),
        "model_fit_seconds": t.get("model_fit_seconds"),
        "calibration_seconds": t["calibration_seconds"],
        "test_seconds": t["test_seconds"],
        "test_images_per_second": t["test_images_per_second"],
        "peak_rss_mb": t["peak_rss_mb"],
        "rss_above_startup_mb": _above(t["peak_rss_mb"], t.get("startup_rss_mb")),
    }, floor)


def anomalib_figures(
    result: dict[str, Any], metrics: dict[str, float | None], floor: dict[str, Any]
) -> dict[str, float | None]:
    """Figures of an anomalib run (metrics computed from its raw dump with Hamacho's functions)."""
    t = result["timings"]
    return _with_floor({
        **{k: metrics.get(k) for k in METRIC_KEYS},
        "fit_seconds": t["fit_seconds"],
        "feature_extraction_seconds": t.get("feature_extraction_seconds"),
        "model_fit_seconds": t.get("model_fit_seconds"),
        "calibration_seconds": t.get("validation_seconds"),
        "test_seconds": t["test_seconds"],
        "test_images_per_second": t["test_images_per_second"],
        "peak_rss_mb": t["peak_rss_mb"],
        "rss_above_startup_mb": _above(t["peak_rss_mb"], t.get("startup_rss_mb")),
    }, floor)


def _above(peak: float | None, startup: float | None) -> float | None:
    return peak - startup if peak is not None and startup is not None else None


def _with_floor(figures: dict[str, float | None], floor: dict[str, Any]) -> dict[str, float | None]:
    """Add the forward floor (``forward.json`` of the run's folder) and test wall / torchvision forward."""
    forward_seconds = floor.get("forward_seconds")
    figures["forward_seconds"] = forward_seconds
    figures["extractor_forward_seconds"] = floor.get("extractor_forward_seconds")
    test = figures.get("test_seconds")
    figures["test_over_forward"] = test / forward_seconds if test is not None and forward_seconds else None
    return figures


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either is unknown or theirs is zero."""
    if ours is None or theirs is None or not _finite(ours) or not _finite(theirs) or theirs == 0:
        return None
    return ours / theirs


def target_for(model: str, key: str) -> tuple[str, float] | None:
    """The issue's target for one figure of one model, as (">=" or "<=", ratio), or None."""
    if key in METRIC_KEYS:
        return ACCURACY_TARGET
    return COST_TARGETS.get(model, {}).get(key)


def passes(target: tuple[str, float] | None, ours: float | None, theirs: float | None) -> bool | None:
    """Whether ours meets the target against theirs; None without a target or without both values.

    Accuracy targets compare the values directly (ours >= theirs), cost targets the ratio.
    """
    if target is None or ours is None or theirs is None or not _finite(ours) or not _finite(theirs):
        return None
    op, bound = target
    if target == ACCURACY_TARGET:
        return ours >= theirs
    value = ratio(ours, theirs)
    if value is None:
        return None
    return value >= bound if op == ">=" else value <= bound


def compare(model: str, ours: dict[str, float | None], theirs: dict[str, float | None] | None,
            extras: dict[str, dict[str, float | None]] | None = None) -> list[dict[str, Any]]:
    """One dict per row: values, ratio, target and pass/fail.

    Args:
        model: ``padim`` or ``patchcore`` (selects the cost targets).
        ours: Figures of the compared Hamacho run.
        theirs: Figures of the anomalib run, or None without a peer.
        extras: More Hamacho runs shown beside (e.g. ``{"coreset 0.1": figures}``), without ratios.

    Returns:
        Rows in :data:`ROWS` order.
    """
    rows = []
    for row in ROWS:
        a = ours.get(row.key)
        b = theirs.get(row.key) if theirs is not None else None
        target = target_for(model, row.key) if theirs is not None else None
        rows.append({
            "key": row.key,
            "label": row.label,
            "hamacho": a,
            "anomalib": b,
            "ratio": ratio(a, b),
            "target": _target_text(target),
            "pass": passes(target, a, b),
            "extras": {name: figures.get(row.key) for name, figures in (extras or {}).items()},
        })
    return rows


def _target_text(target: tuple[str, float] | None) -> str:
    if target is None:
        return ""
    if target == ACCURACY_TARGET:
        return ">= anomalib"
    op, bound = target
    return f"{op} {bound:g}x"


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def fmt(value: float | None, digits: int) -> str:
    """A number for the table; ``-`` when unknown."""
    if value is None or not _finite(value):
        return "-"
    return f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"


def markdown_table(title: str, rows: list[dict[str, Any]], with_peer: bool) -> str:
    """A Markdown table of one (category, model) comparison."""
    digits = {row.key: row.digits for row in ROWS}
    extra_names = list(rows[0]["extras"]) if rows else []
    header = ["figure", "hamacho"]
    if with_peer:
        header += ["anomalib", "ours / anomalib", "target", "pass"]
    header += [f"hamacho {name}" for name in extra_names]
    lines = [f"#### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        d = digits.get(r["key"], 2)
        cells = [r["label"], fmt(r["hamacho"], d)]
        if with_peer:
            verdict = {True: "PASS", False: "FAIL", None: ""}[r["pass"]]
            cells += [fmt(r["anomalib"], d), fmt(r["ratio"], 3 if r["key"] in METRIC_KEYS else 2), r["target"],
                      verdict]
        cells += [fmt(r["extras"][name], d) for name in extra_names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_summary(comparisons: list[dict[str, Any]]) -> str:
    """``targets met: X of Y`` over every compared (category, model), naming the misses."""
    checked = [(c["title"], r) for c in comparisons for r in c["rows"] if r["pass"] is not None]
    if not checked:
        return "targets: no peer run, nothing to compare"
    misses = [f"{title}: {r['label']} ({fmt(r['ratio'], 3 if r['key'] in METRIC_KEYS else 2)}x, target {r['target']})"
              for title, r in checked if not r["pass"]]
    text = f"targets met: {len(checked) - len(misses)} of {len(checked)}"
    return text + ("" if not misses else "\nmissed:\n  " + "\n  ".join(misses))
