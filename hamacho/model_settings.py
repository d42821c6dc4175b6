"""The ``model`` section every model shares: its backbone, and the fields models re-declare with their own
defaults (:mod:`hamacho.models.params` holds each model's own parameters). No torch, no omegaconf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from hamacho.setting_fields import setting

# Torchvision classification networks usable as backbones (docs/models.md#backbones): ResNets, and the
# networks whose body is a `features` sequence. Listed here, without torch, for option checks.
BACKBONES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_s", "efficientnet_v2_m",
    "efficientnet_v2_l", "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
)


def check_layers(value: Sequence[str]) -> str | None:
    """Backbone layers: a non-empty list (whether the backbone has them is checked when the config is built)."""
    if not value:
        return "must be a non-empty list such as [layer1, layer2, layer3], or null for the backbone's defaults"
    return None


WEIGHTS_HELP = ("Backbone weights: imagenet (torchvision's download, cached in ~/.cache/torch/hub), none "
                "(random initialisation from the seed, for tests and comparisons), or the path of a local "
                "torchvision state-dict file, e.g. {example}. Without a network, use a file.")
BACKBONE_HELP = ("The torchvision network whose features are used: any ResNet, Wide ResNet, ResNeXt, MobileNet "
                 "V2/V3, EfficientNet or ConvNeXt (docs/models.md#backbones), e.g. resnet18, wide_resnet50_2, "
                 "mobilenet_v2, efficientnet_b0, convnext_tiny.")


@dataclass
class ModelParams:
    """The model: its backbone and the parameters every model has.

    Each model subclasses this class with its own parameters (:mod:`hamacho.models.params`). A subclass
    changes a default by declaring the field again with :func:`backbone_field` or :func:`layers_field`,
    which keep the checks, and sets ``LAYER_STRIDES``: with ``layers: null`` the model uses the
    backbone's last layer at each of these strides (see :func:`hamacho.models.backbone.default_layers`).
    """

    LAYER_STRIDES: ClassVar[tuple[int, ...]] = (4, 8, 16)

    name: str = setting("", help="The model (hamacho train --model): one of the registered models.")
    backbone: str = setting("resnet18", choices=BACKBONES, option="--backbone", label="Backbone", metavar="NAME",
                            help=BACKBONE_HELP)
    backbone_weights: str | None = setting("imagenet", nonempty=True, option="--backbone-weights",
                                           label="Backbone weights", metavar="imagenet|none|FILE",
                                           help=WEIGHTS_HELP.format(example="resnet18-f37072fd.pth"))
    layers: list[str] | None = setting(
        None, check=check_layers,
        help="Backbone layers whose features are concatenated (the first sets the resolution); null: the "
             "backbone's last layers at strides 4, 8 and 16 (ResNets: layer1-3; mobilenet_v2: features.3, .6, "
             ".13; docs/models.md#backbones).")
    blur_sigma: float = setting(4.0, at_least=0.0,
                                help="Sigma of the Gaussian blur applied to the anomaly map (0 disables it).")

    def for_tiles(self, tiles: int) -> ModelParams:
        """These parameters for a model that sees ``tiles`` tiles per image (models with per-tile choices
        override this; the default changes nothing)."""
        return self


def backbone_field(default: str) -> Any:
    """The ``backbone`` field with another default."""
    return setting(default, choices=BACKBONES, option="--backbone", label="Backbone", metavar="NAME",
                   help=BACKBONE_HELP)


def weights_field(example: str) -> Any:
    """The ``backbone_weights`` field with another example file in its help."""
    return setting("imagenet", nonempty=True, option="--backbone-weights", label="Backbone weights",
                   metavar="imagenet|none|FILE", help=WEIGHTS_HELP.format(example=example))


def layers_field(default: Sequence[str] | None, help: str = "") -> Any:
    """The ``layers`` field with another default (None: the backbone's layers at ``LAYER_STRIDES``)."""
    if default is None:
        return setting(None, check=check_layers, help=help)
    return setting(default_factory=lambda: list(default), check=check_layers, help=help)
