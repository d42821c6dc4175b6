"""The Predictor: the one scoring path from a trained model to OK/NG decisions, maps and masks.

``hamacho inference``, the training run's calibration and test passes, and programs that embed Hamacho
all score through :meth:`Predictor.score_batch`, which runs the model's own forward (uint8 images in,
normalized maps and scores out) on a runtime: PyTorch for a model file, ONNX Runtime, OpenVINO or
TorchScript for an export folder (:mod:`hamacho.runtimes`). Decoding, cropping, resizing and padding
(:mod:`hamacho.data.framing`), tiling and stitching, the inspected area (:mod:`hamacho.runtimes.framed`),
batching, thresholds and maps at the original resolution are the same for every runtime. No Trainer, no files, no global
state: a Predictor only reads its model, so several threads may use one Predictor, or several, at once.
This module imports no torch: with an exported model, a line PC needs none.

    from hamacho import Predictor
    predictor = Predictor.load("results/padim/bottle/model.pt")
    for p in predictor.predict(["part1.png", camera_frame]):
        print(p.source, p.decision, round(p.score, 3), p.anomaly_map.shape)

See docs/api.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamacho.data.batch import Batch, collate
from hamacho.data.dataset import AnomalyDataset, DecodeCache, iter_batches
from hamacho.data.discovery import Sample
from hamacho.data.framing import Framing
from hamacho.data.geometry import to_original
from hamacho.errors import ConfigError
from hamacho.post.normalization import decide
from hamacho.runtimes import OpenedModel, Runtime
from hamacho.runtimes.framed import FramedRuntime
from hamacho.settings import Settings

Image = str | Path | np.ndarray


@dataclass
class Prediction:
    """The outcome for one image.

    Attributes:
        source: The file path, or ``array #i`` for the i-th input array.
        raw_score: Image score in the model's own units (NaN when unreadable).
        score: Normalized image score, 0..1 (NaN when unreadable).
        decision: ``NG`` (score at or above ``image_threshold``), ``OK``, or ``""`` when unreadable.
        image_threshold: Normalized cut used for the decision (0.5 = the trained threshold).
        pixel_threshold: Normalized cut used for the mask.
        anomaly_map: Normalized anomaly map (H, W) float32 at the image's own resolution, None when unreadable.
        mask: Predicted defect mask (H, W) bool, ``anomaly_map >= pixel_threshold`` within the inspected area;
            None when unreadable.
        error: Why the image could not be scored; None when it was.
        inspected: bool (H, W), the pixels the model inspects (inside the crop and the valid-area mask); None
            when it inspects them all. The anomaly map is 0 elsewhere.
    """

    source: str
    raw_score: float
    score: float
    decision: str
    image_threshold: float
    pixel_threshold: float
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    error: str | None = None
    inspected: np.ndarray | None = field(default=None, repr=False)

    @property
    def is_anomalous(self) -> bool:
        """True for NG."""
        return self.decision == "NG"


@dataclass
class ScoredBatch:
    """A batch and what the model made of it, on the model's frame (H, W) (numpy).

    Unreadable images have NaN scores and maps, and are neither NG nor masked. Pixels that are not
    inspected (``batch.inspected`` False) have maps 0 and are never masked.

    Attributes:
        batch: The input batch (labels, masks, indices, errors, inspected area).
        raw_maps: (B, H, W) float32 raw anomaly maps.
        raw_scores: (B,) float32 raw image scores.
        maps: (B, H, W) float32 normalized maps.
        scores: (B,) float32 normalized image scores.
        is_ng: (B,) bool decisions at the image cut.
        pred_masks: (B, H, W) bool predicted masks at the pixel cut.
    """

    batch: Batch
    raw_maps: np.ndarray
    raw_scores: np.ndarray
    maps: np.ndarray
    scores: np.ndarray
    is_ng: np.ndarray
    pred_masks: np.ndarray

    def __len__(self) -> int:
        return len(self.batch)


def check_cut(name: str, value: float) -> float:
    """Normalized thresholds must lie within 0..1."""
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1 (normalized scale, 0.5 = trained threshold), got {value}")
    return float(value)


class Predictor:
    """Scores images with a trained model (see the module docstring).

    Args:
        runtime: What runs the model (see :mod:`hamacho.runtimes`).
        settings: The settings the model was trained with.
        batch_size: Images (tiles, for a tiled model) per forward pass (default: as trained). Scores do not
            depend on it.
        metadata: What the model file or export says about the run.
        path: The model file or export folder (None for a model in memory).
        display_name: How reports name the model (``PaDiM``).
        valid_area: The valid-area mask stored with the model (bool, original pixels), or None.
    """

    def __init__(self, runtime: Runtime, settings: Settings, batch_size: int | None = None,
                 metadata: dict[str, Any] | None = None, path: Path | None = None, display_name: str = "",
                 valid_area: np.ndarray | None = None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        self.runtime = runtime
        self.settings = settings
        self.batch_size = batch_size or settings.dataset.batch_size
        self.metadata = metadata or {}
        self.path = path
        self.display_name = display_name or settings.model.name
        self.framing = Framing.from_settings(settings.dataset, valid_area)
        self.framed = FramedRuntime(runtime, self.framing, self.batch_size)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", batch_size: int | None = None) -> Predictor:
        """A Predictor for a model file written by ``hamacho train`` (or its results folder), or an export folder.

        Args:
            path: ``model.pt``, its folder, an export folder or its ``metadata.json``.
            device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ... (``gpu`` for OpenVINO's GPU).
            batch_size: Images per forward pass (default: as trained).

        Raises:
            ModelFileError: Missing, foreign, damaged, tampered or newer files, or a runtime not installed.
        """
        from hamacho.runtimes import open_model

        opened: OpenedModel = open_model(path, device)
        return cls(opened.runtime, opened.settings, batch_size, opened.metadata, opened.path, opened.display_name,
                   opened.valid_area)

    @classmethod
    def from_model(cls, model: Any, settings: Settings, device: str = "auto",
                   valid_area: np.ndarray | None = None) -> Predictor:
        """A Predictor over a model in memory (an :class:`~hamacho.models.base.AnomalyModel`; PyTorch runtime)."""
        from hamacho.models.registry import display_name
        from hamacho.runtimes.torch_runtime import TorchRuntime

        return cls(TorchRuntime(model, device), settings, display_name=display_name(settings.model.name),
                   valid_area=valid_area)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input (a tile, for a tiled model)."""
        return self.runtime.input_size

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frame the maps of :meth:`score_batch` live on."""
        return self.framing.frame

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Side of the model input when square, else (height, width) (see :attr:`input_size`)."""
        height, width = self.input_size
        return height if height == width else (height, width)

    @property
    def valid_area(self) -> np.ndarray | None:
        """The valid-area mask stored with the model (bool, original pixels), or None."""
        return self.framing.valid_area

    @property
    def calibration(self) -> dict[str, float]:
        """Raw thresholds and score ranges (what normalized 0.5 and the ends of the scale are)."""
        return self.runtime.calibration

    def score_batch(self, batch: Batch, image_threshold: float = 0.5, pixel_threshold: float = 0.5) -> ScoredBatch:
        """Run the model on a batch's readable images; unreadable ones get NaN.

        Args:
            batch: Frames (see :func:`hamacho.data.batch.collate` and :attr:`frame_size`).
            image_threshold: Normalized cut of the OK/NG decision.
            pixel_threshold: Normalized cut of the predicted masks.
        """
        valid = batch.valid
        if valid.all() and self.framing.map_scores:
            # Stitched or masked maps are fresh arrays of the framed runtime's own: kept as they are, rather than
            # copied into NaN-filled stacks (two more frame-sized stacks per batch). A runtime's own outputs
            # (plain framing) are copied below: some runtimes reuse their output buffers.
            out = self.framed.run(batch.images, batch.inspected)
            return self._decided(batch, out.raw_maps, out.raw_scores, out.maps, out.scores, image_threshold,
                                 pixel_threshold)
        n = len(batch)
        raw_maps = np.full((n, *batch.images.shape[-2:]), np.nan, dtype=np.float32)
        raw_scores = np.full((n,), np.nan, dtype=np.float32)
        maps, scores = raw_maps.copy(), raw_scores.copy()
        if valid.any():
            inspected = None if batch.inspected is None else batch.inspected[valid]
            out = self.framed.run(batch.images[valid], inspected)
            maps[valid], scores[valid], raw_maps[valid], raw_scores[valid] = (
                out.maps, out.scores, out.raw_maps, out.raw_scores)
        return self._decided(batch, raw_maps, raw_scores, maps, scores, image_threshold, pixel_threshold)

    @staticmethod
    def _decided(batch: Batch, raw_maps: np.ndarray, raw_scores: np.ndarray, maps: np.ndarray, scores: np.ndarray,
                 image_threshold: float, pixel_threshold: float) -> ScoredBatch:
        """The scored batch: float32 maps and scores with the decisions and masks at the cuts."""
        raw_maps, raw_scores, maps, scores = (np.asarray(a, dtype=np.float32) for a in (raw_maps, raw_scores, maps,
                                                                                         scores))
        pred_masks = decide(maps, pixel_threshold)
        if batch.inspected is not None:
            pred_masks &= batch.inspected
        return ScoredBatch(batch, raw_maps, raw_scores, maps, scores, decide(scores, image_threshold), pred_masks)

    def score_samples(
        self, samples: Sequence[Sample], image_threshold: float = 0.5, pixel_threshold: float = 0.5,
        cache: DecodeCache | None = None,
    ) -> Iterator[ScoredBatch]:
        """Score image files batch by batch (decoded on threads)."""
        for batch in iter_batches(samples, self.framing, self.batch_size, cache):
            yield self.score_batch(batch, image_threshold, pixel_threshold)

    def iter_predict(
        self, images: Iterable[Image], image_threshold: float | None = None, pixel_threshold: float | None = None,
    ) -> Iterator[Prediction]:
        """Like :meth:`predict`, one :class:`Prediction` at a time (memory stays at one batch)."""
        image_cut = check_cut("image_threshold", 0.5 if image_threshold is None else image_threshold)
        pixel_cut = check_cut("pixel_threshold", 0.5 if pixel_threshold is None else pixel_threshold)
        chunk: list[tuple[str, Any]] = []
        for number, image in enumerate(images):
            if isinstance(image, (str, Path)):
                chunk.append((str(image), Sample(Path(image), Path(image).stem, None, "unknown")))
            else:  # an array; anything else comes back with an error from the dataset
                chunk.append((f"{'array' if isinstance(image, np.ndarray) else 'input'} #{number}", image))
            if len(chunk) == self.batch_size:
                yield from self._predict_chunk(chunk, image_cut, pixel_cut)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk, image_cut, pixel_cut)

    def predict(
        self, images: Image | Iterable[Image], image_threshold: float | None = None,
        pixel_threshold: float | None = None,
    ) -> list[Prediction]:
        """Score images: file paths, or arrays (H, W), (H, W, 3) RGB, (H, W, 4) RGBA, uint8 or uint16.

        Args:
            images: One image or several.
            image_threshold: Normalized OK/NG cut for this call, 0..1 (default 0.5: the trained threshold).
            pixel_threshold: Normalized cut for the masks, 0..1 (default 0.5).

        Returns:
            One :class:`Prediction` per image, in order; an unreadable image gets one with ``error`` set
            instead of failing the others.
        """
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        return list(self.iter_predict(images, image_threshold, pixel_threshold))

    def _predict_chunk(self, chunk: list[tuple[str, Any]], image_cut: float, pixel_cut: float) -> Iterator[Prediction]:
        items = AnomalyDataset([source for _, source in chunk], self.framing).__getitems__(list(range(len(chunk))))
        scored = self.score_batch(collate(items), image_cut, pixel_cut)
        batch = scored.batch
        for row, (name, _) in enumerate(chunk):
            placement = batch.placements[row]
            if not bool(batch.valid[row]) or placement is None:
                yield Prediction(name, float("nan"), float("nan"), "", image_cut, pixel_cut, error=batch.errors[row])
                continue
            full = to_original(scored.maps[row], placement)
            inspected = None
            if batch.inspected is not None or self.framing.crop is not None:
                area = batch.inspected[row] if batch.inspected is not None else np.ones(self.frame_size, np.float32)
                inspected = to_original(area.astype(np.float32), placement) >= 0.5
                full[~inspected] = 0.0  # bilinear edges: the map is 0 wherever the pixel is not inspected
            mask = full >= pixel_cut
            yield Prediction(name, float(scored.raw_scores[row]), float(scored.scores[row]),
                             "NG" if bool(scored.is_ng[row]) else "OK", image_cut, pixel_cut,
                             anomaly_map=full, mask=mask if inspected is None else mask & inspected,
                             inspected=inspected)
