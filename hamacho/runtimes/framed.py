"""A runtime over whole frames: tiles in bounded batches, stitched maps, the inspected area, image scores.

Every runtime scores model-input-sized images. :class:`FramedRuntime` puts one in front of a
:class:`~hamacho.data.framing.Framing`: with tiling on, it cuts each frame into tiles, runs them at most
``batch_size`` at a time (memory does not grow with the number of tiles), and averages the raw tile maps
where tiles overlap; where pixels are not inspected, it sets the maps to 0 and takes the image score as
the maximum of the raw map over the inspected pixels, normalized with the model's calibration. The code
is numpy: model files and exports (ONNX, OpenVINO, TorchScript) share it, and the exported graph stays
the per-tile model.

Models framed plainly (no tiling, nothing left out) get the model's own outputs untouched, so their scores
are bit for bit those of earlier versions.
"""

from __future__ import annotations

import numpy as np

from hamacho.data.framing import Framing
from hamacho.data.geometry import coverage, iter_tiles, stitch
from hamacho.post.normalization import normalize
from hamacho.runtimes import Runtime, RuntimeOutput


class FramedRuntime:
    """Scores frames (B, 3, H, W) with a runtime that scores model inputs.

    Args:
        runtime: The model's runtime.
        framing: How the model frames images.
        batch_size: Most tiles per forward pass.
    """

    def __init__(self, runtime: Runtime, framing: Framing, batch_size: int) -> None:
        self.runtime = runtime
        self.framing = framing
        self.batch_size = batch_size
        self._origins = framing.origins()
        self._coverage = coverage(framing.frame, framing.input_size, self._origins) if framing.tiled else None

    def run(self, images: np.ndarray, inspected: np.ndarray | None = None) -> RuntimeOutput:
        """Maps at the frame size (0 where not inspected) and image scores, raw and normalized.

        Frame-sized work is done in place and one frame at a time (the same arithmetic, so the same values
        to the bit as whole-stack operations): a batch holds its raw and its normalized maps, not the
        stack-sized temporaries of masking and normalizing.

        Args:
            images: uint8 (B, 3, H, W) frames.
            inspected: bool (B, H, W), the inspected pixels; None for all.
        """
        framing = self.framing
        if not framing.tiled:
            out = self.runtime.run(images)
            if not framing.map_scores:
                return out
            raw_maps = np.array(out.raw_maps)  # our own copy (the runtime's dtype): masked in place below
        else:
            raw_maps = self.stitched_raw_maps(images)
        raw_scores = np.zeros(len(raw_maps), dtype=raw_maps.dtype if inspected is None else np.float32)
        for i, raw in enumerate(raw_maps):
            if inspected is None:
                raw_scores[i] = raw.max()
                continue
            raw[~inspected[i]] = 0.0
            if inspected[i].any():
                raw_scores[i] = raw[inspected[i]].max()
        cal = self.runtime.calibration
        maps = np.empty(raw_maps.shape, dtype=np.float32)
        for i, raw in enumerate(raw_maps):
            maps[i] = normalize(raw, cal["pixel_threshold"], cal["pixel_min"], cal["pixel_max"])
            if inspected is not None:
                maps[i][~inspected[i]] = 0.0
        scores = normalize(raw_scores, cal["image_threshold"], cal["image_min"], cal["image_max"]).astype(np.float32)
        return RuntimeOutput(maps, scores, raw_maps.astype(np.float32, copy=False), raw_scores)

    def stitched_raw_maps(self, images: np.ndarray) -> np.ndarray:
        """Raw maps (B, H, W) of frames scored tile by tile, overlaps averaged (stitched into one
        preallocated stack, tiles cut one batch at a time)."""
        tile = self.framing.input_size
        sums = np.zeros((images.shape[0], *self.framing.frame), dtype=np.float32)
        for tiles, where in iter_tiles(images, self._origins, tile, self.batch_size):
            stitch(sums, self.runtime.run(tiles).raw_maps, where, tile)
        assert self._coverage is not None
        sums /= self._coverage
        return sums
