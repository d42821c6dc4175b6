"""Typed settings: one dataclass per configuration section, the single source of defaults and checks.

Each field's default is the default users get; its bounds and choices (``setting(...)`` metadata) are
what :func:`validate` enforces. Types are enforced by OmegaConf, which builds structured configs from
these classes (:mod:`hamacho.config`). The ``model`` section is a :class:`ModelParams` subclass that each
model defines next to its code (see :mod:`hamacho.models.registry`). ``configs/<model>.yaml`` documents
the same values with comments; a test keeps the two equal.

This module imports neither torch nor omegaconf, so that the CLI can use it before parsing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

from hamacho.errors import ConfigError
from hamacho.framing_checks import (  # noqa: F401 - re-exported: settings users need them
    BACKBONE_STRIDE,
    check_crop,
    check_framing,
    check_image_size,
    check_step,
    model_input_size,
    size_pair,
)

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
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
DATA_FORMATS = ("auto", "mvtec", "folder", "filelist")
THRESHOLD_METHODS = ("auto", "f1", "sigma", "percentile", "manual")
Check = Callable[[Any], "str | None"]


def setting(
    default: Any = MISSING,
    *,
    default_factory: Callable[[], Any] | Any = MISSING,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    choices: Sequence[str] | None = None,
    nonempty: bool = False,
    check: Check | None = None,
) -> Any:
    """A dataclass field with the bounds :func:`validate` checks (``None`` values are not checked).

    Args:
        default: The default value.
        default_factory: For mutable defaults (lists).
        at_least: Smallest allowed value.
        above: The value must be greater than this.
        at_most: Largest allowed value.
        choices: Allowed strings.
        nonempty: Strings must not be empty.
        check: Further check, returning what is wrong (``"must be ..."``) or None.
    """
    metadata = {"at_least": at_least, "above": above, "at_most": at_most, "choices": choices,
                "nonempty": nonempty, "check": check}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _problem(value: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with a value, by its field's metadata, or None."""
    if value is None:
        return None
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"must be one of: {', '.join(meta['choices'])}"
    if meta.get("nonempty") and value == "":
        return "must be a non-empty string"
    if meta.get("at_least") is not None and value < meta["at_least"]:
        return f"must be at least {meta['at_least']}"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be greater than {meta['above']}"
    if meta.get("at_most") is not None and value > meta["at_most"]:
        return f"must be at most {meta['at_most']}"
    check = meta.get("check")
    return check(value) if check is not None else None


def validate(section: Any, prefix: str = "") -> None:
    """Check every field of a settings dataclass (recursively) against its bounds.

    Raises:
        ConfigError: Naming the first bad key, what it must be, and the value given.
    """
    for item in fields(section):
        value = getattr(section, item.name)
        key = f"{prefix}{item.name}"
        if is_dataclass(value):
            validate(value, f"{key}.")
            continue
        problem = _problem(value, dict(item.metadata))
        if problem:
            raise ConfigError(f"config key '{key}' {problem} (got {value!r})")


def check_layers(value: Sequence[str]) -> str | None:
    """Backbone layers: a non-empty list (whether the backbone has them is checked when the config is built)."""
    if not value:
        return "must be a non-empty list such as [layer1, layer2, layer3], or null for the backbone's defaults"
    return None


def max_num_workers() -> int:
    """Most data-loading workers allowed here: cpu_count - 2 on Linux, none elsewhere."""
    if not sys.platform.startswith("linux"):
        return 0
    return max((os.cpu_count() or 1) - 2, 0)


def check_num_workers(value: int) -> str | None:
    """Data-loading processes: Linux only, at most cpu_count - 2."""
    if value and not sys.platform.startswith("linux"):
        return "data-loading workers are only supported on Linux; use 0"
    limit = max_num_workers()
    if value > limit:
        return f"is {value} but at most {limit} is allowed here (cpu_count {os.cpu_count()} - 2)"
    return None


@dataclass
class ModelParams:
    """The ``model`` section every model has; each model subclasses it with its own parameters.

    Subclasses change a default by declaring the field again with :func:`backbone_field` or
    :func:`layers_field`, which keep the checks, and set ``LAYER_STRIDES``: with ``layers: null`` the
    model uses the backbone's last layer at each of these strides (see
    :func:`hamacho.models.backbone.default_layers`).
    """

    LAYER_STRIDES: ClassVar[tuple[int, ...]] = (4, 8, 16)

    name: str = ""
    backbone: str = setting("resnet18", choices=BACKBONES)
    backbone_weights: str | None = setting("imagenet", nonempty=True)
    layers: list[str] | None = setting(None, check=check_layers)
    blur_sigma: float = setting(4.0, at_least=0.0)

    def for_tiles(self, tiles: int) -> ModelParams:
        """These parameters for a model that sees ``tiles`` tiles per image (models with per-tile choices
        override this; the default changes nothing)."""
        return self


def backbone_field(default: str) -> Any:
    """The ``backbone`` field with another default."""
    return setting(default, choices=BACKBONES)


def layers_field(default: Sequence[str] | None) -> Any:
    """The ``layers`` field with another default (None: the backbone's layers at ``LAYER_STRIDES``)."""
    if default is None:
        return setting(None, check=check_layers)
    return setting(default_factory=lambda: list(default), check=check_layers)


@dataclass
class CircleSettings:
    """``dataset.crop: circle``: the largest circle OpenCV's Hough transform finds (docs/dataset.md#region-of-interest).

    The image is searched in grey at most :data:`hamacho.data.geometry.CIRCLE_SEARCH_SIDE` pixels wide;
    radii are fractions of the shorter image side.
    """

    min_radius_frac: float = setting(0.2, above=0.0, at_most=1.0)
    max_radius_frac: float = setting(0.5, above=0.0, at_most=1.0)
    param1: float = setting(100.0, above=0.0)
    param2: float = setting(30.0, above=0.0)
    margin: float = setting(0.0, at_least=0.0, at_most=1.0)


@dataclass
class TilingSettings:
    """``dataset.tiling``: score the image (after the crop) tile by tile (docs/dataset.md#tiling)."""

    tile_size: Any = setting(None, check=check_image_size)
    stride: Any = setting(None, check=check_step)
    resize: Any = setting(None, check=check_step)


@dataclass
class DatasetSettings:
    """Where the images are, how they are framed for the model, and how they are batched."""

    root: str | None = None
    image_size: Any = setting(256, check=check_image_size)
    batch_size: int = setting(8, at_least=1)
    num_workers: int = setting(0, at_least=0, check=check_num_workers)
    calibration_split: float = setting(0.1, above=0.0, at_most=0.9)
    format: str = setting("auto", choices=DATA_FORMATS)
    good_dir: str | None = None
    bad_dir: str | None = None
    mask_dir: str | None = None
    mask_suffix: str = "_mask"
    file_list: str | None = None
    good_list: str | None = None
    bad_list: str | None = None
    mask_list: str | None = None
    split: float = setting(0.2, above=0.0, at_most=0.9)
    name: str | None = None
    keep_aspect: bool = False
    crop: Any = setting(None, check=check_crop)
    circle: CircleSettings = field(default_factory=CircleSettings)
    valid_area_mask: str | None = setting(None, nonempty=True)
    tiling: TilingSettings = field(default_factory=TilingSettings)


@dataclass
class ThresholdSettings:
    """How the thresholds are set on the calibration images (docs/training.md#thresholds)."""

    method: str = setting("auto", choices=THRESHOLD_METHODS)
    fallback_sigma: float = setting(3.0, at_least=0.0)
    sigma: float = setting(6.0, above=0.0)
    percentile: float = setting(99.0, above=0.0, at_most=100.0)
    image: float | None = None
    pixel: float | None = None


@dataclass
class VisualizationSettings:
    """Which pictures are written per scored image."""

    report_images: bool = True
    save_heatmap: bool = False
    save_segmentation: bool = False
    only_wrong: bool = False
    heatmap_alpha: float = setting(0.5, at_least=0.0, at_most=1.0)


@dataclass
class ReportSettings:
    """The analysis report (report.html)."""

    enabled: bool = True
    examples: int = setting(5, at_least=0, at_most=50)
    pixel_sample: int = setting(200_000, at_least=0)


@dataclass
class ProjectSettings:
    """Seed and where results go."""

    seed: int = setting(0, at_least=0, at_most=2**32 - 1)
    result_path: str = setting("results", nonempty=True)


@dataclass
class TrainerSettings:
    """Device choice."""

    accelerator: str = setting("auto", choices=ACCELERATORS)


@dataclass
class Settings:
    """The whole configuration of a training run (stored in the model file)."""

    model: ModelParams = field(default_factory=ModelParams)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    threshold: ThresholdSettings = field(default_factory=ThresholdSettings)
    visualization: VisualizationSettings = field(default_factory=VisualizationSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    project: ProjectSettings = field(default_factory=ProjectSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)


def type_words(annotation: Any) -> str:
    """How a value of a field's declared type is described in an error, e.g. ``must be an integer``."""
    text = str(annotation).replace("typing.", "")
    nullable = " or null" if "None" in text else ""
    for name, words in (("bool", "must be true or false"), ("int", "must be an integer"),
                        ("float", "must be a number"), ("list", "must be a list"), ("str", "must be a string")):
        if text.startswith(name):
            return words + nullable
    return f"must be of type {text}"
