"""Where the model looks: crop boxes, the largest circle, fitting into the model's frame, tiles and back.

Pure numpy and OpenCV functions (no torch), shared by training, the Predictor and so every runtime:

- a crop box in original pixels (``dataset.crop: [x1, y1, x2, y2]``) or the bounding box of the largest
  circle OpenCV's Hough transform finds (``dataset.crop: circle``);
- the crop is fitted into the *frame* (the grid the maps live on): stretched to it, or, with
  ``keep_aspect``, resized by its longer side and centred on black padding;
- with tiling, the frame is cut into overlapping tiles (the last tile of a row or column ends at the
  border), and tile maps are stitched back by averaging overlaps;
- frame maps are put back at the original size, zero outside the crop (:func:`to_original`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hamacho.data.decoding import ImageReadError, resize_image
from hamacho.framing_checks import size_pair

CIRCLE_SEARCH_SIDE = 512  # circles are searched on a copy at most this wide (Hough is quadratic in the side)

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
Size = tuple[int, int]  # height, width


@dataclass(frozen=True)
class CircleParams:
    """``dataset.circle``: radii as fractions of the shorter side; ``param1`` Canny's high threshold,
    ``param2`` the accumulator threshold (smaller finds more, and more false, circles); ``margin`` widens
    the box by this fraction of the radius."""

    min_radius_frac: float = 0.2
    max_radius_frac: float = 0.5
    param1: float = 100.0
    param2: float = 30.0
    margin: float = 0.0


@dataclass  # not frozen: Lightning's batch transfer rebuilds the dataclasses in a batch
class Placement:
    """How one image sits in the frame.

    Attributes:
        original: (height, width) of the decoded image.
        box: The crop (x1, y1, x2, y2) in original pixels.
        content: Where the crop lands in the frame (top, left, height, width); the rest is padding.
        circle: (cx, cy, r) in crop pixels for a circle crop, else None.
    """

    original: Size
    box: Box
    content: tuple[int, int, int, int]
    circle: tuple[float, float, float] | None = None


def check_box(box: Sequence[int], height: int, width: int) -> Box:
    """A crop box that lies inside a ``height`` x ``width`` image.

    Raises:
        ImageReadError: Naming the box and the image size.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    if x2 > width or y2 > height:
        raise ImageReadError(f"dataset.crop {list(box)} lies outside the {width}x{height} image")
    return x1, y1, x2, y2


def find_circle(image: np.ndarray, params: CircleParams) -> tuple[float, float, float]:
    """The largest circle in an RGB image, (cx, cy, r) in its pixels (``cv2.HoughCircles``, gradient method).

    Raises:
        ImageReadError: When no circle within the radius bounds is found.
    """
    height, width = image.shape[:2]
    scale = min(1.0, CIRCLE_SEARCH_SIDE / max(height, width))
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(grey, (5, 5), 1.5)
    short = min(grey.shape)
    circles = cv2.HoughCircles(grey, cv2.HOUGH_GRADIENT, dp=1, minDist=max(1, short // 4),
                               param1=params.param1, param2=params.param2,
                               minRadius=max(1, int(params.min_radius_frac * short)),
                               maxRadius=max(2, int(params.max_radius_frac * short)))
    if circles is None:
        raise ImageReadError(f"no circle found (dataset.circle: radius {params.min_radius_frac}-"
                             f"{params.max_radius_frac} of the shorter side, param2 {params.param2})")
    cx, cy, radius = max(circles[0], key=lambda c: c[2])
    return float(cx) / scale, float(cy) / scale, float(radius) / scale


def circle_box(circle: tuple[float, float, float], height: int, width: int, margin: float) -> Box:
    """The circle's bounding box widened by ``margin`` radii, clipped to the image."""
    cx, cy, radius = circle
    reach = radius * (1.0 + margin)
    x1, y1 = max(0, int(np.floor(cx - reach))), max(0, int(np.floor(cy - reach)))
    x2, y2 = min(width, int(np.ceil(cx + reach))), min(height, int(np.ceil(cy + reach)))
    return x1, y1, x2, y2


def disc_mask(size: Size, circle: tuple[float, float, float]) -> np.ndarray:
    """bool (H, W): True inside the circle (cx, cy, r), in the same pixels."""
    yy, xx = np.ogrid[: size[0], : size[1]]
    cx, cy, radius = circle
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= radius**2


def content_rect(crop: Size, frame: Size, keep_aspect: bool) -> tuple[int, int, int, int]:
    """Where a crop of size ``crop`` lands in ``frame``: (top, left, height, width).

    Stretched, it fills the frame; with ``keep_aspect``, its longer side (relative to the frame) fits and
    it is centred.
    """
    if not keep_aspect:
        return 0, 0, frame[0], frame[1]
    scale = min(frame[0] / crop[0], frame[1] / crop[1])
    height = min(frame[0], max(1, round(crop[0] * scale)))
    width = min(frame[1], max(1, round(crop[1] * scale)))
    return (frame[0] - height) // 2, (frame[1] - width) // 2, height, width


def fit_image(crop: np.ndarray, frame: Size, content: tuple[int, int, int, int]) -> np.ndarray:
    """RGB uint8 crop -> RGB uint8 frame: resized into ``content`` (torch's kernel), black around it."""
    top, left, height, width = content
    resized = resize_image(crop, (height, width))
    if (height, width) == tuple(frame):
        return resized
    framed = np.zeros((*frame, 3), dtype=np.uint8)
    framed[top : top + height, left : left + width] = resized
    return framed


def fit_mask(mask: np.ndarray, frame: Size, content: tuple[int, int, int, int]) -> np.ndarray:
    """bool crop-sized mask -> bool frame mask (nearest neighbour), False on the padding."""
    top, left, height, width = content
    small = mask if mask.shape == (height, width) else cv2.resize(
        mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if (height, width) == tuple(frame):
        return small
    framed = np.zeros(frame, dtype=bool)
    framed[top : top + height, left : left + width] = small
    return framed


def to_original(frame_map: np.ndarray, placement: Placement) -> np.ndarray:
    """A frame map (H, W) at the original image size: the content resized bilinearly into the crop box,
    zero outside it (float32)."""
    top, left, height, width = placement.content
    x1, y1, x2, y2 = placement.box
    content = np.array(frame_map[top : top + height, left : left + width], dtype=np.float32)  # a copy
    if content.shape != (y2 - y1, x2 - x1):
        content = cv2.resize(content, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    if (y1, x1, y2 - y1, x2 - x1) == (0, 0, *placement.original):
        return content
    full = np.zeros(placement.original, dtype=np.float32)
    full[y1:y2, x1:x2] = content
    return full


def tile_origins(frame: Size, tile: Size, stride: Size) -> list[tuple[int, int]]:
    """Top-left corners of the tiles covering ``frame``, row by row; the last row and column end at the border.

    Raises:
        ValueError: When the tile is larger than the frame.
    """
    def starts(extent: int, side: int, step: int) -> list[int]:
        if side > extent:
            raise ValueError(f"the tile ({tile[1]}x{tile[0]}) is larger than the image it tiles ({frame[1]}x{frame[0]})")
        found = list(range(0, extent - side + 1, step))
        return found if found[-1] == extent - side else [*found, extent - side]

    return [(y, x) for y in starts(frame[0], tile[0], stride[0]) for x in starts(frame[1], tile[1], stride[1])]


def coverage(frame: Size, tile: Size, origins: Sequence[tuple[int, int]]) -> np.ndarray:
    """How many tiles cover each frame pixel, float32 (H, W) (every pixel at least once)."""
    count = np.zeros(frame, dtype=np.float32)
    for y, x in origins:
        count[y : y + tile[0], x : x + tile[1]] += 1.0
    return count


def iter_tiles(
    images: np.ndarray, origins: Sequence[tuple[int, int]], tile: Size, batch_size: int,
) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
    """Tiles of a stack of frames, at most ``batch_size`` at a time (copies of one batch only).

    Args:
        images: uint8 (B, 3, H, W) frames.
        origins: From :func:`tile_origins`.
        tile: (height, width) of a tile.
        batch_size: Most tiles per yield: memory does not grow with the number of tiles.

    Yields:
        uint8 (n, 3, th, tw) tiles and, per tile, (image index, top, left).
    """
    where = [(i, y, x) for i in range(images.shape[0]) for y, x in origins]
    for start in range(0, len(where), batch_size):
        part = where[start : start + batch_size]
        yield np.stack([images[i, :, y : y + tile[0], x : x + tile[1]] for i, y, x in part]), part


def stitch(
    sums: np.ndarray, tile_maps: np.ndarray, where: Sequence[tuple[int, int, int]], tile: Size,
) -> None:
    """Add tile maps (n, th, tw) into per-image sums (B, H, W) at their places (divide by :func:`coverage`)."""
    for tile_map, (i, y, x) in zip(tile_maps, where, strict=True):
        sums[i, y : y + tile[0], x : x + tile[1]] += tile_map


def pair(value: int | Sequence[int] | None, default: Size) -> Size:
    """``N`` or ``[H, W]`` (or None: ``default``) as (height, width)."""
    return default if value is None else size_pair(value)
