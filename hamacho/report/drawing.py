"""Report pictures: heatmap overlay, predicted mask, segmentation outline and the composed report image.

Maps passed here are *normalized* (0..1, the decision cut at 0.5 unless the user moved it).
Drawing uses OpenCV: composing one 5-panel report image takes about 3 ms, against about 150 ms for
a matplotlib figure, which matters when a test set has thousands of images.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

BACKGROUND = (255, 255, 255)
TEXT = (30, 30, 30)
OK_COLOUR = (0, 140, 60)
NG_COLOUR = (210, 30, 30)
OUTLINE = (255, 0, 0)
GAP = 8
CAPTION_H = 22
HEADER_H = 34
FOOTER_H = 30
FONT = cv2.FONT_HERSHEY_SIMPLEX


def colorize(norm_map: np.ndarray) -> np.ndarray:
    """Normalized map (H, W) in 0..1 -> RGB uint8 with the JET colour map (blue OK, red NG)."""
    values = np.nan_to_num(np.clip(norm_map, 0.0, 1.0)) * 255.0
    coloured = cv2.applyColorMap(values.round().astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)


def heatmap_overlay(image: np.ndarray, norm_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured map over an RGB image of the same size."""
    return cv2.addWeighted(colorize(norm_map), alpha, image, 1.0 - alpha, 0.0)


NOT_INSPECTED_GREY = 170
HATCH_GREY = 120
HATCH_PERIOD = 12


def grey_out(picture: np.ndarray, inspected: np.ndarray | None) -> np.ndarray:
    """Show pixels that are not inspected as such: washed-out grey with diagonal hatching (a copy)."""
    if inspected is None or bool(inspected.all()):
        return picture
    out = picture.copy()
    outside = ~inspected
    out[outside] = (out[outside].astype(np.float32) * 0.25 + NOT_INSPECTED_GREY * 0.75).astype(np.uint8)
    yy, xx = np.ogrid[: inspected.shape[0], : inspected.shape[1]]
    out[outside & (((xx + yy) % HATCH_PERIOD) < 2)] = HATCH_GREY
    return out


def mask_image(mask: np.ndarray) -> np.ndarray:
    """Bool mask -> RGB white-on-black picture."""
    return np.repeat((mask.astype(np.uint8) * 255)[:, :, None], 3, axis=2)


def segmentation_overlay(image: np.ndarray, mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """Outline the regions of ``mask`` on a copy of ``image``."""
    out = image.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, OUTLINE, thickness, lineType=cv2.LINE_AA)
    return out


# OpenCV's fonts are ASCII only; other text (Japanese file names) is drawn by matplotlib with the first
# of these fonts that is installed (about 25 ms a picture, only for such titles).
UNICODE_FONTS = ("Noto Sans CJK JP", "Noto Sans JP", "Source Han Sans JP", "IPAexGothic", "IPAGothic",
                 "TakaoGothic", "Yu Gothic", "Meiryo", "MS Gothic", "Hiragino Sans", "WenQuanYi Zen Hei",
                 "Droid Sans Fallback")


@functools.cache
def _font_families() -> tuple[str, ...]:
    """DejaVu Sans, then the installed fonts of :data:`UNICODE_FONTS` (matplotlib falls back along the list)."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *[name for name in UNICODE_FONTS if name in installed])


def _text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, colour: tuple, bold: bool = False) -> None:
    if text.isascii():
        cv2.putText(canvas, text, (x, y), FONT, scale, colour, 2 if bold else 1, cv2.LINE_AA)
    else:
        _unicode_text(canvas, text, x, y, scale, colour, bold)


def _unicode_text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, colour: tuple, bold: bool) -> None:
    """Draw ``text`` with its baseline at ``y`` like cv2.putText, in a font that has its characters."""
    import logging
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height = min(canvas.shape[0], y + 10)
    width = canvas.shape[1] - x
    if width <= 0 or height <= 0:
        return
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    figure.text(0, 1 - y / height, text, fontsize=scale * 20, color=[c / 255 for c in colour], va="baseline",
                family=list(_font_families()), weight="bold" if bold else "normal")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.getLogger("matplotlib.font_manager").level
        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        try:
            agg = FigureCanvasAgg(figure)
            agg.draw()
        finally:
            logging.getLogger("matplotlib.font_manager").setLevel(level)
    rgba = np.asarray(agg.buffer_rgba())[:height, :width]
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    region = canvas[:height, x : x + width].astype(np.float32)
    canvas[:height, x : x + width] = (region * (1 - alpha) + rgba[:, :, :3] * alpha).round().astype(np.uint8)


def _colour_bar(width: int, cut: float) -> np.ndarray:
    bar = np.zeros((FOOTER_H, width, 3), dtype=np.uint8)
    bar[:] = BACKGROUND
    ramp = colorize(np.tile(np.linspace(0.0, 1.0, width), (8, 1)))
    bar[2:10] = ramp
    for value in (0.0, cut, 1.0):
        x = round(value * (width - 1))
        cv2.line(bar, (x, 0), (x, 12), TEXT, 1)
        label = f"{value:g}"
        size = cv2.getTextSize(label, FONT, 0.4, 1)[0][0]
        _text(bar, label, min(max(x - size // 2, 0), width - size), 26, 0.4, TEXT)
    return bar


def compose_report(
    image: np.ndarray,
    norm_map: np.ndarray,
    pred_mask: np.ndarray,
    title: str,
    is_ng: bool,
    gt_mask: np.ndarray | None = None,
    alpha: float = 0.5,
    pixel_cut: float = 0.5,
    inspected: np.ndarray | None = None,
) -> np.ndarray:
    """One report picture: input | ground truth (if any) | heatmap | predicted mask | segmentation.

    Args:
        image: RGB uint8 (H, W, 3), the frame the model saw.
        norm_map: Normalized anomaly map (H, W).
        pred_mask: Predicted defect mask (H, W) bool.
        title: Header text (file name, score, decision).
        is_ng: Colours the header's decision red (NG) or green (OK).
        gt_mask: Ground-truth mask (H, W) bool, or None.
        alpha: Heatmap opacity.
        pixel_cut: Normalized pixel threshold, marked on the colour bar.
        inspected: bool (H, W), the inspected pixels; the others are greyed and hatched. None: all.

    Returns:
        RGB uint8 picture.
    """
    panels = [("Input", image)]
    if gt_mask is not None:
        panels.append(("Ground truth", mask_image(gt_mask)))
    panels += [
        ("Heatmap", grey_out(heatmap_overlay(image, norm_map, alpha), inspected)),
        ("Predicted mask", grey_out(mask_image(pred_mask), inspected)),
        ("Segmentation", grey_out(segmentation_overlay(image, pred_mask), inspected)),
    ]
    side_h, side_w = image.shape[:2]
    width = len(panels) * side_w + (len(panels) + 1) * GAP
    height = HEADER_H + CAPTION_H + side_h + FOOTER_H + GAP
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    _text(canvas, title, GAP, 23, 0.6, NG_COLOUR if is_ng else OK_COLOUR, bold=True)
    top = HEADER_H + CAPTION_H
    for i, (caption, panel) in enumerate(panels):
        x = GAP + i * (side_w + GAP)
        _text(canvas, caption, x, top - 7, 0.5, TEXT)
        canvas[top : top + side_h, x : x + side_w] = panel
        if caption == "Heatmap":
            canvas[top + side_h : top + side_h + FOOTER_H, x : x + side_w] = _colour_bar(side_w, pixel_cut)
    return canvas
