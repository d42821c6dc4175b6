"""The report's example pictures: input | ground truth | heatmap | predicted mask | segmentation, per group.

The groups and how they are ranked are described in :mod:`hamacho.report.examples`.
"""

from __future__ import annotations

from html import escape

import cv2
import numpy as np

from hamacho.report.drawing import compose_report
from hamacho.report.figure_writer import FigureWriter
from hamacho.results.examples import Example
from hamacho.results.types import ReportData


def examples_section(figures: FigureWriter, data: ReportData, alpha: float, pixel_cut: float) -> str:
    """The worst and best scored examples (and unlabelled groups), as pictures with captions.

    Args:
        figures: Where the pictures go.
        data: The report data gathered by the results collector.
        alpha: Heatmap opacity.
        pixel_cut: Normalized pixel threshold, marked on the colour bar.

    Returns:
        The ``<section>``, or an empty string when there is no example.
    """
    tracker = data.examples
    worst = tracker.group("worst")
    groups = [
        ("worst", "Worst scored", "Wrong decisions first (furthest from the cut), then right ones closest to it.",
         worst),
        ("best", "Best scored", "Clearest right decisions, defective and good in turn.",
         tracker.best(exclude={e.name for e in worst})),
        ("highest", "Unlabelled: highest scores", "Images without a label, most anomalous first.",
         tracker.group("highest")),
        ("borderline", "Unlabelled: closest to the cut", "Images without a label whose decision is least sure.",
         tracker.group("borderline")),
    ]
    parts = []
    for key, title, lead, examples in groups:
        if not examples:
            continue
        pictures = "".join(_example_figure(figures, f"{key}_{i:02d}.png", i, e, alpha, pixel_cut)
                           for i, e in enumerate(examples, start=1))
        parts.append(f'<div id="{key}-examples" class="examples"><h3>{title}</h3><p class="lead">{lead} '
                     "Input | ground truth | heatmap | predicted mask | segmentation.</p>"
                     f"{pictures}</div>")
    if not parts:
        return ""
    return f'<section id="examples"><h2>Examples</h2>{"".join(parts)}</section>'


def _verdict(example: Example) -> str:
    if not example.label:
        return f"no label, called {example.decision}"
    kind = {("good", "NG"): "false positive", ("defective", "OK"): "false negative",
            ("good", "OK"): "true negative", ("defective", "NG"): "true positive"}[(example.label, example.decision)]
    return f"{example.label}, called {example.decision} ({kind})"


def _example_figure(figures: FigureWriter, name: str, rank: int, example: Example, alpha: float, cut: float) -> str:
    is_ng = example.decision == "NG"
    title = f"{example.name}   score {example.normalized_score:.3f}   {example.decision}"
    if example.label:
        title += f"   (label: {example.label})"
    picture = compose_report(example.image, example.norm_map.astype(np.float32), example.pred_mask, title, is_ng,
                             example.gt_mask, alpha, cut, example.inspected)
    caption = (f"<b>#{rank}</b> {escape(example.name)} \u00b7 {escape(_verdict(example))} \u00b7 "
               f"score {example.normalized_score:.3f}")
    return figures.add(name, _encode_png(picture), f"{example.name}: {_verdict(example)}", caption,
                       "example wrong" if example.wrong else "example")


def _encode_png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("cannot encode an example picture as PNG")
    return encoded.tobytes()
