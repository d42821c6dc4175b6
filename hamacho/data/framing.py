"""How a model sees an image: crop, frame, inspected area and tiles, as one object every path shares.

:class:`Framing` is built from the ``dataset`` settings stored with a model (and its valid-area mask),
so training, inference, the Predictor over exported runtimes and the service all crop, resize, pad,
mask and tile identically. Per image, :meth:`Framing.locate` finds the crop (a fixed box, or the
largest circle), :meth:`Framing.frame_image` fits it into the frame and blacks out what is not
inspected, and :meth:`Framing.inspected` says which frame pixels count. No torch here.

Not inspected: outside the valid-area mask, outside the circle of a circle crop, and the padding of
``keep_aspect``. Those pixels are black in the model's input (so what lies there can never change a
score), their map values are 0, image scores are the maximum over inspected pixels only, and pixel
metrics skip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hamacho.data.decoding import ImageReadError, read_image
from hamacho.data.geometry import (
    Box,
    CircleParams,
    Placement,
    Size,
    check_box,
    circle_box,
    content_rect,
    disc_mask,
    find_circle,
    fit_image,
    fit_mask,
    pair,
    tile_origins,
)
from hamacho.errors import ConfigError
from hamacho.framing_checks import size_pair


@dataclass(frozen=True, eq=False)
class Framing:
    """The framing of one model (see the module docstring).

    Attributes:
        frame: (height, width) of the grid maps live on: the model input, or with tiling the working size.
        input_size: (height, width) of the model's input (the tile with tiling on).
        keep_aspect: Resize the crop by its longer side and pad, instead of stretching it.
        crop: A box (x1, y1, x2, y2) in original pixels, ``"circle"``, or None.
        circle: Hough parameters for ``crop == "circle"``.
        valid_area: bool (H, W) in original pixels, True where inspected; None: everywhere.
        stride: Tile step (height, width) with tiling on, else None.
    """

    frame: Size
    input_size: Size
    keep_aspect: bool = False
    crop: Box | str | None = None
    circle: CircleParams = field(default_factory=CircleParams)
    valid_area: np.ndarray | None = None
    stride: Size | None = None

    @classmethod
    def plain(cls, size: int | Size) -> Framing:
        """The framing of a model without any of the options: resize (stretch) to ``size``."""
        side = size_pair(size)
        return cls(side, side)

    @classmethod
    def from_settings(cls, dataset: Any, valid_area: np.ndarray | None = None) -> Framing:
        """From ``dataset`` settings (:class:`~hamacho.settings.DatasetSettings`) and the stored valid-area mask.

        With tiling on, ``dataset.tiling.resize`` must be resolved (see :func:`resolve_tiling`).
        """
        tiling = dataset.tiling
        crop, circle = _crop_settings(dataset)
        if tiling.tile_size is None:
            size = pair(dataset.image_size, (0, 0))
            return cls(size, size, bool(dataset.keep_aspect), crop, circle, valid_area)
        tile = pair(tiling.tile_size, (0, 0))
        if tiling.resize is None:
            raise ConfigError("dataset.tiling.resize is not resolved: train the model to fix the working size")
        return cls(pair(tiling.resize, tile), tile, bool(dataset.keep_aspect), crop, circle, valid_area,
                   pair(tiling.stride, tile))

    @property
    def tiled(self) -> bool:
        """True when the frame is scored tile by tile."""
        return self.stride is not None

    @property
    def masks_inputs(self) -> bool:
        """True when some frame pixels may be left out of the inspection."""
        return self.keep_aspect or self.crop == "circle" or self.valid_area is not None

    @property
    def map_scores(self) -> bool:
        """True when image scores are the maxima of the (stitched, masked) maps rather than the model's own."""
        return self.tiled or self.masks_inputs

    def origins(self) -> list[tuple[int, int]]:
        """Tile corners in the frame (:func:`hamacho.data.geometry.tile_origins`); one tile without tiling."""
        if not self.tiled:
            return [(0, 0)]
        assert self.stride is not None
        return tile_origins(self.frame, self.input_size, self.stride)

    def locate(self, image: np.ndarray) -> Placement:
        """Where the model looks in one decoded RGB image: crop box, content in the frame, circle.

        Raises:
            ImageReadError: The box lies outside the image, no circle is found, or the valid-area mask has
                another size than the image.
        """
        height, width = image.shape[:2]
        if self.valid_area is not None and self.valid_area.shape != (height, width):
            raise ImageReadError(f"the valid-area mask is {self.valid_area.shape[1]}x{self.valid_area.shape[0]} "
                                 f"but the image is {width}x{height}")
        circle = None
        if self.crop is None:
            box: Box = (0, 0, width, height)
        elif self.crop == "circle":
            found = find_circle(image, self.circle)
            box = circle_box(found, height, width, self.circle.margin)
            circle = (found[0] - box[0], found[1] - box[1], found[2])
        else:
            box = check_box(self.crop, height, width)  # type: ignore[arg-type]
        crop_size = (box[3] - box[1], box[2] - box[0])
        return Placement((height, width), box, content_rect(crop_size, self.frame, self.keep_aspect), circle)

    def inspected(self, placement: Placement) -> np.ndarray | None:
        """bool frame (H, W): pixels that are inspected; None when the framing never leaves any out."""
        if not self.masks_inputs:
            return None
        x1, y1, x2, y2 = placement.box
        area = np.ones((y2 - y1, x2 - x1), dtype=bool)
        if self.valid_area is not None:
            area = self.valid_area[y1:y2, x1:x2]
        if placement.circle is not None:
            area = area & disc_mask(area.shape, placement.circle)
        return fit_mask(area, self.frame, placement.content)

    def frame_image(self, image: np.ndarray, placement: Placement, inspected: np.ndarray | None) -> np.ndarray:
        """RGB uint8 image -> RGB uint8 frame: cropped, fitted (resize, padding), black where not inspected."""
        x1, y1, x2, y2 = placement.box
        framed = fit_image(image[y1:y2, x1:x2], self.frame, placement.content)
        if inspected is not None and not inspected.all():
            framed = framed.copy() if framed.base is not None else framed
            framed[~inspected] = 0
        return framed

    def frame_mask(self, mask: np.ndarray, placement: Placement) -> np.ndarray:
        """A ground-truth mask (original pixels) on the frame, bool."""
        x1, y1, x2, y2 = placement.box
        return fit_mask(mask[y1:y2, x1:x2], self.frame, placement.content)


def _crop_settings(dataset: Any) -> tuple[Box | str | None, CircleParams]:
    """``dataset.crop`` (a box as a tuple) and ``dataset.circle`` as plain values."""
    crop = dataset.crop if dataset.crop in (None, "circle") else tuple(int(v) for v in dataset.crop)
    circle = CircleParams(**{key: float(getattr(dataset.circle, key)) for key in CircleParams.__dataclass_fields__})
    return crop, circle  # type: ignore[return-value]


def load_valid_area(path: str | Path) -> np.ndarray:
    """Read ``dataset.valid_area_mask``: bool (H, W), True where the pixel is light (white = inspect).

    Raises:
        ConfigError: When the file cannot be read as an image, or inspects nothing.
    """
    try:
        mask = _read_grey(path)
    except ImageReadError as exc:
        raise ConfigError(f"dataset.valid_area_mask: {exc}") from exc
    valid = mask >= 128
    if not valid.any():
        raise ConfigError(f"dataset.valid_area_mask {path} is black everywhere: nothing would be inspected")
    return valid


def _read_grey(path: str | Path) -> np.ndarray:
    """A mask file as grey uint8 (H, W) (colour files: the brightest channel)."""
    if not Path(path).is_file():
        raise ImageReadError(f"file not found: {path}")
    return read_image(path).max(axis=2)


def prepare_framing(dataset: Any, first_image: str | Path) -> tuple[Framing, np.ndarray | None]:
    """The framing of a new model: reads the valid-area mask, frames the first training image once (so that a
    bad crop, a mask of another size or a missing circle stops training in one line, before any work) and
    fixes the tiling's working size.

    ``dataset.tiling.resize: null`` becomes the crop's own size on the first training image, written back
    into ``dataset`` so that the model file stores it.

    Args:
        dataset: The ``dataset`` settings (:class:`~hamacho.settings.DatasetSettings`), updated in place.
        first_image: The first training image.

    Returns:
        The framing and the valid-area mask (None without one).

    Raises:
        ConfigError: Naming the problem.
    """
    valid_area = load_valid_area(dataset.valid_area_mask) if dataset.valid_area_mask else None
    probe = Framing((1, 1), (1, 1), False, *_crop_settings(dataset), valid_area)
    try:
        placement = probe.locate(read_image(first_image))
    except ImageReadError as exc:
        raise ConfigError(f"{exc} ({first_image})") from exc
    tiling = dataset.tiling
    if tiling.tile_size is not None:
        if tiling.resize is None:
            x1, y1, x2, y2 = placement.box
            tiling.resize = [y2 - y1, x2 - x1]
        tile, frame = pair(tiling.tile_size, (0, 0)), pair(tiling.resize, (0, 0))
        if tile[0] > frame[0] or tile[1] > frame[1]:
            raise ConfigError(f"dataset.tiling.tile_size {tile[1]}x{tile[0]} is larger than the image it tiles "
                              f"({frame[1]}x{frame[0]} after the crop); choose a smaller tile or set "
                              "dataset.tiling.resize")
    return Framing.from_settings(dataset, valid_area), valid_area
