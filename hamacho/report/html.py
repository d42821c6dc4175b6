"""The analysis report: one self-contained ``report.html`` (figures embedded) plus the figures as PNG.

Written after ``hamacho train`` and ``hamacho inference`` (unless ``--no-report``), beside results.csv:

    report.html          opens offline: inline CSS, figures as base64 PNG, no scripts, no web fonts
    report/*.png         the same figures as files, for slides and documents

What the page holds is described in docs/report.md. Each file is written atomically; the figures
first, the page last, so a failure leaves the previous report whole.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from hamacho import __version__
from hamacho.errors import Interrupted, first_line
from hamacho.files import atomic_write_text
from hamacho.framing_checks import size_pair
from hamacho.post.curves import binary_curves
from hamacho.post.normalization import raw_threshold
from hamacho.report import plots
from hamacho.report import sections as sec
from hamacho.report.example_section import examples_section
from hamacho.report.figure_writer import FIGURE_DIR, FigureWriter
from hamacho.report.page_style import CSS
from hamacho.report.results import held_out_text
from hamacho.results.types import PIXEL_METRICS, ImageResult, ReportData

REPORT_FILENAME = "report.html"


def write_report(
    output_dir: str | Path,
    summary: dict[str, Any],
    rows: Sequence[ImageResult],
    config: dict[str, Any],
    data: ReportData | None,
    image_cut: float = 0.5,
    pixel_cut: float = 0.5,
    kind: str = "training",
    step: Callable[[], None] | None = None,
    model_title: str = "",
) -> Path:
    """Write ``report.html`` and ``report/*.png`` into ``output_dir``.

    Args:
        output_dir: Results folder (results.csv is already there).
        summary: The run's summary, as written to metrics.json (``calibration``, ``metrics``, ``timings``,
            training: ``counts``, ``notes``; inference: ``image_path``, ``images``, ``unreadable``).
        rows: Per-image results (as in results.csv).
        config: Effective configuration (model, dataset and visualization sections are read).
        data: Examples, pixel sample and pixel curves gathered while testing, or None.
        image_cut: Normalized image threshold in use.
        pixel_cut: Normalized pixel threshold in use.
        kind: ``training`` or ``inference`` (headings and facts).
        step: Called after each section (progress; it may raise to stop the report).
        model_title: How the model is named (``PaDiM``); default its ``model.name``.

    Returns:
        Path of report.html.
    """
    output_dir = Path(output_dir)
    step = step or (lambda: None)
    figures = FigureWriter(output_dir / FIGURE_DIR)
    calibration, metrics = summary["calibration"], summary.get("metrics") or {}
    labelled = [r for r in rows if r.label and r.decision]
    has_labels = bool({r.label for r in labelled} >= {"good", "defective"})  # both classes: curves defined
    model = model_title or config["model"]["name"]
    place = summary.get("category") or Path(str(summary.get("image_path", ""))).name
    parts = [
        _header(model, config, place, kind, rows, metrics, bool(labelled)),
        _summary_section(summary, config, model, rows, kind, image_cut, pixel_cut),
    ]
    step()
    if labelled and metrics:
        same_images = kind == "training" and bool((summary.get("counts") or {}).get("test", {}).get("good"))
        parts.append(_metrics_section(metrics, rows, same_images, summary.get("held_out")))
    parts.append(_distribution_section(figures, rows, calibration, data, image_cut, pixel_cut))
    step()
    if has_labels:
        parts.append(_curves_section(figures, labelled, metrics, data))
        step()
    if data is not None:
        alpha = float(config.get("visualization", {}).get("heatmap_alpha", 0.5))
        parts.append(examples_section(figures, data, alpha, pixel_cut))
        step()
    parts.append(f'<section id="images"><h2>Per-image results</h2><p class="lead">Same rows as '
                 f"<code>results.csv</code>; wrong decisions are highlighted; hover a name for its file path."
                 f"</p>{sec.per_image_table(rows)}</section>")
    page = _page(f"{model} {kind} report \u2013 {place}", "".join(parts))
    figures.remove_stale()
    path = output_dir / REPORT_FILENAME
    atomic_write_text(path, page)
    return path


def write_report_or_warn(log: Callable[[str], None], **kwargs: Any) -> Path | None:
    """:func:`write_report`, but a failure only costs the report: one warning line, None returned.

    A stop request (:class:`~hamacho.errors.Interrupted`) is not a failure of the report: it goes on up.
    """
    try:
        return write_report(**kwargs)
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - the report is an extra: never fail a finished run for it
        log(f"warning: report not written: {type(exc).__name__}: {first_line(exc)}")
        return None


def _header(model: str, config: dict[str, Any], place: str, kind: str, rows: Sequence[ImageResult],
            metrics: dict[str, float | None], labelled: bool) -> str:
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    subtitle = (f"{model} \u00b7 {config['model']['backbone']} \u00b7 {input_text(config['dataset'])} "
                f"\u00b7 {kind} run \u00b7 {now}")
    cards = []
    if labelled:
        for key in ("image_AUROC", "image_F1", "pixel_AUROC", "pixel_AUPRO"):
            if key in metrics:
                cards.append((sec.METRIC_TEXT[key][0], sec.metric_text(metrics[key]), key))
        counts = sec.confusion_counts(rows)
        cards.append(("Wrong decisions", f"{counts['fp'] + counts['fn']} / {sum(counts.values())}", ""))
    ng = sum(r.decision == "NG" for r in rows)
    cards.append(("NG / OK", f"{ng} / {sum(r.decision == 'OK' for r in rows)}", ""))
    card_html = "".join(
        f'<div class="card"{_data_metric(key)}><div class="value">{escape(value)}</div>'
        f'<div class="label">{escape(name)}</div></div>'
        for name, value, key in cards
    )
    warning = ""
    if str(config["model"].get("backbone_weights", "")) == "none":
        warning = ('<p class="warning">Backbone weights: <b>none</b> (seeded random initialisation). Scores are '
                   "far below what ImageNet weights give; use this run for checking the pipeline only.</p>")
    if not labelled:
        warning += ('<p class="info">The images have no good/defective labels, so there are no metrics, '
                    "confusion matrix or curves. Run inference on a dataset root (test/good, test/&lt;type&gt;) "
                    "for those.</p>")
    return (f'<header><h1>Anomaly detection report: {escape(place)}</h1><p class="subtitle">{escape(subtitle)}'
            f'</p><div class="cards">{card_html}</div>{warning}</header>')


def _side_text(size: Any) -> str:
    """``256`` or ``[256, 512]`` as ``256 × 256`` / ``512 × 256`` (width × height)."""
    height, width = size_pair(size)
    return f"{width} \u00d7 {height}"


def input_text(dataset: dict[str, Any], detail: bool = False) -> str:
    """How the model sees images, from the stored ``dataset`` settings: size, tiles, crop, mask."""
    tiling = dataset.get("tiling") or {}
    if tiling.get("tile_size") is not None:
        text = f"{_side_text(tiling['tile_size'])} px tiles"
        if detail:
            step = tiling.get("stride") or tiling["tile_size"]
            text += f" every {_side_text(step)} px over {_side_text(tiling.get('resize') or 0)} px"
    else:
        text = f"{_side_text(dataset.get('image_size', 0))} px"
    if not detail:
        return text
    extras = []
    if dataset.get("keep_aspect"):
        extras.append("aspect kept (padded)")
    if dataset.get("crop") is not None:
        extras.append(f"crop {dataset['crop']}")
    if dataset.get("valid_area_mask"):
        extras.append("valid-area mask")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _data_metric(key: str) -> str:
    return f' data-metric="{key}"' if key else ""


def _summary_section(summary: dict[str, Any], config: dict[str, Any], model: str, rows: Sequence[ImageResult],
                     kind: str, image_cut: float, pixel_cut: float) -> str:
    model_cfg = config["model"]
    facts = [("Model", model),
             ("Backbone", f"{model_cfg['backbone']} (weights: {model_cfg.get('backbone_weights', '?')})"),
             ("Model input", input_text(config["dataset"], detail=True))]
    if kind == "training":
        facts += [("Dataset", str(summary.get("dataset", ""))), ("Seed", str(summary.get("seed", ""))),
                  ("Images fitted", str(summary.get("images_fitted", ""))),
                  ("Images for the threshold", str(summary.get("images_calibrated", "")))]
        counts = summary.get("counts") or {}
    else:
        facts += [("Image path", str(summary.get("image_path", "")))]
        counts = {"scored": {}}
        for row in rows:
            counts["scored"][row.defect_type] = counts["scored"].get(row.defect_type, 0) + 1
    facts += [("Model file", str(summary.get("model_file", ""))), ("Decisions", _decisions(rows))]
    notes = [str(n) for n in summary.get("notes") or []]
    notes_html = ("<h3>Notes</h3><ul class=\"notes\">" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
                  if notes else "")
    return (
        '<section id="summary"><h2>Run summary</h2><div class="pair">'
        f"<div><h3>Setup</h3>{sec.facts_table(facts)}</div><div><h3>Images</h3>{sec.counts_table(counts)}</div>"
        "</div><h3>Thresholds</h3><p class=\"lead\">Scores are normalized so that the calibrated threshold is 0.5; "
        "an image (pixel) is NG when its normalized score is at or above the cut in use.</p>"
        f"{sec.thresholds_table(summary['calibration'], image_cut, pixel_cut, summary.get('thresholds'))}"
        f"<h3>Wall times</h3>{sec.timings_table(summary.get('timings') or {})}{notes_html}</section>"
    )


def _decisions(rows: Sequence[ImageResult]) -> str:
    ng = sum(r.decision == "NG" for r in rows)
    ok = sum(r.decision == "OK" for r in rows)
    return f"{len(rows)} images: {ng} NG, {ok} OK, {len(rows) - ng - ok} unreadable"


def _metrics_section(metrics: dict[str, float | None], rows: Sequence[ImageResult], same_images: bool,
                     held_out: dict[str, Any] | None = None) -> str:
    caveat = ""
    if held_out:
        caveat = ('<p class="info" id="held-out">Of these labelled images, some were held out of the threshold '
                  f"(dataset.holdout): {escape(held_out_text(held_out))}. Those figures are what to expect on new "
                  "parts; the table below covers every test image, the ones that set the threshold too.</p>")
    elif same_images:
        caveat = ('<p class="info">The threshold was set on these same labelled test images (see '
                  "Thresholds), so F1 and the confusion matrix are optimistic for new images; AUROC and AUPRO do "
                  "not depend on the threshold. Confirm on other labelled images with <code>hamacho inference"
                  "</code>.</p>")
    if all(metrics.get(name, 0) is None for name in PIXEL_METRICS):
        caveat += ('<p class="info" id="no-pixel-metrics">Pixel metrics are not available: no defective image '
                   "has a mask, so there is no pixel ground truth. Pictures mark the pixels at or above the "
                   "image threshold (normalized like the image scores).</p>")
    return (
        '<section id="metrics"><h2>Metrics</h2>'
        f"{caveat}{sec.metrics_table(metrics)}"
        '<h3>Confusion matrix at the threshold in use</h3><p class="lead">Labelled, readable images only; '
        "NG counts as positive.</p>"
        f"{sec.confusion_table(sec.confusion_counts(rows))}</section>"
    )


def _distribution_section(figures: FigureWriter, rows: Sequence[ImageResult], calibration: dict[str, float],
                          data: ReportData | None, image_cut: float, pixel_cut: float) -> str:
    readable = [r for r in rows if r.decision and not math.isnan(r.raw_score)]
    by_label = {label: [r.raw_score for r in readable if r.label == label] for label in ("good", "defective", "")}
    parts = []
    if readable:
        png = plots.score_histogram(by_label["good"], by_label["defective"], by_label[""],
                                    raw_threshold(calibration, "image", image_cut), image_cut)
        parts.append(figures.add("image_scores.png", png, "Histogram of image scores",
                                 f"{len(readable)} readable images."))
    sample = data.pixel_sample if data is not None else None
    if sample is not None and sample.scores.size:
        png = plots.pixel_histogram(sample.scores, sample.labels, raw_threshold(calibration, "pixel", pixel_cut),
                                    pixel_cut)
        caption = (f"Seeded sample of {sample.scores.size:,} of the {sample.total:,} labelled pixels, "
                   "defective ones over-sampled (up to half).")
        parts.append(figures.add("pixel_scores.png", png, "Histogram of pixel scores", caption))
    lead = "Raw scores; the dashed line is the cut in use (NG at or above it)."
    if by_label["good"] and by_label["defective"]:
        lead += " Good and defective should sit on either side of it; their overlap is where errors come from."
    return (f'<section id="distributions"><h2>Score distributions</h2><p class="lead">{lead}</p>'
            f'<div class="figures">{"".join(parts)}</div></section>')


def _curves_section(figures: FigureWriter, labelled: Sequence[ImageResult], metrics: dict[str, float | None],
                    data: ReportData | None) -> str:
    scores = np.array([r.raw_score for r in labelled], dtype=np.float64)
    labels = np.array([r.label == "defective" for r in labelled])
    decisions = np.array([r.decision == "NG" for r in labelled])
    parts = []
    image_curves = binary_curves(scores, labels, decisions)
    if image_curves is not None:
        png = plots.curves_figure(image_curves, "Image", metrics.get("image_AUROC"))
        parts.append(figures.add("image_curves.png", png, "Image ROC and precision-recall curves"))
    if data is not None and data.pixel_curves is not None:
        png = plots.curves_figure(data.pixel_curves, "Pixel", metrics.get("pixel_AUROC"))
        parts.append(figures.add("pixel_curves.png", png, "Pixel ROC and precision-recall curves"))
    return ('<section id="curves"><h2>ROC and precision-recall curves</h2><p class="lead">The dot marks the '
            "threshold in use; moving along a curve shows what another threshold would trade.</p>"
            f'<div class="figures wide">{"".join(parts)}</div></section>')


def _page(title: str, body: str) -> str:
    footer = (f"Generated by Hamacho {__version__}. The figures are also saved as PNG files in <code>{FIGURE_DIR}/"
              "</code> beside this page; per-image data is in <code>results.csv</code>, metrics in "
              "<code>metrics.json</code>.")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>{escape(title)}</title><style>{CSS}</style>'
            f"</head><body><main>{body}<footer>{footer}</footer></main></body></html>\n")
