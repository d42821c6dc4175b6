"""Evaluation metrics: image/pixel AUROC and F1 (torchmetrics) and AUPRO (MVTec AD, FPR up to 0.3)."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_f1_score

from hamacho.post.threshold import to_unit_range


def _auroc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    if labels.min() == labels.max():
        return None  # one class only: undefined
    return float(binary_auroc(to_unit_range(scores), labels.long()))


def _f1(predicted: torch.Tensor, labels: torch.Tensor) -> float | None:
    if not bool(labels.any()) and not bool(predicted.any()):
        return None  # no positives anywhere: undefined
    return float(binary_f1_score(predicted.long(), labels.long()))


def image_metrics(scores: torch.Tensor, labels: torch.Tensor, predicted: torch.Tensor) -> dict[str, float | None]:
    """Image AUROC (threshold-free, from raw scores) and F1 of the OK/NG decisions.

    Args:
        scores: Raw image scores (N,).
        labels: 0 good, 1 defective (N,).
        predicted: Decisions (N,), True for NG.

    Returns:
        ``image_AUROC`` and ``image_F1``; None where undefined (e.g. a single class).
    """
    if scores.numel() == 0:
        return {"image_AUROC": None, "image_F1": None}
    return {"image_AUROC": _auroc(scores, labels), "image_F1": _f1(predicted, labels)}


def pixel_metrics(maps: torch.Tensor, masks: torch.Tensor, predicted: torch.Tensor) -> dict[str, float | None]:
    """Pixel AUROC and AUPRO (from raw maps) and pixel F1 of the predicted masks.

    Args:
        maps: Raw anomaly maps (N, H, W) of images that have pixel labels.
        masks: Ground truth (N, H, W), non-zero where defective.
        predicted: Predicted masks (N, H, W), True where NG.

    Returns:
        ``pixel_AUROC``, ``pixel_F1`` and ``pixel_AUPRO``; None where undefined.
    """
    if maps.numel() == 0:
        return {"pixel_AUROC": None, "pixel_F1": None, "pixel_AUPRO": None}
    flat_scores, flat_labels = maps.flatten(), (masks.flatten() > 0)
    return {
        "pixel_AUROC": _auroc(flat_scores, flat_labels),
        "pixel_F1": _f1(predicted.flatten(), flat_labels),
        "pixel_AUPRO": aupro(maps, masks),
    }


def aupro(maps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (Bergmann et al., 2021).

    Every connected defect region (8-connectivity) weighs the same whatever its size: at a threshold,
    PRO is the mean over regions of the share of the region's pixels at or above it, and FPR is the
    share of defect-free pixels (of all images) at or above it. The curve PRO(FPR) is integrated with
    the trapezoid rule from 0 to ``fpr_limit`` (interpolated at the limit) and divided by ``fpr_limit``.
    The computation is exact: one sort of all pixels, with ties resolved as a single threshold.

    Args:
        maps: Anomaly maps (N, H, W), any score units.
        masks: Ground truth (N, H, W), non-zero where defective.
        fpr_limit: Upper end of the integration range, in (0, 1].

    Returns:
        AUPRO in [0, 1], or None without any defect region or defect-free pixel.
    """
    maps_np = np.asarray(maps, dtype=np.float64).reshape(-1, *np.shape(maps)[-2:])
    masks_np = np.asarray(masks).reshape(maps_np.shape) > 0
    weights = np.zeros(maps_np.shape, dtype=np.float64)  # PRO contribution of each defect pixel
    regions = 0
    per_image = []
    for mask in masks_np:
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        per_image.append((count - 1, labels))
        regions += count - 1
    background = ~masks_np
    n_background = int(background.sum())
    if regions == 0 or n_background == 0:
        return None
    for index, (count, labels) in enumerate(per_image):
        if count:
            sizes = np.bincount(labels.ravel(), minlength=count + 1).astype(np.float64)
            inverse = np.zeros_like(sizes)
            inverse[1:] = 1.0 / (sizes[1:] * regions)
            weights[index] = inverse[labels]
    scores = maps_np.ravel()
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    fpr = np.cumsum(background.ravel()[order]) / n_background
    pro = np.cumsum(weights.ravel()[order])
    # Keep the last position of each run of equal scores: one threshold per distinct score.
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    if fpr_limit < fpr[-1]:
        cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
        pro_at_limit = np.interp(fpr_limit, fpr[cut - 1 : cut + 1], pro[cut - 1 : cut + 1])
        fpr = np.r_[fpr[:cut], fpr_limit]
        pro = np.r_[pro[:cut], pro_at_limit]
    return float(_trapezoid(pro, fpr) / fpr_limit)


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 only has trapz
