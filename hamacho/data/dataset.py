"""Torch dataset over discovered samples. Unreadable files do not stop a run: they come back flagged."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from hamacho.data.discovery import Sample
from hamacho.data.images import ImageReadError, read_image, read_mask, resize_image, resize_mask, to_tensor


DECODE_CACHE_BYTES = 256 * 1024 * 1024  # decoded images kept for a second pass (about 1000 at 256 px)


class DecodeCache:
    """Decoded, resized items of the images that a later pass will read again, within a memory budget.

    ``hamacho train`` scores the labelled test images twice: to calibrate the threshold, then to test.
    Decoding a 900x900 PNG costs about as much as resnet18's forward pass on it, so the calibration pass
    keeps what it decoded (about 260 KB per image at 256 px) and the test pass takes it back: on MVTec
    bottle this takes 83 PNG decodes (about 1.4 s) off the test pass. Items are handed over once and
    then dropped; images beyond the budget are simply decoded again.

    Args:
        keep: Image files the later pass will read.
        budget_bytes: Most bytes of decoded items held.
    """

    def __init__(self, keep: set[Path], budget_bytes: int = DECODE_CACHE_BYTES) -> None:
        self.keep = keep
        self.budget_bytes = budget_bytes
        self._items: dict[Path, dict[str, Any]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def offer(self, path: Path, item: dict[str, Any]) -> None:
        """Keep an item for later if its image is wanted again and the budget allows."""
        if path not in self.keep:
            return
        size = sum(v.numel() * v.element_size() for v in item.values() if isinstance(v, torch.Tensor))
        with self._lock:
            if path not in self._items and self._bytes + size <= self.budget_bytes:
                self._items[path] = {k: v for k, v in item.items() if k != "index"}
                self._bytes += size

    def take(self, path: Path) -> dict[str, Any] | None:
        """The kept item of an image (removed from the cache), or None."""
        with self._lock:
            item = self._items.pop(path, None)
            if item is not None:
                self._bytes -= sum(v.numel() * v.element_size() for v in item.values() if isinstance(v, torch.Tensor))
            return item


class AnomalyDataset(Dataset):
    """Images resized to a square and normalised, with masks and labels.

    Each item is a dict with ``image`` (3, S, S) uint8, ``mask`` (S, S) uint8, ``has_mask`` bool,
    ``label`` int (-1 unknown), ``index`` int, ``valid`` bool (False when the image could not be read)
    and ``error`` str (why the image or its mask could not be used; empty when all is well).

    Args:
        samples: Images to read.
        image_size: Side of the square they are resized to.
        cache: Shared :class:`DecodeCache`: items are taken from it when there, and offered to it.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int, cache: DecodeCache | None = None) -> None:
        self.samples = list(samples)
        self.image_size = image_size
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The items of one batch, decoded on a few threads (the DataLoader calls this per batch).

        OpenCV releases the GIL while it decodes, so a batch reads in parallel even with ``num_workers``
        0. On this project's 2-core CPU, MVTec bottle (900x900 PNG) decodes at 8.5 ms per image on 2
        threads against 14 ms on one. The threads only decode (OpenCV, numpy): the resize, a torch
        operation, runs in the calling thread. A torch operation on a pool thread gives that thread an
        OpenMP team of its own; with more OpenMP threads than cores, libgomp stops spinning between
        parallel regions for the rest of the process, and every later torch operation pays for waking
        its workers: PatchCore's bank search ran 2.5x slower after a single batch had been resized on
        the pool (0.27 s against 0.66 s for 8 bottle images, resnet18, 10 % bank).
        Inside DataLoader worker processes, which already run in parallel, items are read one by one.
        """
        if len(indices) < 2 or get_worker_info() is not None:
            return [self[index] for index in indices]
        futures = [_decoder_pool().submit(self._decode, index) for index in indices]
        try:
            decoded = [future.result() for future in futures]
        except BaseException:
            # Ctrl-C or a failure: let running decodes end (they silence file descriptor 2 while they
            # work) before anyone reports the failure on stderr.
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        return [self._finish(item) for item in decoded]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._finish(self._decode(index))

    def _decode(self, index: int) -> dict[str, Any]:
        """The cached item, or the image decoded and the mask read (no torch operations: runs on threads)."""
        sample = self.samples[index]
        if self.cache is not None:
            cached = self.cache.take(sample.path)
            if cached is not None:
                return {**cached, "index": index}
        return self._read(index, sample)

    def _finish(self, item: dict[str, Any]) -> dict[str, Any]:
        """Resize a freshly decoded image to a uint8 tensor and offer the item to the cache.

        Fresh items carry ``pixels`` (None when the image could not be read); cached ones do not.
        """
        if "pixels" not in item:
            return item
        pixels = item.pop("pixels")
        if pixels is not None:
            item["image"] = to_tensor(resize_image(pixels, self.image_size))
        if self.cache is not None:
            self.cache.offer(self.samples[item["index"]].path, item)
        return item

    def _read(self, index: int, sample: Sample) -> dict[str, Any]:
        """Decode and convert one image (left full size under ``pixels``, None if unreadable) and read its mask."""
        size = self.image_size
        item: dict[str, Any] = {
            "index": index,
            "label": -1 if sample.label is None else sample.label,
            "valid": True,
            "error": "",
            "has_mask": False,
            # numpy, then torch.from_numpy: a torch fill of this size is a parallel (OpenMP) region, and on
            # a pool thread it slows later torch calls just as the resize does (search 0.39 s -> 0.79 s)
            "mask": torch.from_numpy(np.zeros((size, size), dtype=np.uint8)),
        }
        try:
            image = read_image(sample.path)
        except ImageReadError as exc:
            blank = torch.from_numpy(np.zeros((3, size, size), dtype=np.uint8))
            item.update(valid=False, error=str(exc), image=blank, pixels=None)
            return item
        item["pixels"] = image
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
