"""The report's figures (matplotlib, Agg canvas): score histograms and ROC / precision-recall curves.

Every function returns PNG bytes. Figures are drawn on a plain :class:`~matplotlib.figure.Figure` with
the Agg canvas, never through ``pyplot``, so no global backend or open-figure state is touched.
Sizes are in inches at about 105 screen pixels per inch of the page's layout (the histograms fill
half of its width, the curve figures most of it), so that every figure shows its text at the same
size; they are saved at a higher resolution for print and slides.
Histograms use *raw* scores: normalized scores are clipped to 0..1, which would pile the tails onto
the ends of the axis. The threshold line is the raw equivalent of the normalized cut in use.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hamacho.post.curves import Curves

GOOD = "#2f6db5"
DEFECTIVE = "#d1495b"
UNLABELLED = "#6c757d"
THRESHOLD = "#222222"
DPI = 160
STYLE = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 9.5,
    "legend.fontsize": 8.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e4e4e4",
    "grid.linewidth": 0.7,
    "axes.axisbelow": True,
}


def _new_figure(width: float, height: float, columns: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns)
    return figure, list(np.atleast_1d(axes))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return buffer.getvalue()


def _threshold_label(raw: float, cut: float) -> str:
    return f"threshold: normalized {cut:g} = raw {raw:.4g}"


def score_histogram(
    good: Sequence[float],
    defective: Sequence[float],
    unlabelled: Sequence[float],
    threshold: float,
    cut: float,
    title: str = "Image scores",
) -> bytes:
    """Histogram of raw image scores per class, with the threshold line.

    Args:
        good: Raw scores of good images.
        defective: Raw scores of defective images.
        unlabelled: Raw scores of images without a label.
        threshold: Raw score of the cut in use.
        cut: The normalized cut (for the legend).
        title: Figure title.

    Returns:
        PNG bytes.
    """
    with matplotlib.rc_context(STYLE):
        figure, (ax,) = _new_figure(5.1, 3.2)
        groups = [(np.asarray(v, float), name, colour) for v, name, colour in (
            (good, "good", GOOD), (defective, "defective", DEFECTIVE), (unlabelled, "unlabelled", UNLABELLED))
            if len(v)]
        every = np.concatenate([g[0] for g in groups] + [np.array([threshold])])
        bins = np.histogram_bin_edges(every, bins=int(np.clip(np.sqrt(every.size) * 2, 10, 40)))
        for values, name, colour in groups:
            ax.hist(values, bins=bins, color=colour, alpha=0.45, label=f"{name} ({values.size})")
            ax.hist(values, bins=bins, color=colour, histtype="step", linewidth=1.4)
        ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.3, label=_threshold_label(threshold, cut))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set(title=title, xlabel="raw image score (higher = more anomalous)", ylabel="images")
        ax.legend(loc="best", frameon=False)
        return _png(figure)


def pixel_histogram(scores: np.ndarray, labels: np.ndarray, threshold: float, cut: float) -> bytes:
    """Histogram of sampled raw pixel values, good vs defective pixels, each as a share of its class.

    Args:
        scores: Sampled raw anomaly-map values.
        labels: Their 0/1 labels.
        threshold: Raw pixel value of the cut in use.
        cut: The normalized pixel cut (for the legend).

    Returns:
        PNG bytes.
    """
    with matplotlib.rc_context(STYLE):
        figure, (ax,) = _new_figure(5.1, 3.2)
        labels = labels.astype(bool)
        bins = np.histogram_bin_edges(np.r_[scores, threshold], bins=60)
        for mask, name, colour in ((~labels, "good pixels", GOOD), (labels, "defective pixels", DEFECTIVE)):
            if mask.any():
                weights = np.full(int(mask.sum()), 1.0 / mask.sum())
                ax.hist(scores[mask], bins=bins, weights=weights, color=colour, alpha=0.45,
                        label=f"{name} ({int(mask.sum()):,} sampled)")
                ax.hist(scores[mask], bins=bins, weights=weights, color=colour, histtype="step", linewidth=1.2)
        ax.axvline(threshold, color=THRESHOLD, linestyle="--", linewidth=1.3, label=_threshold_label(threshold, cut))
        ax.set_yscale("log")
        ax.set(title="Pixel scores", xlabel="raw anomaly-map value", ylabel="share of the class's pixels (log)")
        ax.legend(loc="upper right", frameon=False)
        return _png(figure)


def curves_figure(curves: Curves, level: str, auroc: float | None) -> bytes:
    """ROC and precision-recall side by side, with the operating point of the threshold in use.

    Args:
        curves: Curve points (see :func:`hamacho.report.curves.binary_curves`).
        level: ``Image`` or ``Pixel`` (titles).
        auroc: AUROC from the metrics, shown in the ROC legend (None: not shown).

    Returns:
        PNG bytes.
    """
    with matplotlib.rc_context(STYLE):
        figure, (roc, pr) = _new_figure(8.6, 3.9, columns=2)
        roc_label = f"ROC (AUROC {auroc:.4f})" if auroc is not None else "ROC"
        roc.plot(curves.fpr, curves.tpr, color=DEFECTIVE, linewidth=1.8, label=roc_label)
        roc.plot([0, 1], [0, 1], color="#9a9a9a", linestyle=":", linewidth=1, label="chance")
        roc.set(title=f"{level} ROC", xlabel="false-positive rate (good called NG)",
                ylabel="true-positive rate (defective called NG)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        pr.plot(curves.recall, curves.precision, color=GOOD, linewidth=1.8, label="precision-recall")
        pr.set(title=f"{level} precision-recall", xlabel="recall (defective called NG)",
               ylabel="precision (NG calls that are defective)", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01))
        point = curves.operating_point
        if point is not None:
            style = {"marker": "o", "markersize": 7, "color": THRESHOLD, "linestyle": "none", "zorder": 5}
            roc.plot([point.fpr], [point.recall], **style,
                     label=f"threshold in use: FPR {point.fpr:.3f}, TPR {point.recall:.3f}")
            if point.tp + point.fp:
                pr.plot([point.recall], [point.precision], **style,
                        label=f"threshold in use: recall {point.recall:.3f}, precision {point.precision:.3f}")
            share = (point.tp + point.fn) / (point.tp + point.fp + point.tn + point.fn)
            pr.axhline(share, color="#9a9a9a", linestyle=":", linewidth=1, label=f"chance (defective share {share:.3g})")
        for ax in (roc, pr):
            ax.set_aspect("equal")
            ax.legend(loc="lower right" if ax is roc else "lower left", frameon=True, framealpha=0.9,
                      edgecolor="#dddddd")
        return _png(figure)
