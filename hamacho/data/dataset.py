"""Torch dataset over discovered samples. Unreadable files do not stop a run: they come back flagged."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info

from hamacho.data.discovery import Sample
from hamacho.data.images import ImageReadError, read_image, read_mask, resize_image, resize_mask, to_tensor


class AnomalyDataset(Dataset):
    """Images resized to a square and normalised, with masks and labels.

    Each item is a dict with ``image`` (3, S, S) uint8, ``mask`` (S, S) uint8, ``has_mask`` bool,
    ``label`` int (-1 unknown), ``index`` int, ``valid`` bool (False when the image could not be read)
    and ``error`` str (why the image or its mask could not be used; empty when all is well).
    """

    def __init__(self, samples: Sequence[Sample], image_size: int) -> None:
        self.samples = list(samples)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The items of one batch, decoded on a few threads (the DataLoader calls this per batch).

        OpenCV releases the GIL while it decodes and resizes, so a batch reads in parallel even with
        ``num_workers`` 0. On this project's 2-core CPU, MVTec bottle (900x900 PNG) decodes at 8.5 ms per
        image on 2 threads against 14 ms on one. Inside DataLoader worker processes, which already run in
        parallel, items are read one by one.
        """
        if len(indices) < 2 or get_worker_info() is not None:
            return [self[index] for index in indices]
        futures = [_decoder_pool().submit(self.__getitem__, index) for index in indices]
        try:
            return [future.result() for future in futures]
        except BaseException:
            # Ctrl-C or a failure: let running decodes end (they silence file descriptor 2 while they
            # work) before anyone reports the failure on stderr.
            for future in futures:
                future.cancel()
            wait(futures)
            raise

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        size = self.image_size
        item: dict[str, Any] = {
            "index": index,
            "label": -1 if sample.label is None else sample.label,
            "valid": True,
            "error": "",
            "has_mask": False,
            "mask": torch.zeros(size, size, dtype=torch.uint8),
        }
        try:
            image = read_image(sample.path)
        except ImageReadError as exc:
            item.update(valid=False, error=str(exc), image=torch.zeros(3, size, size, dtype=torch.uint8))
            return item
        item["image"] = to_tensor(resize_image(image, size))
        if sample.mask_path is not None:
            try:
                mask = read_mask(sample.mask_path)
            except ImageReadError as exc:
                item["error"] = f"mask ignored: {exc}"
                return item
            if mask.shape != image.shape[:2]:
                item["error"] = (
                    f"mask ignored: {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} "
                    f"but the image is {image.shape[1]}x{image.shape[0]}"
                )
                return item
            item["mask"] = torch.from_numpy(resize_mask(mask, size).astype("uint8"))
            item["has_mask"] = True
        elif sample.label == 0:
            item["has_mask"] = True  # a good image's mask is all zeros
        return item


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _decoder_pool() -> ThreadPoolExecutor:
    """One pool of decoding threads per process (a forked child gets its own; threads do not survive fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hamacho-decode"))
        return _POOL[1]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors and numbers, keep strings as lists."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch
