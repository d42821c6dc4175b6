"""One image as read for a model (:class:`Item`) and a stack of them (:class:`Batch`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Item:
    """One image, decoded, converted to RGB and resized to the model's input size.

    Attributes:
        index: Position in the dataset.
        label: 0 good, 1 defective, -1 unknown.
        image: uint8 (3, S, S); zeros when the image could not be read.
        mask: uint8 (S, S) ground truth, zeros without a mask.
        has_mask: True when the image has pixel labels (a mask, or it is a good image).
        valid: False when the image could not be read.
        error: Why the image (or its mask) could not be used; empty when all is well.
        original_size: (height, width) of the decoded image, (0, 0) when unreadable.
        pixels: The decoded full-size RGB image, only between decoding and resizing.
    """

    index: int
    label: int
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    has_mask: bool = False
    valid: bool = True
    error: str = ""
    original_size: tuple[int, int] = (0, 0)
    pixels: np.ndarray | None = field(default=None, repr=False)

    def nbytes(self) -> int:
        """Bytes held by the image and mask tensors."""
        return sum(t.numel() * t.element_size() for t in (self.image, self.mask) if t is not None)


@dataclass
class Batch:
    """B items stacked: tensors for the model, per-image lists for reports.

    Attributes:
        images: uint8 (B, 3, S, S).
        masks: uint8 (B, S, S).
        has_mask: bool (B,).
        labels: long (B,), -1 unknown.
        valid: bool (B,), False for unreadable images.
        indices: long (B,), positions in the dataset.
        errors: Per image, why it (or its mask) was not used; empty strings when all is well.
        original_sizes: Per image, (height, width) as decoded.
    """

    images: torch.Tensor
    masks: torch.Tensor
    has_mask: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    indices: torch.Tensor
    errors: list[str]
    original_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str, **kwargs: object) -> Batch:
        """The images on ``device`` (what Lightning calls to move a batch); the rest stays on the CPU."""
        return Batch(self.images.to(device, **kwargs), self.masks, self.has_mask, self.labels, self.valid,
                     self.indices, self.errors, self.original_sizes)


def collate(items: list[Item]) -> Batch:
    """Stack items into a :class:`Batch` (the DataLoader's ``collate_fn``)."""
    return Batch(
        images=torch.stack([item.image for item in items]),
        masks=torch.stack([item.mask for item in items]),
        has_mask=torch.tensor([item.has_mask for item in items]),
        labels=torch.tensor([item.label for item in items], dtype=torch.long),
        valid=torch.tensor([item.valid for item in items]),
        indices=torch.tensor([item.index for item in items], dtype=torch.long),
        errors=[item.error for item in items],
        original_sizes=[item.original_size for item in items],
    )
