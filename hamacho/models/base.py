"""The contract every model meets: a plain ``nn.Module`` from uint8 images to normalized maps and scores.

:class:`AnomalyModel` holds what every model shares: the frozen feature extractor, the map generator
(upsampling to the input size and blur), and the calibration (thresholds and min/max) as buffers, so
that they travel in the model file with the weights. Its :meth:`~AnomalyModel.forward` is the whole
scoring pipeline after decoding: channel conversion and resize to the input size, features, patch
scores, map, image score, normalization. An export of ``forward`` is therefore the whole model.

``graph_mode`` (False by default) asks a model to use only operations a static graph can hold, for
ONNX, OpenVINO and TorchScript exports (PatchCore then searches its bank block by block instead of with
its pruned search; see :meth:`~hamacho.models.bank_index.MemoryBankIndex.search_graph`).

A model subclass provides:
    ``expect_updates(sizes)`` optional: the images of every coming ``update``, announced before the first;
    ``update(images)``        add a batch of (input-size, uint8) training images to what it memorises;
    ``fit(phase)``            turn what it memorised into its fitted state (Gaussians, memory bank);
    ``patch_scores(images)``  -> ``(scores (B, h, w), image_scores (B,) or None)`` raw, on the feature grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hamacho.models.anomaly_map import AnomalyMapGenerator
from hamacho.models.backbone import FeatureExtractor
from hamacho.post.normalization import normalize
from hamacho.progress import Phase

CALIBRATION_KEYS = ("image_threshold", "pixel_threshold", "image_min", "image_max", "pixel_min", "pixel_max")


class Calibration(nn.Module):
    """Thresholds and score ranges found on the calibration images, in raw score units (NaN until set)."""

    def __init__(self) -> None:
        super().__init__()
        for key in CALIBRATION_KEYS:
            self.register_buffer(key, torch.tensor(float("nan")))

    def set(self, **values: float) -> None:
        """Set some of the values (keys from ``CALIBRATION_KEYS``)."""
        for key, value in values.items():
            if key not in CALIBRATION_KEYS:
                raise KeyError(key)
            getattr(self, key).fill_(float(value))

    def as_dict(self) -> dict[str, float]:
        """Plain floats, for JSON and reports."""
        return {key: float(getattr(self, key)) for key in CALIBRATION_KEYS}

    def normalize_scores(self, raw: torch.Tensor) -> torch.Tensor:
        """Image scores on the normalized scale (0.5 = the image threshold)."""
        return normalize(raw, self.image_threshold, self.image_min, self.image_max)

    def normalize_maps(self, raw: torch.Tensor) -> torch.Tensor:
        """Anomaly maps on the normalized scale (0.5 = the pixel threshold)."""
        return normalize(raw, self.pixel_threshold, self.pixel_min, self.pixel_max)


class AnomalyOutput(NamedTuple):
    """What a model returns for a batch of B images of input size S.

    Attributes:
        anomaly_map: (B, H, W) normalized maps, 0..1 (NaN before calibration).
        pred_score: (B,) normalized image scores, 0..1; NG at or above 0.5 unless the user moves the cut.
        raw_map: (B, H, W) raw maps (distances).
        raw_score: (B,) raw image scores.
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor
    raw_map: torch.Tensor
    raw_score: torch.Tensor


class AnomalyModel(nn.Module):
    """Base of every model (see the module docstring).

    Args:
        feature_extractor: Frozen backbone returning the configured layers.
        image_size: (height, width) of the model input, or the side of a square one.
        blur_sigma: Sigma of the anomaly-map blur (0: none).
    """

    def __init__(self, feature_extractor: FeatureExtractor, image_size: int | tuple[int, int],
                 blur_sigma: float) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor
        self.input_size: tuple[int, int] = (
            (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1])))
        self.anomaly_map = AnomalyMapGenerator(self.input_size, blur_sigma)
        self.calibration = Calibration()
        self.graph_mode = False

    @property
    def image_size(self) -> int | tuple[int, int]:
        """The input's side when square, else (height, width) (kept for callers of earlier versions)."""
        height, width = self.input_size
        return height if height == width else (height, width)

    #: Seconds of fitting done inside :meth:`update` (PatchCore's coreset chunks selected as the images
    #: come), known after :meth:`fit`: timed as model fitting, not feature extraction.
    fit_seconds_in_updates: float = 0.0

    def expect_updates(self, images: Sequence[int], phase: Phase | None = None) -> None:
        """Before the first :meth:`update`: the images of every coming one, in order, and their phase (progress,
        stop requests). A hint: a model may use it to fit as the images come (PatchCore's coreset chunks); by
        default it is ignored."""

    def update(self, images: torch.Tensor) -> None:
        """Add training images (B, 3, H, W) uint8 to what the model memorises."""
        raise NotImplementedError

    def fit(self, phase: Phase | None = None) -> None:
        """Turn what was memorised into the fitted state; ``phase`` gets progress and may stop it."""
        raise NotImplementedError

    def patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw scores (B, h, w) on the feature grid, and raw image scores (B,) or None (= the map's maximum)."""
        raise NotImplementedError

    def fold_source(self) -> Any | None:
        """Before :meth:`fit`: what :meth:`fold_model` needs to take images out again, or None when this model
        cannot (then calibration uses held-out images only)."""
        return None

    def fold_model(self, source: Any, images: Iterable[torch.Tensor]) -> AnomalyModel:
        """A fitted copy of this model as if the training ``images`` (batches of input-size uint8) had not
        been added; ``source`` is :meth:`fold_source`'s. The copy shares the backbone and the calibration."""
        raise NotImplementedError(f"{type(self).__name__} cannot take images out of its fit")

    def to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W), C in 1, 3, 4 (gray, RGB, RGBA) -> uint8 RGB at the input size, resized as in training.

        Inputs already at the input size (what the Predictor and exported graphs pass) go through
        untouched; others are resized as :func:`hamacho.data.decoding.resize_image` resizes, on the CPU.
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3, 4):
            raise ValueError(f"expected uint8 images (B, 1|3|4, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] == 4:
            images = images[:, :3]
        size = self.input_size
        if tuple(images.shape[-2:]) == size:
            return images
        # torch's uint8 kernel runs on the CPU only; it is the resize of every path (hamacho.data.resize)
        resized = F.interpolate(images.cpu(), size=size, mode="bilinear", antialias=True, align_corners=False)
        return resized.to(images.device)

    def raw_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw anomaly maps (B, H, W) and image scores (B,) of input-size uint8 images."""
        scores, image_scores = self.patch_scores(images)
        maps = self.anomaly_map(scores)
        return maps, image_scores if image_scores is not None else maps.flatten(1).amax(dim=1)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        """uint8 images (B, C, H, W) -> normalized and raw maps and scores at the input size."""
        raw_map, raw_score = self.raw_scores(self.to_input(images))
        return AnomalyOutput(self.calibration.normalize_maps(raw_map), self.calibration.normalize_scores(raw_score),
                             raw_map, raw_score)
