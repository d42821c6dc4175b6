"""The report's example images: a bounded selection of the worst and best scored images of a run.

The selection is made while the images stream past (test or predict stage), so that memory stays
the same whatever the number of test images: each group keeps at most ``n`` candidates in a heap.
Ranking uses the *unclipped* normalized score ``(raw - threshold) / span + 0.5`` (the normalized score
before clipping to 0..1), so that images beyond the ends of the scale still have an order.

Groups:
    ``worst``      labelled images, wrong decisions first (false positives by how far above the cut,
                   false negatives by how far below), then correct ones closest to the cut.
    ``best_ng``    defective images, highest score first (clearest detections).
    ``best_ok``    good images, lowest score first.
    ``highest``    unlabelled images, highest score first.
    ``borderline`` unlabelled images, closest to the cut first.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np

GROUPS = ("worst", "best_ng", "best_ok", "highest", "borderline")
# Report pictures show the frame at most this many pixels on its longer side (tiled models work on large
# frames; full-resolution heatmaps are the heatmaps/ pictures).
PICTURE_MAX_SIDE = 768


def picture_arrays(
    image: np.ndarray, norm_map: np.ndarray, pred_mask: np.ndarray, gt_mask: np.ndarray | None,
    inspected: np.ndarray | None, max_side: int = PICTURE_MAX_SIDE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A frame's picture arrays, shrunk to at most ``max_side`` on the longer side (area-averaged image and
    map, nearest-neighbour masks); unchanged when already that small."""
    height, width = norm_map.shape
    if max(height, width) <= max_side:
        return image, norm_map, pred_mask, gt_mask, inspected
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))

    def nearest(mask: np.ndarray | None) -> np.ndarray | None:
        return None if mask is None else cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0

    small_map = cv2.resize(np.asarray(norm_map, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA), small_map, nearest(pred_mask),  # type: ignore[return-value]
            nearest(gt_mask), nearest(inspected))


@dataclass
class Example:
    """What is needed to draw one example picture with :func:`hamacho.report.drawing.compose_report`."""

    name: str
    label: str  # good | defective | ""
    normalized_score: float
    decision: str
    image: np.ndarray  # RGB uint8 (H, W, 3), the frame (shrunk to PICTURE_MAX_SIDE)
    norm_map: np.ndarray  # normalized map (H, W), float16 to halve the memory
    pred_mask: np.ndarray  # bool (H, W)
    gt_mask: np.ndarray | None  # bool (H, W), or None when the run has no masks at all
    inspected: np.ndarray | None = None  # bool (H, W), None when every pixel is inspected

    @property
    def wrong(self) -> bool:
        """True for a labelled image whose decision contradicts its label."""
        return bool(self.label) and (self.decision == "NG") != (self.label == "defective")


Key = tuple[float, float]
_PACKED_FIELDS = ("image", "norm_map", "pred_mask", "gt_mask", "inspected")
PACK_MIN_BYTES = 1024 * 1024  # examples of frames above about 512 px are packed while they wait


@dataclass(frozen=True)
class Packed:
    """An array kept zlib-compressed (level 1) while it waits for the report: a tiled model's example (frame
    pictures of 768 px) is 4 MB raw and about a third of that packed; unpacked, it is the same to the bit."""

    data: bytes
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def of(cls, array: np.ndarray) -> Packed:
        """Pack an array."""
        array = np.ascontiguousarray(array)
        return cls(zlib.compress(array.tobytes(), 1), array.shape, array.dtype.str)

    def unpack(self) -> np.ndarray:
        """The array, writable."""
        return np.frombuffer(zlib.decompress(self.data), dtype=self.dtype).reshape(self.shape).copy()


@dataclass(frozen=True)
class PackedExample:
    """An :class:`Example` whose arrays wait packed (:class:`Packed`; None stays None)."""

    name: str
    label: str
    normalized_score: float
    decision: str
    arrays: dict[str, Packed | None]

    def unpack(self) -> Example:
        """The example, with its arrays as they were."""
        arrays = {key: None if value is None else value.unpack() for key, value in self.arrays.items()}
        return Example(self.name, self.label, self.normalized_score, self.decision, **arrays)  # type: ignore[arg-type]


def pack(example: Example, min_bytes: int = PACK_MIN_BYTES) -> Example | PackedExample:
    """The example with its arrays packed when they hold at least ``min_bytes``; smaller ones are kept as they are
    (packing would cost more time than it saves memory)."""
    arrays = {name: getattr(example, name) for name in _PACKED_FIELDS}
    if sum(a.nbytes for a in arrays.values() if a is not None) < min_bytes:
        return example
    return PackedExample(example.name, example.label, example.normalized_score, example.decision,
                         {name: None if a is None else Packed.of(a) for name, a in arrays.items()})


def unpack(example: Example | PackedExample) -> Example:
    """An example as :func:`pack` took it."""
    return example.unpack() if isinstance(example, PackedExample) else example


def rank_keys(label: str, unclipped: float, cut: float, decision: str) -> dict[str, Key]:
    """Sort keys (larger = shown first) of one image for each group it belongs to.

    Args:
        label: ``good``, ``defective`` or ``""`` (unknown).
        unclipped: Unclipped normalized score.
        cut: Normalized image threshold in use.
        decision: ``OK`` or ``NG``.

    Returns:
        ``{group: key}`` for the groups the image can enter.
    """
    if label == "good":
        wrong = float(decision == "NG")
        return {"worst": (wrong, unclipped - cut), "best_ok": (0.0, -unclipped)}
    if label == "defective":
        wrong = float(decision == "OK")
        return {"worst": (wrong, cut - unclipped), "best_ng": (0.0, unclipped)}
    return {"highest": (0.0, unclipped), "borderline": (0.0, -abs(unclipped - cut))}


class ExampleTracker:
    """Keeps the top ``n`` candidates of each group (see module docstring), packed (:func:`pack`) until asked for.

    Args:
        n: Examples per group (0 keeps nothing).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._heaps: dict[str, list[tuple[Key, int, Example | PackedExample]]] = {group: [] for group in GROUPS}
        self._counter = itertools.count()  # stable tie-break: earlier images win

    def wants(self, keys: dict[str, Key]) -> bool:
        """True if an image with these keys would enter any group (checked before copying its arrays)."""
        if self.n <= 0:
            return False
        return any(len(self._heaps[g]) < self.n or key > self._heaps[g][0][0] for g, key in keys.items())

    def offer(self, keys: dict[str, Key], example: Example) -> None:
        """Add the example to every group where it ranks among the top ``n``."""
        if self.n <= 0:
            return
        packed = pack(example)
        for group, key in keys.items():
            heap = self._heaps[group]
            entry = (key, -next(self._counter), packed)
            if len(heap) < self.n:
                heapq.heappush(heap, entry)
            elif key > heap[0][0]:
                heapq.heapreplace(heap, entry)

    def group(self, name: str) -> list[Example]:
        """The group's examples, first-ranked first."""
        return [unpack(entry[2]) for entry in sorted(self._heaps[name], key=lambda e: (e[0], e[1]), reverse=True)]

    def best(self, exclude: Collection[str] = ()) -> list[Example]:
        """Best ``n`` labelled examples: defective and good in turn, clearest first.

        Args:
            exclude: Names not to repeat (those already shown among the worst, on small test sets).
        """
        ng = [e for e in self.group("best_ng") if e.name not in exclude]
        ok = [e for e in self.group("best_ok") if e.name not in exclude]
        mixed = [e for pair in itertools.zip_longest(ng, ok) for e in pair if e is not None]
        return mixed[: self.n]
