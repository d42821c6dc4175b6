"""PaDiM (Defard et al., 2020): a Gaussian per patch position over multi-layer CNN features."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from hamacho.models.backbone import FeatureExtractor
from hamacho.models.base import AnomalyModel
from hamacho.models.gaussian import PositionGaussians
from hamacho.models.params import DEFAULT_NUM_FEATURES, PadimParams
from hamacho.progress import Phase


class PadimModel(AnomalyModel):
    """PaDiM as a plain module.

    Args:
        feature_extractor: Frozen backbone returning the configured layers.
        image_size: (height, width) of the input images, or the side of square ones.
        num_features: Size of the random channel subset (None: the paper's value for the backbone).
        seed: Seed of the channel choice.
        epsilon: Covariance regularisation (added to the diagonal).
        blur_sigma: Sigma of the anomaly-map blur.
        backbone: Name of the backbone (for the default ``num_features``).
    """

    def __init__(
        self,
        feature_extractor: FeatureExtractor,
        image_size: int | tuple[int, int],
        num_features: int | None,
        seed: int,
        epsilon: float = 0.01,
        blur_sigma: float = 4.0,
        backbone: str = "resnet18",
    ) -> None:
        super().__init__(feature_extractor, image_size, blur_sigma)
        total = sum(feature_extractor.out_channels)
        num_features = num_features or min(DEFAULT_NUM_FEATURES.get(backbone, 100), total)
        if num_features > total:
            raise ValueError(f"num_features {num_features} exceeds the {total} channels of the chosen layers")
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(total, generator=generator)[:num_features].sort().values
        self.register_buffer("feature_indices", indices)
        stride = feature_extractor.strides[0]
        self.embedding_shape = (self.input_size[0] // stride, self.input_size[1] // stride)
        self.gaussians = PositionGaussians(self.embedding_shape[0] * self.embedding_shape[1], num_features, epsilon)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, C, h, w) embeddings of the chosen channels.

        Channels are selected per layer before upsampling, which gives the same embedding as
        concatenating everything first but upsamples only the kept channels.
        """
        features = self.feature_extractor(images)
        size = features[0].shape[-2:]
        parts, offset = [], 0
        for feature in features:
            channels = feature.shape[1]
            local = self.feature_indices[(self.feature_indices >= offset) & (self.feature_indices < offset + channels)]
            offset += channels
            if local.numel() == 0:
                continue
            selected = feature.index_select(1, local - (offset - channels))
            if selected.shape[-2:] != size:
                selected = F.interpolate(selected, size=size, mode="nearest")
            parts.append(selected)
        return torch.cat(parts, dim=1)

    def update(self, images: torch.Tensor) -> None:
        """Add training images to the running Gaussian statistics."""
        self.gaussians.update(self.embed(images))

    def fit(self, phase: Phase | None = None) -> None:
        """Invert the covariances."""
        self.gaussians.finalize(phase=phase)

    def fold_source(self) -> PositionGaussians:
        """A copy of the running sums (one (P, C, C) buffer): a fold's model is these minus the fold's sums."""
        self.gaussians._add_pending()
        return copy.deepcopy(self.gaussians)

    def fold_model(self, source: PositionGaussians, images: Iterable[torch.Tensor]) -> PadimModel:
        """This model with Gaussians fitted on every training image but ``images`` (no second fit of the rest)."""
        fold = copy.copy(self)
        fold._modules = dict(self._modules)
        fold._buffers = dict(self._buffers)
        fold.gaussians = source.without(self.embed(batch) for batch in images)
        return fold

    def patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Mahalanobis distance per position (B, h, w); the image score is the map's maximum."""
        distances = self.gaussians.mahalanobis(self.embed(images))
        return distances.view(-1, *self.embedding_shape), None


def build_padim(params: PadimParams, feature_extractor: FeatureExtractor, image_size: int | tuple[int, int],
                seed: int) -> PadimModel:
    """PadimModel from its parameters."""
    return PadimModel(feature_extractor, image_size=image_size, num_features=params.num_features, seed=seed,
                      epsilon=params.covariance_epsilon, blur_sigma=params.blur_sigma, backbone=params.backbone)
