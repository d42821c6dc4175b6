"""Pixel metrics in bounded memory: counts over a fixed grid of score bins instead of every labelled pixel.

The exact pixel metrics (:func:`hamacho.post.metrics.pixel_metrics`) hold every labelled pixel of the metric
grid and sort them all: about 42 bytes a pixel at their peak (float32 maps, masks, an int64 order, the sweep's
arrays, region numbers), 11 MB per labelled 512 px grid, growing with every masked test image. Past
:data:`EXACT_PIXELS` labelled pixels the collector switches to :class:`StreamedPixels`, which keeps only

- a histogram of the defect-free pixels' raw scores over :data:`BINS` equal bins between the scores' range
  (values outside clip to the end bins),
- the same histogram of the defective pixels, and one of them weighted by 1 / (size of their defect region),
  which is all AUPRO needs: a region's overlap at a threshold is its pixels at or above it over its size, so
  the mean over regions is a sum over bins,
- the decisions' true-positive, NG-call and defect counts (pixel F1 of the decisions in use, exact), and a
  seeded sample of pixels for the report's histogram (:class:`PixelReservoir`).

Each bin acts as one threshold (its lower edge), so pixel AUROC and AUPRO are those of the scores rounded
down to 1 / 65,536 of their range: on MVTec bottle's test set (PaDiM) they differ from the exact figures by
less than 1e-5 (docs/benchmark.md, "Tiled memory"). Memory is a few MB whatever the number of images.
torchmetrics' binned curves (``thresholds=`` a number of bins) count the same way, but need torch, which
inference with an exported model does not install; so this is numpy, like the rest of :mod:`hamacho.post`.
"""

from __future__ import annotations

import numpy as np

from hamacho.post.curves import OperatingPoint, PixelSample, pick_sample
from hamacho.post.metrics import defect_regions, pro_area
from hamacho.post.sweep import Sweep, auroc

EXACT_PIXELS = 6_000_000  # labelled metric-grid pixels kept for exact metrics (about 250 MB at their peak)
BINS = 1 << 16


class PixelReservoir:
    """A seeded uniform sample without replacement of defective and of good pixels, of at most ``size`` each,
    taken from a stream (each pixel draws a random key; the ``size`` smallest keys per class are kept)."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.kept = {True: (np.zeros(0), np.zeros(0, np.float32)), False: (np.zeros(0), np.zeros(0, np.float32))}
        self.seen = {True: 0, False: 0}

    def offer(self, scores: np.ndarray, defective: bool) -> None:
        """Offer pixels of one class (flat raw scores)."""
        self.seen[defective] += scores.size
        if self.size <= 0 or scores.size == 0:
            return
        keys, values = self.kept[defective]
        new_keys = self.rng.random(scores.size)
        if keys.size >= self.size:  # only keys below the largest kept one can enter
            entering = new_keys < keys.max()
            new_keys, scores = new_keys[entering], scores[entering]
        keys, values = np.r_[keys, new_keys], np.r_[values, scores.astype(np.float32)]
        if keys.size > self.size:
            best = np.argpartition(keys, self.size - 1)[: self.size]
            keys, values = keys[best], values[best]
        self.kept[defective] = (keys, values)

    def sample(self) -> PixelSample:
        """Half defective and half good where possible, as :func:`hamacho.post.curves.sample_pixels` splits."""
        n_defect, n_good = pick_sample(self.seen[True], self.seen[False], self.size)
        parts = []
        for defective, count in ((True, n_defect), (False, n_good)):
            keys, values = self.kept[defective]
            parts.append(values[np.argsort(keys)[:count]])
        labels = np.r_[np.ones(parts[0].size, np.uint8), np.zeros(parts[1].size, np.uint8)]
        return PixelSample(scores=np.r_[parts[0], parts[1]], labels=labels, total=self.seen[True] + self.seen[False])


class StreamedPixels:
    """Running bin counts of labelled pixels: pixel AUROC, F1 and AUPRO of any number of images.

    Args:
        low: Raw score of the lowest bin's lower edge (the model's calibration minimum of pixel scores).
        high: Raw score of the highest bin's upper edge (its maximum).
        bins: Number of equal bins.
        sample_size: Pixels sampled for the report (0: none).
        seed: Seed of the sample.
    """

    def __init__(self, low: float, high: float, bins: int = BINS, sample_size: int = 0, seed: int = 0) -> None:
        high = high if high > low else low + 1.0
        self.low, self.bins = float(low), bins
        self.width = (float(high) - self.low) / bins
        self.good = np.zeros(bins, np.int64)
        self.defect = np.zeros(bins, np.int64)
        self.pro = np.zeros(bins, np.float64)  # defect pixels weighted by 1 / their region's size
        self.regions = 0
        self.tp = self.called = 0
        self.reservoir = PixelReservoir(sample_size, seed) if sample_size > 0 else None

    def codes(self, scores: np.ndarray) -> np.ndarray:
        """Bin index of each raw score (outside the range: the end bins; NaN: the lowest)."""
        scaled = (np.asarray(scores, dtype=np.float64) - self.low) / self.width
        np.nan_to_num(scaled, copy=False, nan=0.0)
        return np.clip(scaled, 0, self.bins - 1, out=scaled).astype(np.intp)

    def add(self, maps: np.ndarray, masks: np.ndarray, predicted: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Count images on the metric grid: raw maps, bool masks and NG decisions (N, H, W); ``valid``: only
        these pixels count (defect regions are cut to them, as the exact AUPRO does)."""
        for index in range(len(maps)):
            keep = None if valid is None else np.asarray(valid[index], dtype=bool)
            truth = np.asarray(masks[index], dtype=bool)
            truth = truth if keep is None else truth & keep
            called = np.asarray(predicted[index], dtype=bool)
            called = called if keep is None else called & keep
            self.tp += int(np.count_nonzero(called & truth))
            self.called += int(np.count_nonzero(called))
            good = ~truth if keep is None else keep & ~truth
            good_scores = maps[index][good]
            self.good += np.bincount(self.codes(good_scores), minlength=self.bins)
            labels, inverse_sizes = defect_regions(truth)
            defect_scores = maps[index][truth]
            if inverse_sizes.size:
                codes = self.codes(defect_scores)
                self.defect += np.bincount(codes, minlength=self.bins)
                self.pro += np.bincount(codes, weights=inverse_sizes[labels[truth] - 1], minlength=self.bins)
                self.regions += inverse_sizes.size
            if self.reservoir is not None:
                self.reservoir.offer(defect_scores, True)
                self.reservoir.offer(good_scores, False)

    def count(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Count flat pixels with 0/1 labels into the two histograms only (enough for an F1 cut, not AUPRO)."""
        scores, truth = np.asarray(scores).ravel(), np.asarray(labels).ravel().astype(bool)
        self.good += np.bincount(self.codes(scores[~truth]), minlength=self.bins)
        self.defect += np.bincount(self.codes(scores[truth]), minlength=self.bins)

    @property
    def positives(self) -> int:
        """Defective pixels counted."""
        return int(self.defect.sum())

    @property
    def negatives(self) -> int:
        """Defect-free pixels counted."""
        return int(self.good.sum())

    def _filled(self) -> np.ndarray:
        """The non-empty bins, counted from the top (the sweep's thresholds, highest first)."""
        return np.flatnonzero((self.good + self.defect)[::-1])

    def sweep(self) -> Sweep:
        """The sweep with each non-empty bin's lower edge as a threshold (highest first)."""
        filled = self._filled()
        tps, fps = np.cumsum(self.defect[::-1])[filled], np.cumsum(self.good[::-1])[filled]
        thresholds = self.low + (self.bins - 1 - filled) * self.width
        return Sweep(thresholds=thresholds, tps=tps, fps=fps)

    def operating_point(self) -> OperatingPoint:
        """TP/FP/TN/FN of the decisions in use."""
        fp = self.called - self.tp
        return OperatingPoint(tp=self.tp, fp=fp, fn=self.positives - self.tp, tn=self.negatives - fp)

    def metrics(self, fpr_limit: float = 0.3) -> dict[str, float | None]:
        """``pixel_AUROC``, ``pixel_F1`` (of the decisions, exact) and ``pixel_AUPRO``; None where undefined."""
        counts = self.sweep()
        actual = self.positives
        f1 = 2 * self.tp / (self.called + actual) if self.called + actual else None
        aupro = None
        if self.regions and self.negatives:
            pro = np.cumsum(self.pro[::-1])[self._filled()] / self.regions
            aupro = pro_area(counts.fps, pro, self.negatives, fpr_limit)
        return {"pixel_AUROC": auroc(counts), "pixel_F1": f1, "pixel_AUPRO": aupro}

    def sample(self) -> PixelSample | None:
        """The report's pixel sample (None without ``sample_size``)."""
        return None if self.reservoir is None else self.reservoir.sample()
