"""Synthetic defects on good images, to estimate what a threshold set on good images alone would catch.

Three kinds, after the self-supervised anomaly detectors that train on them (CutPaste, Li et al. 2021;
DRAEM, Zavrtanik et al. 2021):

* ``cutpaste``: a rectangle of the image itself, its brightness changed, pasted a little way off (a misplaced
  piece of a similar surface);
* ``scratch``: a thin polyline, darker or lighter than the surface it crosses;
* ``blotch``: a stain shaped by smooth noise (a Perlin-like field: random values on a coarse grid, smoothly
  interpolated), filled with a shifted copy of the image in other colours (dirt, discolouration).

Each covers about 0.1 to 1 % of the frame (a scratch less), placed anywhere in it, so some fall on background,
and each has a random strength, from faint (a 25 % blend, a few percent of brightness) to plain: the share
flagged is an estimate of recall on small defects of mixed visibility, labelled synthetic wherever it is
shown, not a measurement on real defects. Everything is seeded: the same images and seed give the same
defects.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("cutpaste", "scratch", "blotch")
KIND_NAMES = {"cutpaste": "cut-paste patches", "scratch": "scratches", "blotch": "blotches"}


def _cutpaste(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    area = rng.uniform(0.001, 0.01) * height * width
    aspect = rng.uniform(0.3, 3.0)
    h = int(np.clip(np.sqrt(area / aspect), 4, height // 2))
    w = int(np.clip(area / max(h, 1), 4, width // 2))
    ty, tx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    # the source lies near the target (5-20 % of the side away): a misplaced piece of a similar surface
    reach = int(min(height, width) * rng.uniform(0.05, 0.2))
    sy = int(np.clip(ty + rng.integers(-reach, reach + 1), 0, height - h))
    sx = int(np.clip(tx + rng.integers(-reach, reach + 1), 0, width - w))
    patch = image[sy:sy + h, sx:sx + w].astype(np.float32)
    if h == w:
        patch = np.rot90(patch, k=int(rng.integers(0, 4)))
    strength = rng.uniform(0.0, 1.0)
    patch = patch * (1 + rng.choice([-1, 1]) * 0.25 * strength) + rng.uniform(-10, 10, size=3) * strength
    out = image.copy()
    out[ty:ty + h, tx:tx + w] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


def _scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    thickness = max(1, round(side * rng.uniform(0.003, 0.01)))
    length = side * rng.uniform(0.1, 0.3)
    points = [np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.uniform(-0.6, 0.6)
        step = length / 3 * np.array([np.cos(angle), np.sin(angle)])
        points.append(points[-1] + step)
    mask = np.zeros((height, width), np.uint8)
    cv2.polylines(mask, [np.round(np.array(points)).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    local = float(image[mask > 0].mean()) if (mask > 0).any() else 128.0
    colour = np.full(3, 20.0 if local > 110 else 235.0) + rng.uniform(-15, 15, size=3)
    alpha = (mask.astype(np.float32) / 255.0)[..., None] * rng.uniform(0.25, 0.9)
    out = image.astype(np.float32) * (1 - alpha) + colour * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _smooth_noise(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Perlin-like noise: random values on a coarse grid, cubic-interpolated to (height, width), in [0, 1]."""
    cells = int(rng.integers(3, 7))
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def _blotch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    field = _smooth_noise(height, width, rng)
    share = rng.uniform(0.001, 0.01)
    mask = field >= np.quantile(field, 1.0 - share)  # the top of one smooth bump or two: a connected stain
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, min(height, width) / 200))[..., None]
    alpha *= rng.uniform(0.25, 0.8)
    shifted = np.roll(image, (int(rng.integers(0, height)), int(rng.integers(0, width))), axis=(0, 1))
    tint = shifted.astype(np.float32)[..., rng.permutation(3)] * rng.uniform(0.5, 1.2)
    out = image.astype(np.float32) * (1 - alpha) + tint * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


_MAKERS = {"cutpaste": _cutpaste, "scratch": _scratch, "blotch": _blotch}


def synthetic_defect(image: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """A copy of ``image`` with one synthetic defect of ``kind`` (see the module docstring).

    Args:
        image: (H, W, 3) uint8 RGB image, at least 16 pixels a side.
        kind: One of :data:`KINDS`.
        seed: The defect's seed (its place, size and colour).

    Raises:
        ValueError: An unknown kind, or an image that is not (H, W, 3) uint8.
    """
    if kind not in _MAKERS:
        raise ValueError(f"synthetic defect kind {kind!r} is not one of {', '.join(KINDS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 16:
        raise ValueError(f"a synthetic defect needs an (H, W, 3) uint8 image of 16 px or more, got {image.shape} "
                         f"{image.dtype}")
    return _MAKERS[kind](image, np.random.default_rng(seed))
