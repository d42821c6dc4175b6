"""The ``model`` section of each built-in model: typed parameters, defaults, checks and help (no torch).

These classes are the one home of the models' parameters: the registry (:mod:`hamacho.models.registry`)
names them, and the CLI help, the service's ``/options``, the web form, ``configs/<model>.yaml`` and
docs/config-reference.md are derived from them, without importing the models' code (and torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from hamacho.settings import ModelParams, backbone_field, layers_field, setting, weights_field

# PaDiM: channel subset sizes used in the paper; other backbones keep 100 channels (all when they have fewer).
DEFAULT_NUM_FEATURES = {"resnet18": 100, "wide_resnet50_2": 550}
# PatchCore: with tiling and ``patch_sample: null``, each image keeps this many tiles' worth of patches.
PATCHES_PER_IMAGE_TILES = 6


@dataclass
class PadimParams(ModelParams):
    """PaDiM (Defard et al., 2020): a Gaussian per patch position over multi-layer CNN features."""

    name: str = setting("padim", help="The model (hamacho train --model).")
    num_features: int | None = setting(
        None, at_least=1,
        help="Size of the random channel subset; null: 550 for wide_resnet50_2 (as in the paper), 100 for every "
             "other backbone (the paper's resnet18 value), all channels when the layers have fewer. The chosen "
             "indices are stored with the model.")
    covariance_epsilon: float = setting(
        0.01, above=0.0, help="Added to the diagonal of every per-position covariance (0.01 I).")


@dataclass
class PatchcoreParams(ModelParams):
    """PatchCore (Roth et al., 2022): a coreset memory bank of locally aggregated patch features."""

    LAYER_STRIDES: ClassVar[tuple[int, ...]] = (8, 16)

    name: str = setting("patchcore", help="The model (hamacho train --model).")
    backbone: str = backbone_field("wide_resnet50_2")
    backbone_weights: str | None = weights_field("wide_resnet50_2-95faca4d.pth")
    layers: list[str] | None = layers_field(
        None, help="Backbone layers, each averaged over a 3x3 neighbourhood, upsampled to the first one's "
                   "resolution and concatenated; null: the backbone's last layers at strides 8 and 16 (ResNets: "
                   "layer2, layer3; mobilenet_v2: features.6, .13).")
    projection_dim: int | None = setting(
        None, at_least=1,
        help="null keeps every channel; an integer averages channels down to that many (adaptive average "
             "pooling over channels, as in the official PatchCore).")
    coreset_ratio: float = setting(
        0.1, above=0.0, at_most=1.0,
        help="Share of training patches kept in the memory bank (greedy k-center coreset).")
    coreset_projection_dim: int = setting(
        256, at_least=0,
        help="Seeded random projection used for coreset distances only (0: full features). 256 rather than the "
             "paper's 128: on MVTec bottle it raised image AUROC from 0.930 to 0.945 (1 % coreset, mean of 4 "
             "seeds) for about 30 % more time.")
    num_neighbors: int = setting(
        9, at_least=1, help="Memory-bank neighbours used to re-weight the image score (paper, eq. 7).")
    memory_budget_mb: int = setting(
        4096, at_least=1,
        help="Most RAM for the training patch embeddings held at once (with coreset_chunk: one chunk's, as each "
             "full chunk is reduced to its coreset during feature extraction); beyond it they are kept in a "
             "temporary file and only the projected copies stay in memory (no accuracy loss).")
    search_pruning_dim: int = setting(
        32, at_least=0,
        help="Principal components of the memory bank used to skip hopeless rows in the exact "
             "nearest-neighbour search (0: brute force); the scores are the same.")
    patch_sample: float | None = setting(
        None, above=0.0, at_most=1.0,
        help="Share of each batch's training patches kept (seeded) before the coreset. null: all of them, or "
             "with tiling 6 / tiles per image (at most 1): 25 tiles keep 0.24, which held training memory "
             "within 1.5x of a 256 px run (docs/benchmark.md).")
    coreset_chunk: int = setting(
        32768, at_least=0,
        help="Training patches per greedy coreset selection (in image order; the bank is the union of the "
             "chunks' selections), so fit time grows linearly with the images; each chunk is selected as soon "
             "as its patches are extracted, so training memory holds one chunk plus the bank, whatever the "
             "images. 0: one selection over all patches, all held, whose time grows with their square "
             "(docs/models.md#coreset).")

    def for_tiles(self, tiles: int) -> PatchcoreParams:
        """``patch_sample: null`` resolved: keep every patch of up to 6 tiles' worth per image, so tiled
        training holds at most about 6x the patches of an untiled run (25 tiles: 0.24, which kept peak
        memory within 1.5x of a 256 px run and raised AUPRO, docs/benchmark.md)."""
        if self.patch_sample is not None:
            return self
        return dataclasses.replace(self, patch_sample=min(1.0, PATCHES_PER_IMAGE_TILES / tiles))
