"""Metrics of raw predictions with Hamacho's own functions, so both sides are scored identically.

The anomalib side dumps raw image scores and anomaly maps (before its normalization). Here they are
calibrated and evaluated exactly as Hamacho's training run does it: thresholds by
:func:`hamacho.post.threshold.calibrate` on the labelled test images (F1-optimal image and pixel
thresholds), min/max normalization so that 0.5 is the cut, then :func:`hamacho.post.metrics.image_metrics`
and :func:`hamacho.post.metrics.pixel_metrics` (AUROC, F1 and AUPRO up to FPR 0.3) against Hamacho's
own ground-truth masks resized to the run's image size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hamacho.data.decoding import ImageReadError, read_mask, resize_mask
from hamacho.data.discovery import Sample, discover_dataset
from hamacho.post.metrics import image_metrics, pixel_metrics
from hamacho.post.normalization import decide, normalize
from hamacho.post.threshold import calibrate


def ground_truth(samples: list[Sample], image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (N,), masks (N, S, S) bool and has-mask flags (N,) as Hamacho's dataset builds them.

    Good images have an all-zero mask; defective images without a usable mask count for image
    metrics only.
    """
    labels, masks, has_mask = [], [], []
    for sample in samples:
        labels.append(-1 if sample.label is None else sample.label)
        mask = np.zeros((image_size, image_size), dtype=bool)
        usable = sample.label == 0
        if sample.mask_path is not None:
            try:
                mask = resize_mask(read_mask(sample.mask_path), image_size)
                usable = True
            except ImageReadError:
                usable = False
        masks.append(mask)
        has_mask.append(usable)
    return np.array(labels, dtype=np.int64), np.stack(masks), np.array(has_mask, dtype=bool)


def evaluate_raw(
    scores: np.ndarray, maps: np.ndarray | None, labels: np.ndarray, masks: np.ndarray | None = None,
    has_mask: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Calibrate on the labelled images and compute the five metrics, as ``hamacho train`` does.

    Args:
        scores: Raw image scores (N,).
        maps: Raw anomaly maps (N, S, S), or None for image metrics only.
        labels: 0 good, 1 defective, -1 unknown (N,).
        masks: Ground truth (N, S, S).
        has_mask: Whether each image's mask counts for pixel metrics (N,).

    Returns:
        ``image_AUROC``, ``image_F1``, ``pixel_AUROC``, ``pixel_F1``, ``pixel_AUPRO`` (None where undefined).
    """
    scores_t = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels)
    keep = labels >= 0
    if maps is None:
        thresholds = calibrate(scores_t[keep], labels[keep], None, None)
        threshold, low, high = thresholds.image_threshold, float(scores_t[keep].min()), float(scores_t[keep].max())
        return image_metrics(scores_t[keep], labels[keep], decide(normalize(scores_t[keep], threshold, low, high)))
    maps_t = np.asarray(maps, dtype=np.float32)
    scores_t, maps_t, labels, masks, has_mask = scores_t[keep], maps_t[keep], labels[keep], masks[keep], has_mask[keep]
    pixel_keep = has_mask
    pixel_scores = maps_t[pixel_keep].ravel() if bool(masks[pixel_keep].any()) else None
    pixel_labels = masks[pixel_keep].ravel().astype(np.int64) if pixel_scores is not None else None
    thresholds = calibrate(scores_t, labels, pixel_scores, pixel_labels)
    image_min, image_max = float(scores_t.min()), float(scores_t.max())
    pixel_min, pixel_max = float(maps_t.min()), float(maps_t.max())
    decisions = decide(normalize(scores_t, thresholds.image_threshold, image_min, image_max))
    metrics = image_metrics(scores_t, labels, decisions)
    if bool(masks[pixel_keep].any()):
        predicted = decide(normalize(maps_t[pixel_keep], thresholds.pixel_threshold, pixel_min, pixel_max))
        metrics.update(pixel_metrics(maps_t[pixel_keep], masks[pixel_keep], predicted))
    else:
        metrics.update(pixel_AUROC=None, pixel_F1=None, pixel_AUPRO=None)
    return metrics


def score_peer_dump(raw_dir: str | Path, dataset: str | Path, image_size: int) -> dict[str, float | None]:
    """Metrics of a peer's ``scores.npy`` / ``maps.npy`` / ``paths.json`` dump on Hamacho's ground truth.

    Raises:
        ValueError: When the dumped images are not exactly Hamacho's test images.
    """
    raw_dir = Path(raw_dir)
    scores = np.load(raw_dir / "scores.npy")
    maps = np.load(raw_dir / "maps.npy")
    paths = json.loads((raw_dir / "paths.json").read_text(encoding="utf-8"))
    by_path = {str(Path(s.path).resolve()): s for s in discover_dataset(dataset).test}
    resolved = [str(Path(p).resolve()) for p in paths]
    unknown = [p for p in resolved if p not in by_path]
    if unknown or len(set(resolved)) != len(by_path):
        raise ValueError(
            f"the peer tested {len(set(resolved))} images, Hamacho's test set has {len(by_path)}"
            + (f"; not in Hamacho's test set: {unknown[:3]}" if unknown else "")
        )
    if maps.shape[-2:] != (image_size, image_size):
        raise ValueError(f"peer anomaly maps are {maps.shape[-2:]}, expected {image_size}x{image_size}")
    labels, masks, has_mask = ground_truth([by_path[p] for p in resolved], image_size)
    return evaluate_raw(scores, maps, labels, masks, has_mask)


def main(argv: list[str] | None = None) -> int:
    """``scoring.py RAW_DIR DATASET IMAGE_SIZE``: write the dump's metrics to ``RAW_DIR/metrics.json``.

    Run as its own process by ``benchmarks/run.py``, so that the orchestrating process never loads torch:
    on Linux a child inherits its parent's peak RSS (``ru_maxrss`` survives fork and exec), so the parent
    must stay small for every run's peak RSS to be its own.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(main.__doc__, file=sys.stderr)
        return 2
    metrics = score_peer_dump(args[0], args[1], int(args[2]))
    (Path(args[0]) / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
