"""The images' resize: antialiased bilinear on uint8, bit for bit torch's kernel, with or without torch.

Training has always resized with ``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)``
on uint8 images (torchvision's ``Resize``). That kernel computes in fixed point: per output pixel the
triangle-filter weights over the input pixels it covers, scaled to 16-bit integers with a precision
chosen from the largest weight, one horizontal pass to a uint8 image, then one vertical pass
(it is Pillow-SIMD's algorithm; plain Pillow uses 22-bit weights and differs by one grey level on some
pixels). :func:`resize_uint8` is the same arithmetic in numpy, so that exported models, which run
without torch, see exactly the pixels the model was trained on; ``tests/test_data.py`` compares the two
on hundreds of random sizes. Where torch is loaded anyway, torch's kernel is used (identical output,
0.84 ms against 14 ms for a 900x900 MVTec image on this project's CPU).
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache

import cv2
import numpy as np

from hamacho.framing_checks import size_pair


@lru_cache(maxsize=64)
def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Input indices (out, K), integer weights (out, K) and their precision in bits, as torch computes them.

    Weights are computed in double precision in torch's order of operations (the sums are sequential),
    so the integer weights are the same to the last bit.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = math.ceil(support) * 2 + 1
    starts = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, taps))
    for i in range(out_size):
        center = scale * (i + 0.5)
        start = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), in_size) - start
        row, total = [], 0.0
        for j in range(count):
            x = abs((j + start - center + 0.5) * invscale)
            w = 1.0 - x if x < 1.0 else 0.0
            row.append(w)
            total += w
        weights[i, :count] = [w / total for w in row] if total != 0.0 else row
        starts[i] = start
    largest = weights.max()
    precision = 0
    while precision < 22 and int(0.5 + largest * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    integers = np.floor(0.5 + weights * (1 << precision)).astype(np.int32)
    index = np.minimum(starts[:, None] + np.arange(taps)[None, :], in_size - 1)
    return index, integers, precision


def _resample_rows(rows: np.ndarray, out_size: int) -> np.ndarray:
    """One pass along axis 0: uint8 (n, m) -> uint8 (out_size, m), gathering whole rows (contiguous copies)."""
    index, weights, precision = _coefficients(rows.shape[0], out_size)
    acc = np.full((out_size, rows.shape[1]), 1 << (precision - 1), dtype=np.int32)
    product = np.empty_like(acc)
    for k in range(index.shape[1]):
        if weights[:, k].any():
            np.multiply(rows[index[:, k]], weights[:, k, None], out=product, dtype=np.int32)
            acc += product
    acc >>= precision
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def resize_uint8(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize uint8 (H, W, C) to ``size`` (a side, or (height, width)) exactly as torch's antialiased bilinear
    kernel (numpy only).

    The horizontal pass runs on the transposed image, so that it gathers whole rows; OpenCV transposes
    (0.34 ms for a 900x900 RGB image, against 3.4 ms for numpy's strided copy).
    """
    out_h, out_w = size_pair(size)
    height, width, channels = image.shape
    out = image
    if width != out_w:  # horizontal pass first, as torch does
        by_column = cv2.transpose(np.ascontiguousarray(out)).reshape(width, height * channels)
        out = _resample_rows(by_column, out_w).reshape(out_w, height, channels)
        out = cv2.transpose(out) if channels <= 4 else out.transpose(1, 0, 2)
        out = out.reshape(height, out_w, channels)
    if height != out_h:
        out = _resample_rows(np.ascontiguousarray(out).reshape(height, -1), out_h).reshape(out_h, out_w, channels)
    return np.ascontiguousarray(out)


def torch_loaded() -> bool:
    """True when this process has imported torch (then its kernel resizes; the result is the same)."""
    return sys.modules.get("torch") is not None


def resize_with_torch(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """torch's kernel on one image (call it on the main thread: torch work on pool threads slows torch)."""
    import torch
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    resized = F.interpolate(pixels, size=size_pair(size), mode="bilinear", antialias=True, align_corners=False)
    return resized[0].permute(1, 2, 0).contiguous().numpy()
