"""Synthetic defects on good images, to estimate what a threshold set on good images alone would catch.

Three kinds, after the self-supervised anomaly detectors that train on them (CutPaste, Li et al. 2021;
DRAEM, Zavrtanik et al. 2021):

* ``cutpaste``: a rectangle of the image itself, its brightness changed, pasted elsewhere (a misplaced or
  foreign part of the right texture);
* ``scratch``: a thin polyline, darker or lighter than the surface it crosses;
* ``blotch``: a stain shaped by smooth noise (a Perlin-like field: random values on a coarse grid, smoothly
  interpolated), filled with a shifted copy of the image in other colours (dirt, discolouration).

Each covers about 0.5 to 3 % of the frame, placed anywhere in it, so some fall on background: the share
flagged is an estimate of recall on defects of that size, labelled synthetic wherever it is shown, not a
measurement on real defects. Everything is seeded: the same images and seed give the same defects.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("cutpaste", "scratch", "blotch")
KIND_NAMES = {"cutpaste": "cut-paste patches", "scratch": "scratches", "blotch": "blotches"}


def _cutpaste(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    area = rng.uniform(0.005, 0.03) * height * width
    aspect = rng.uniform(0.3, 3.0)
    h = int(np.clip(np.sqrt(area / aspect), 4, height // 2))
    w = int(np.clip(area / max(h, 1), 4, width // 2))
    sy, sx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
    patch = image[sy:sy + h, sx:sx + w].astype(np.float32)
    patch = np.rot90(patch, k=int(rng.integers(0, 4)))
    patch = patch * rng.uniform(0.6, 1.4) + rng.uniform(-25, 25, size=3)
    ph, pw = patch.shape[:2]
    ty, tx = rng.integers(0, height - ph + 1), rng.integers(0, width - pw + 1)
    out = image.copy()
    out[ty:ty + ph, tx:tx + pw] = np.clip(patch, 0, 255).astype(np.uint8)
    return out


def _scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    side = min(height, width)
    thickness = max(1, round(side * rng.uniform(0.008, 0.02)))
    length = side * rng.uniform(0.2, 0.45)
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
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
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
    share = rng.uniform(0.005, 0.03)
    mask = field >= np.quantile(field, 1.0 - share)  # the top of one smooth bump or two: a connected stain
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, min(height, width) / 200))[..., None]
    shifted = np.roll(image, (int(rng.integers(0, height)), int(rng.integers(0, width))), axis=(0, 1))
    tint = shifted.astype(np.float32)[..., rng.permutation(3)] * rng.uniform(0.5, 1.2)
    out = image.astype(np.float32) * (1 - 0.85 * alpha) + tint * (0.85 * alpha)
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
