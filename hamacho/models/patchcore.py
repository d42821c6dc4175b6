"""PatchCore (Roth et al., 2022): a coreset memory bank of locally aggregated patch features."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hamacho.models.backbone import FeatureExtractor
from hamacho.models.bank_index import MemoryBankIndex
from hamacho.models.base import AnomalyModel
from hamacho.models.coreset import random_projection
from hamacho.models.coreset_stream import CoresetStream
from hamacho.models.knn import nearest_neighbors, nearest_neighbors_graph
from hamacho.models.params import PatchcoreParams
from hamacho.progress import Phase


class PatchcoreModel(AnomalyModel):
    """PatchCore as a plain module.

    Args:
        feature_extractor: Frozen backbone returning the configured layers.
        image_size: (height, width) of the input images, or the side of square ones.
        seed: Seed of the coreset (first centre and projection).
        coreset_ratio: Share of training patches kept in the memory bank.
        coreset_projection_dim: Random projection size for coreset distances (0: full features).
        projection_dim: Channel count after adaptive average pooling over channels (None: keep all).
        num_neighbors: Memory-bank neighbours used to re-weight the image score.
        memory_budget_mb: Most memory for full training embeddings (of one coreset chunk, when the updates
            were announced: :meth:`expect_updates`) before they go to a temporary file.
        blur_sigma: Sigma of the anomaly-map blur.
        search_pruning_dim: Principal components used to prune the exact nearest-neighbour search.
        patch_sample: Share of each batch's training patches kept (seeded) before the coreset; below 1 it
            bounds training memory and time where images give many patches (tiling).
        coreset_chunk: Training patches per greedy coreset selection (0: one over all of them).
    """

    def __init__(
        self,
        feature_extractor: FeatureExtractor,
        image_size: int | tuple[int, int],
        seed: int,
        coreset_ratio: float = 0.1,
        coreset_projection_dim: int = 256,
        projection_dim: int | None = None,
        num_neighbors: int = 9,
        memory_budget_mb: int = 4096,
        blur_sigma: float = 4.0,
        search_pruning_dim: int = 32,
        patch_sample: float = 1.0,
        coreset_chunk: int = 0,
    ) -> None:
        super().__init__(feature_extractor, image_size, blur_sigma)
        self.seed = seed
        self.coreset_ratio = coreset_ratio
        self.num_neighbors = num_neighbors
        self.memory_budget_mb = memory_budget_mb
        total = sum(feature_extractor.out_channels)
        self.projection_dim = projection_dim if projection_dim and projection_dim < total else None
        self.embedding_dim = self.projection_dim or total
        self.coreset_projection_dim = coreset_projection_dim
        self.index = MemoryBankIndex(self.embedding_dim, search_pruning_dim)
        self._stream: CoresetStream | None = None
        self.patch_sample = patch_sample
        self.coreset_chunk = coreset_chunk
        self._batches = 0
        self._announced: list[int] | None = None  # images of each coming update (expect_updates)
        self._phase: Phase | None = None  # feature extraction's: stop requests while chunks are selected

    @property
    def memory_bank(self) -> torch.Tensor:
        """(M, D) memory bank."""
        return self.index.bank

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, D, h, w) locally aggregated, concatenated features."""
        features = [F.avg_pool2d(f, kernel_size=3, stride=1, padding=1) for f in self.feature_extractor(images)]
        size = features[0].shape[-2:]
        features = [
            f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in features
        ]
        embedding = torch.cat(features, dim=1)
        if self.projection_dim:
            b, d, h, w = embedding.shape
            pooled = F.adaptive_avg_pool1d(embedding.permute(0, 2, 3, 1).reshape(-1, 1, d), self.projection_dim)
            embedding = pooled.view(b, h, w, -1).permute(0, 3, 1, 2)
        return embedding

    @staticmethod
    def _patches(embedding: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) -> (B * h * w, D) contiguous rows."""
        return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])

    def expect_updates(self, images: Sequence[int], phase: Phase | None = None) -> None:
        """Announce the training: the images (or tiles) of every coming :meth:`update`, in order.

        With ``coreset_chunk`` > 0 each chunk of patches is then reduced to its coreset selection as soon as
        it is complete, during the updates, and its other patches dropped (:mod:`hamacho.models.coreset_stream`):
        training memory no longer grows with the images, and the bank is the same.

        Args:
            images: Images of each update (what ``images.shape[0]`` will be).
            phase: The updates' phase: a selection inside an update honours its stop requests (without
                counting steps in it).
        """
        if self._stream is not None:
            raise RuntimeError("updates must be announced before the first one")
        self._announced, self._phase = list(images), phase

    def _kept(self, patches: int) -> int:
        """Patches an update of ``patches`` keeps (``patch_sample``)."""
        return max(1, math.ceil(self.patch_sample * patches)) if self.patch_sample < 1.0 else patches

    def update(self, images: torch.Tensor) -> None:
        """Add the training images' patches to the memory bank's selection."""
        embedding = self.embed(images)
        if self._stream is None:
            projection = (random_projection(self.embedding_dim, self.coreset_projection_dim, self.seed)
                          if 0 < self.coreset_projection_dim < self.embedding_dim else None)
            self._stream = CoresetStream(self.embedding_dim, projection, self.memory_budget_mb * 1024 * 1024,
                                         self.coreset_ratio, self.coreset_chunk, self.seed)
            if self._announced is not None:  # rows of every update, now that the patches per image are known
                per_image = embedding.shape[2] * embedding.shape[3]
                self._stream.expect([self._kept(count * per_image) for count in self._announced])
        patches = self._patches(embedding)
        if self.patch_sample < 1.0:  # a seeded share of each batch's patches, in their order
            keep = self._kept(patches.shape[0])
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self._batches)
            rows = torch.randperm(patches.shape[0], generator=generator)[:keep].sort().values
            patches = patches[rows.to(patches.device)]
        self._batches += 1
        phase = self._phase
        self._stream.add(patches, None if phase is None else lambda steps: phase.advance(0))

    def fit(self, phase: Phase | None = None) -> None:
        """Choose the memory bank by greedy coreset selection (of the patches not selected yet)."""
        stream = self._stream
        if stream is None or stream.count == 0:
            raise RuntimeError("no training patches were added")
        self.index.build(stream.finish(phase).to(self.index.bank.device))
        self.fit_seconds_in_updates = stream.selection_seconds
        self._stream, self._announced, self._phase = None, None, None

    def patch_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances (B, h, w) of each patch to its nearest bank entry, and re-weighted image scores (B,)."""
        if self.memory_bank.shape[0] == 0:
            raise RuntimeError("the memory bank is empty: fit the model first")
        embedding = self.embed(images)
        batch, _, h, w = embedding.shape
        patches = self._patches(embedding)
        search = self.index.search_graph if self.graph_mode else self.index.search
        distances, locations = search(patches)
        patch_scores = distances.view(batch, h * w)
        image_scores = self._image_scores(patches.view(batch, h * w, -1), patch_scores, locations.view(batch, h * w))
        return patch_scores.view(batch, h, w), image_scores

    def _image_scores(self, patches: torch.Tensor, patch_scores: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        """Paper, eq. 7: the largest patch score, damped when its nearest bank entry sits in a dense region."""
        if self.num_neighbors <= 1 or self.memory_bank.shape[0] == 1:
            return patch_scores.amax(dim=1)
        worst = patch_scores.argmax(dim=1, keepdim=True)  # (B, 1)
        score = patch_scores.gather(1, worst)[:, 0]
        nearest = self.memory_bank[locations.gather(1, worst)[:, 0]]
        search = nearest_neighbors_graph if self.graph_mode else nearest_neighbors
        _, support = search(nearest, self.memory_bank, self.num_neighbors, self.index.squared_norms())
        worst_patch = patches.gather(1, worst.unsqueeze(2).expand(-1, 1, patches.shape[2]))  # (B, 1, D)
        distances = torch.linalg.vector_norm(worst_patch - self.memory_bank[support], dim=2)
        weights = 1.0 - torch.softmax(distances, dim=1)[:, 0]
        return weights * score


def build_patchcore(
    params: PatchcoreParams, feature_extractor: FeatureExtractor, image_size: int | tuple[int, int], seed: int
) -> PatchcoreModel:
    """PatchcoreModel from its parameters."""
    return PatchcoreModel(
        feature_extractor,
        image_size=image_size,
        seed=seed,
        coreset_ratio=params.coreset_ratio,
        coreset_projection_dim=params.coreset_projection_dim,
        projection_dim=params.projection_dim,
        num_neighbors=params.num_neighbors,
        memory_budget_mb=params.memory_budget_mb,
        blur_sigma=params.blur_sigma,
        search_pruning_dim=params.search_pruning_dim,
        patch_sample=params.patch_sample or 1.0,
        coreset_chunk=params.coreset_chunk,
    )
