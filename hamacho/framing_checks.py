"""Checks of the framing keys of ``dataset`` (model input size, crop, tiling), and the sizes they describe.

Each key alone is checked by :func:`hamacho.settings.validate` with the ``check_*`` functions below (named
in the field's metadata); :func:`check_framing` checks the rules between them. No torch, no omegaconf.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hamacho.errors import ConfigError

BACKBONE_STRIDE = 32  # every backbone's coarsest stride: model inputs are multiples of it


def size_pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``N`` or ``[H, W]`` as ``(height, width)`` (values already checked by :func:`check_image_size` or :func:`check_step`)."""
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def parse_size(text: str) -> int | list[int]:
    """A size typed on the command line: ``N``, ``HxW``, ``H,W`` or ``[H, W]`` (height first, as in
    ``dataset.image_size: [height, width]``) -> ``N`` or ``[H, W]`` (checked later, by the key's check).

    Raises:
        ValueError: For text that is none of these.
    """
    cleaned = text.strip().strip("[]()").replace("X", "x")
    parts = [part.strip() for part in cleaned.replace(",", "x").split("x")]
    if len(parts) not in (1, 2) or not all(part.removeprefix("-").isdigit() for part in parts):
        raise ValueError(f"'{text}' is not a size: write N, or height and width as HxW or H,W (e.g. 256 or 256x320)")
    values = [int(part) for part in parts]
    return values[0] if len(values) == 1 else values


def _size_problem(value: Any, multiple: int, smallest: int) -> str | None:
    """What is wrong with a size ``N`` or ``[H, W]`` (each at least ``smallest``, a multiple of ``multiple``)."""
    if isinstance(value, bool) or not (isinstance(value, int) or (
            isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value))):
        return "must be an integer N or a list [height, width] of integers"
    sides = size_pair(value)
    if min(sides) < smallest:
        return f"must be at least {smallest}"
    if any(side % multiple for side in sides):
        return f"must be a positive multiple of {multiple} (the backbone's stride)"
    return None


def check_image_size(value: Any) -> str | None:
    """Model input: N (square) or [H, W], each a multiple of the backbones' stride."""
    return _size_problem(value, BACKBONE_STRIDE, BACKBONE_STRIDE)


def check_step(value: Any) -> str | None:
    """A tiling stride or working size: N or [H, W] positive integers (0 is refused)."""
    return _size_problem(value, 1, 1)


def check_crop(value: Any) -> str | None:
    """``null``, ``circle`` or a box ``[x1, y1, x2, y2]`` in original pixels with x1 < x2 and y1 < y2."""
    if value == "circle":
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return "must be null, circle, or a box [x1, y1, x2, y2] of integer pixel coordinates"
    x1, y1, x2, y2 = value
    if min(value) < 0 or x2 <= x1 or y2 <= y1:
        return "must be a box [x1, y1, x2, y2] with 0 <= x1 < x2 and 0 <= y1 < y2"
    return None


def model_input_size(dataset: Any) -> tuple[int, int]:
    """(height, width) of the model's input: the tile with tiling on, else ``dataset.image_size``."""
    tile = dataset.tiling.tile_size
    return size_pair(tile if tile is not None else dataset.image_size)


def check_framing(dataset: Any) -> None:
    """Rules between the framing keys (each key alone is checked by :func:`validate`).

    Raises:
        ConfigError: Naming the key.
    """
    tiling, circle = dataset.tiling, dataset.circle
    if circle.min_radius_frac >= circle.max_radius_frac:
        raise ConfigError(f"config key 'dataset.circle.min_radius_frac' must be below max_radius_frac "
                          f"(got {circle.min_radius_frac} and {circle.max_radius_frac})")
    if tiling.tile_size is None:
        for key in ("stride", "resize"):
            if getattr(tiling, key) is not None:
                raise ConfigError(f"config key 'dataset.tiling.{key}' needs dataset.tiling.tile_size (tiling is off)")
        return
    tile = size_pair(tiling.tile_size)
    if tiling.stride is not None and any(s > t for s, t in zip(size_pair(tiling.stride), tile)):
        raise ConfigError(f"config key 'dataset.tiling.stride' must be at most the tile size {list(tile)}, or tiles "
                          f"would leave gaps (got {tiling.stride!r})")
    if tiling.resize is not None and any(r < t for r, t in zip(size_pair(tiling.resize), tile)):
        raise ConfigError(f"config key 'dataset.tiling.tile_size' {tiling.tile_size!r} is larger than the image "
                          f"it tiles, dataset.tiling.resize {tiling.resize!r}")
