"""Per-image pictures of a scoring pass: report images, and optional full-resolution heatmaps and outlines."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hamacho.data.decoding import ImageReadError, read_image, to_uint8_image
from hamacho.data.discovery import Sample
from hamacho.data.geometry import Placement, to_original
from hamacho.files import write_png
from hamacho.predictor import ScoredBatch
from hamacho.report.drawing import compose_report, grey_out, heatmap_overlay, segmentation_overlay
from hamacho.results.examples import picture_arrays
from hamacho.settings import VisualizationSettings

# Batches whose pictures may wait for the writer thread before the next batch waits for it.
PENDING_BATCHES = 2
# And the most bytes of scored batches waiting beyond one: a tiled model's batch of 8 frames of 1024 px is about
# 100 MB, so its pictures are written one batch behind the scoring, not two.
PENDING_BYTES = 64 * 1024 * 1024


def scored_bytes(scored: ScoredBatch) -> int:
    """Bytes of the arrays a scored batch holds (frames, masks, maps)."""
    batch = scored.batch
    arrays = (batch.images, batch.masks, batch.inspected, scored.raw_maps, scored.maps, scored.pred_masks)
    return sum(a.nbytes for a in arrays if a is not None)


class PictureWriter:
    """Writes ``images/<name>.png`` report pictures (and ``heatmaps/``, ``segmentation/`` when asked).

    Pictures are composed, encoded and written on one background thread while the model scores the
    next batch (OpenCV releases the GIL): on MVTec bottle's 83 test images this takes the 0.9 s of
    picture writing off the test pass's critical path. At most :data:`PENDING_BATCHES` batches wait,
    :meth:`finish` returns only when every picture is on disk, and a failed write fails the run. Every
    file is written atomically, so an interrupted run leaves whole pictures or none. Beyond one waiting batch,
    at most :data:`PENDING_BYTES` of batches wait (large frames: one). Use it as a context
    manager: leaving early (an error, a stop request) drops the queued pictures and waits for the one
    being written.

    Args:
        output_dir: Results folder.
        samples: The images being scored, in the order of the batches' ``indices``.
        settings: Which pictures to write, and the heatmap opacity.
        pixel_cut: Normalized pixel threshold (for masks and outlines).
    """

    def __init__(self, output_dir: str | Path, samples: Sequence[Sample], settings: VisualizationSettings,
                 pixel_cut: float = 0.5) -> None:
        self.output_dir = Path(output_dir)
        self.samples = list(samples)
        self.settings = settings
        self.pixel_cut = pixel_cut
        self.written = 0
        self._show_gt = any(s.mask_path is not None for s in self.samples)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[tuple[Future[int], int]] = deque()

    @property
    def active(self) -> bool:
        """True when any picture is to be written."""
        return self.settings.report_images or self.settings.save_heatmap or self.settings.save_segmentation

    def __enter__(self) -> PictureWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def add(self, scored: ScoredBatch) -> None:
        """Hand one batch to the writer thread, first waiting while too many batches are queued."""
        if not self.active:
            return
        size = scored_bytes(scored)
        while self._pending and (len(self._pending) >= PENDING_BATCHES
                                 or sum(n for _, n in self._pending) + size > PENDING_BYTES):
            self.written += self._pending.popleft()[0].result()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hamacho-pictures")
        self._pending.append((self._pool.submit(self._write, scored), size))

    def finish(self) -> None:
        """Wait for every queued picture (raising the first failure) and stop the writer thread."""
        try:
            while self._pending:
                self.written += self._pending.popleft()[0].result()
        finally:
            self._stop()

    def _stop(self) -> None:
        for future, _ in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # a picture being written is finished, whole
            self._pool = None

    def _write(self, scored: ScoredBatch) -> int:
        """Compose and write the pictures of one batch; returns how many images got pictures."""
        batch, settings = scored.batch, self.settings
        written = 0
        for i, index in enumerate(batch.indices.tolist()):
            if not bool(batch.valid[i]):
                continue
            label = int(batch.labels[i])
            is_ng = bool(scored.is_ng[i])
            if settings.only_wrong and label >= 0 and is_ng == bool(label):
                continue
            sample = self.samples[index]
            norm_map = scored.maps[i]
            area = None if batch.inspected is None else batch.inspected[i]
            if settings.report_images:
                gt = batch.masks[i] > 0 if self._show_gt else None
                title = f"{sample.name}   score {float(scored.scores[i]):.3f}   {'NG' if is_ng else 'OK'}"
                if label >= 0:
                    title += f"   (label: {'defective' if label else 'good'})"
                image, small_map, pred_mask, gt, small_area = picture_arrays(
                    to_uint8_image(batch.images[i]), norm_map, scored.pred_masks[i], gt, area)
                picture = compose_report(image, small_map, pred_mask, title, is_ng, gt, settings.heatmap_alpha,
                                         self.pixel_cut, small_area)
                write_png(self.output_dir / "images" / f"{sample.name}.png", picture)
            placement = batch.placements[i] if batch.placements else None
            if (settings.save_heatmap or settings.save_segmentation) and placement is not None:
                self._write_full_resolution(sample, norm_map, placement, area)
            written += 1
        return written

    def _write_full_resolution(self, sample: Sample, norm_map: np.ndarray, placement: Placement,
                               area: np.ndarray | None) -> None:
        """Heatmap and outline at the original resolution; outside the crop and the inspected area greyed."""
        try:
            original = read_image(sample.path, quiet=False)  # this thread runs beside the progress bar
        except ImageReadError:
            return
        if original.shape[:2] != placement.original:
            return
        height, width = original.shape[:2]
        big = to_original(norm_map, placement)
        inspected = None
        if area is not None or placement.box != (0, 0, width, height):
            frame_area = np.ones(norm_map.shape, np.float32) if area is None else area.astype(np.float32)
            inspected = to_original(frame_area, placement) >= 0.5
            big[~inspected] = 0.0
        if self.settings.save_heatmap:
            write_png(self.output_dir / "heatmaps" / f"{sample.name}.png",
                      grey_out(heatmap_overlay(original, big, self.settings.heatmap_alpha), inspected))
        if self.settings.save_segmentation:
            called = big >= self.pixel_cut if inspected is None else (big >= self.pixel_cut) & inspected
            outline = segmentation_overlay(original, called, thickness=max(2, width // 300))
            write_png(self.output_dir / "segmentation" / f"{sample.name}.png", grey_out(outline, inspected))
