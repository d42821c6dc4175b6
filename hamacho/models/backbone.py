"""Torchvision classification networks as frozen multi-layer feature extractors.

Two families of torchvision networks are supported (the list is :data:`hamacho.settings.BACKBONES`):

* ResNets (ResNet, Wide ResNet, ResNeXt): layers ``layer1`` .. ``layer4`` after the stem, strides 4 .. 32;
* networks whose body is the sequence ``features`` (MobileNet V2/V3, EfficientNet V1/V2, ConvNeXt):
  layers ``features.0`` .. ``features.N``, the outputs of its blocks.

:func:`layer_table` lists a backbone's layers with their strides and channels (from a run on PyTorch's
``meta`` device: no weights, no computation), and :func:`default_layers` picks, for each stride a model
asks for, the last layer at that stride. Weights come from a local torchvision state-dict file, from
torchvision's download (``imagenet``) or from a seeded random initialisation (``none``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hamacho.errors import BackboneError, first_line
from hamacho.settings import BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")
RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")


@dataclass(frozen=True)
class LayerInfo:
    """One layer a backbone offers: its name, stride relative to the input, and channels."""

    name: str
    stride: int
    channels: int


def _is_resnet(net: nn.Module) -> bool:
    return all(hasattr(net, name) for name in (*RESNET_STEM, *RESNET_LAYERS))


def _layer_names(net: nn.Module, backbone: str) -> list[str]:
    if _is_resnet(net):
        return list(RESNET_LAYERS)
    features = getattr(net, "features", None)
    if isinstance(features, nn.Sequential):
        return [f"features.{i}" for i in range(len(features))]
    raise BackboneError(f"backbone '{backbone}' has neither ResNet layers nor a 'features' sequence")


@cache
def layer_table(backbone: str) -> tuple[LayerInfo, ...]:
    """The layers of a backbone, shallow to deep, with their strides and channels.

    Found by running the network on PyTorch's ``meta`` device (shapes only), so it costs no memory.

    Raises:
        BackboneError: For a name that is not in :data:`~hamacho.settings.BACKBONES`.
    """
    if backbone not in BACKBONES:
        raise BackboneError(f"unknown backbone '{backbone}'; choose one of: {', '.join(BACKBONES)}")
    size = 64
    with torch.device("meta"):
        net = torchvision.models.get_model(backbone, weights=None).eval()
        x = torch.zeros(1, 3, size, size)
        table = []
        if _is_resnet(net):
            for name in RESNET_STEM:
                x = getattr(net, name)(x)
            for name in RESNET_LAYERS:
                x = getattr(net, name)(x)
                table.append(LayerInfo(name, size // x.shape[-1], x.shape[1]))
        else:
            for name, block in zip(_layer_names(net, backbone), net.features, strict=True):
                x = block(x)
                table.append(LayerInfo(name, size // x.shape[-1], x.shape[1]))
    return tuple(table)


def default_layers(backbone: str, strides: Sequence[int]) -> list[str]:
    """For each stride, the backbone's last layer at that stride (e.g. strides 4, 8, 16 of resnet18:
    layer1, layer2, layer3; of mobilenet_v2: features.3, features.6, features.13)."""
    table = layer_table(backbone)
    chosen = []
    for stride in strides:
        at_stride = [info.name for info in table if info.stride == stride]
        if not at_stride:
            raise BackboneError(f"backbone '{backbone}' has no layer at stride {stride}")
        chosen.append(at_stride[-1])
    return chosen


def check_layers(backbone: str, layers: Sequence[str]) -> str | None:
    """What is wrong with ``layers`` for ``backbone`` (unknown names, order), or None."""
    table = layer_table(backbone)
    order = {info.name: i for i, info in enumerate(table)}
    unknown = [layer for layer in layers if layer not in order]
    if unknown:
        valid = ", ".join(f"{i.name} (stride {i.stride}, {i.channels} ch)" for i in table)
        return f"has no layer '{unknown[0]}' in {backbone}; valid layers: {valid}"
    positions = [order[layer] for layer in layers]
    if positions != sorted(set(positions)):
        return "must list distinct layers from shallow to deep"
    return None


class FeatureExtractor(nn.Module):
    """A backbone cut after the deepest requested layer, returning the requested layers' feature maps.

    The modules keep torchvision's names (``conv1``, ``layer1.0.conv1``, ``features.3.conv.0.0``...), so
    torchvision state-dicts load as they are, and so do model files written by earlier versions.
    Torchvision weights (``state``) are loaded first; then every batch norm is folded into the
    convolution before it (eval-mode batch norm is an affine map, so the result is the same up to float
    rounding) and the weights are laid out channels-last. Both only change speed; on this project's
    2-core CPU at 256 px, batch 8: folding cut wide_resnet50_2's forward from 94 to 79 ms/image and
    channels-last from 163 to 118 ms/image (batch 32). The extractor is frozen and stays in eval mode,
    so an image's features never depend on the other images of its batch (oneDNN may still add the
    same products in another order for another batch size: docs/api.md#reproducibility). Its
    state-dict holds the folded weights.

    Args:
        backbone: Torchvision network name.
        layers: Layers to return, shallow to deep.
        state: Torchvision state-dict to load before folding, or None (keep the current initialisation).
        source: Where ``state`` came from, for error messages.
    """

    def __init__(
        self, backbone: str, layers: Sequence[str], state: dict[str, torch.Tensor] | None = None, source: str = ""
    ) -> None:
        super().__init__()
        problem = check_layers(backbone, layers)
        if problem:
            raise BackboneError(f"model.layers {problem}")
        self.layers = list(layers)
        table = {info.name: info for info in layer_table(backbone)}
        self.out_channels = [table[layer].channels for layer in self.layers]
        self.strides = [table[layer].stride for layer in self.layers]
        net = torchvision.models.get_model(backbone, weights=None)
        names = _layer_names(net, backbone)
        depth = max(names.index(layer) for layer in self.layers) + 1
        self.resnet = _is_resnet(net)
        if self.resnet:
            for name in (*RESNET_STEM, *names[:depth]):
                self.add_module(name, getattr(net, name))
        else:
            self.features = nn.Sequential(*list(net.features)[:depth])
        self._wanted = set(self.layers)
        if state is not None:
            load_backbone_state(self, state, source)
        self.requires_grad_(False)
        self.eval()
        fold_batch_norms(self)
        self.to(memory_format=torch.channels_last)
        self.channels_last = True  # the input's layout too (benchmarks/backbone_speed.py turns both off)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Keep eval mode whatever Lightning asks for."""
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, 3, S, S) in 0..255 -> float input normalised with the ImageNet mean and std."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    def _blocks(self) -> list[tuple[str, nn.Module]]:
        if self.resnet:
            stem = [(name, getattr(self, name)) for name in RESNET_STEM]
            return stem + [(name, getattr(self, name)) for name in RESNET_LAYERS if hasattr(self, name)]
        return [(f"features.{i}", block) for i, block in enumerate(self.features)]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the requested layers, shallow to deep, for uint8 RGB images (B, 3, S, S)."""
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        found = {}
        for name, block in self._blocks():
            x = block(x)
            if name in self._wanted:
                found[name] = x
        return [found[layer] for layer in self.layers]


def fold_batch_norms(module: nn.Module) -> None:
    """Fold every batch norm that directly follows a convolution into it, in place.

    Covers the two ways torchvision writes the pair: consecutive children of a ``Sequential`` (MobileNet,
    EfficientNet, ResNet's downsample) and ``convN``/``bnN`` attributes (ResNet's stem and blocks).
    """
    for owner in list(module.modules()):
        if isinstance(owner, nn.Sequential):
            children = list(owner.named_children())
            for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
                _fold(owner, conv_name, conv, bn_name, bn)
        for i in ("1", "2", "3"):
            conv, bn = getattr(owner, f"conv{i}", None), getattr(owner, f"bn{i}", None)
            _fold(owner, f"conv{i}", conv, f"bn{i}", bn)


def _fold(owner: nn.Module, conv_name: str, conv: object, bn_name: str, bn: object) -> None:
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and conv.out_channels == bn.num_features:
        setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(owner, bn_name, nn.Identity())


def build_feature_extractor(backbone: str, layers: Sequence[str], weights: str, seed: int) -> FeatureExtractor:
    """Create an extractor with weights from a download, a file or a seeded random initialisation.

    Args:
        backbone: Torchvision network name (see :data:`~hamacho.settings.BACKBONES`).
        layers: Layers to return, shallow to deep, e.g. ``["layer1", "layer2", "layer3"]``.
        weights: ``imagenet`` (torchvision download, cached), ``none`` (random init from ``seed``) or the
            path of a torchvision state-dict file.
        seed: Seed of the random initialisation.

    Returns:
        The frozen extractor.
    """
    layer_table(backbone)  # refuses unknown names
    state = None
    if weights == "imagenet":
        state = _download_imagenet(backbone)
    elif weights != "none":
        state = _read_state_dict(Path(weights))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FeatureExtractor(backbone, layers, state, source=weights)


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights of a backbone: ``IMAGENET1K_V1`` (the papers' choice) where it exists."""
    enum = torchvision.models.get_model_weights(backbone)
    return getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT


def _download_imagenet(backbone: str) -> dict[str, torch.Tensor]:
    weights = imagenet_weights(backbone)
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # URLError, socket errors, HTTP errors, hash mismatch...
        raise BackboneError(
            f"cannot download ImageNet weights for {backbone} from {weights.url} ({first_line(exc)}); "
            f"without a network pass --backbone-weights PATH to a local copy of that file (or 'none')"
        ) from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise BackboneError(f"backbone weights file not found: {path} (use imagenet, none or a file path)")
    if path.is_dir():
        raise BackboneError(f"backbone weights path is a folder, expected a state-dict file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"cannot read backbone weights {path}: not a torch state-dict file") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"backbone weights {path} do not hold a state-dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_backbone_state(extractor: FeatureExtractor, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy torchvision weights into the extractor; extra keys (later layers, the classifier) are ignored.

    Raises:
        BackboneError: Naming the first tensor the extractor needs that is missing or of another shape.
    """
    own = extractor.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise BackboneError(
            f"backbone weights {source} do not fit this backbone: {len(missing)} tensors missing "
            f"(first: {missing[0]}); is it a torchvision state-dict of the same network?"
        )
    wrong = [k for k in own if state[k].shape != own[k].shape]
    if wrong:
        raise BackboneError(
            f"backbone weights {source} do not fit this backbone: shape of {wrong[0]} is "
            f"{tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}"
        )
    extractor.load_state_dict({k: state[k] for k in own})
