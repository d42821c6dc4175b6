"""One image as read for a model (:class:`Item`) and a stack of them (:class:`Batch`), in numpy (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hamacho.data.geometry import Placement


@dataclass
class Item:
    """One image, decoded, converted to RGB, cropped and fitted into the model's frame (H, W).

    Attributes:
        index: Position in the dataset.
        label: 0 good, 1 defective, -1 unknown.
        image: uint8 (3, H, W); zeros when the image could not be read.
        mask: uint8 (H, W) ground truth, zeros without a mask.
        has_mask: True when the image has pixel labels (a mask, or it is a good image).
        valid: False when the image could not be read.
        error: Why the image (or its mask) could not be used; empty when all is well.
        original_size: (height, width) of the decoded image, (0, 0) when unreadable.
        pixels: The decoded full-size RGB image, only between decoding and resizing.
        placement: Where the image sits in the frame (crop box, content); None when unreadable.
        inspected: bool (H, W), the frame pixels that are inspected; None when the framing inspects all.
    """

    index: int
    label: int
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    has_mask: bool = False
    valid: bool = True
    error: str = ""
    original_size: tuple[int, int] = (0, 0)
    pixels: np.ndarray | None = field(default=None, repr=False)
    placement: Placement | None = None
    inspected: np.ndarray | None = field(default=None, repr=False)

    def nbytes(self) -> int:
        """Bytes held by the image, mask and inspected-area arrays."""
        return sum(a.nbytes for a in (self.image, self.mask, self.inspected) if a is not None)


@dataclass
class Batch:
    """B items stacked: arrays for the model and the metrics, per-image lists for reports.

    Attributes:
        images: uint8 (B, 3, H, W), RGB frames.
        masks: uint8 (B, H, W).
        has_mask: bool (B,).
        labels: int64 (B,), -1 unknown.
        valid: bool (B,), False for unreadable images.
        indices: int64 (B,), positions in the dataset.
        errors: Per image, why it (or its mask) was not used; empty strings when all is well.
        original_sizes: Per image, (height, width) as decoded.
        placements: Per image, where it sits in the frame (None when unreadable).
        inspected: bool (B, H, W), the inspected frame pixels; None when the framing inspects all.
    """

    images: np.ndarray
    masks: np.ndarray
    has_mask: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    indices: np.ndarray
    errors: list[str]
    original_sizes: list[tuple[int, int]]
    placements: list[Placement | None] = field(default_factory=list)
    inspected: np.ndarray | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def collate(items: list[Item]) -> Batch:
    """Stack items into a :class:`Batch` (also the DataLoader's ``collate_fn`` when training)."""
    return Batch(
        images=np.stack([item.image for item in items]),
        masks=np.stack([item.mask for item in items]),
        has_mask=np.array([item.has_mask for item in items], dtype=bool),
        labels=np.array([item.label for item in items], dtype=np.int64),
        valid=np.array([item.valid for item in items], dtype=bool),
        indices=np.array([item.index for item in items], dtype=np.int64),
        errors=[item.error for item in items],
        original_sizes=[item.original_size for item in items],
        placements=[item.placement for item in items],
        inspected=None if items[0].inspected is None else np.stack([item.inspected for item in items]),
    )
