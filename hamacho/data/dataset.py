"""Dataset over samples or arrays, and batches of it. Unreadable inputs do not stop a run: they come back flagged.

No torch here: the scoring passes (and exported models) batch with :func:`iter_batches`; training hands
the same dataset to a torch DataLoader when it uses worker processes.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from hamacho.data.batch import Batch, Item, collate
from hamacho.data.decoding import ImageReadError, as_rgb_uint8, read_image, read_mask, to_chw
from hamacho.data.discovery import Sample
from hamacho.data.framing import Framing
from hamacho.data.resize import torch_loaded

DECODE_CACHE_BYTES = 256 * 1024 * 1024  # decoded images kept for a second pass (about 1000 at 256 px)
# Items larger than this are decoded again rather than kept: a tiled model's 1024 px frame and mask are 4 MB, and
# keeping whole frames made a tiled run hold hundreds of MB that an untiled run of the same tiles does not.
DECODE_CACHE_ITEM_BYTES = 2 * 1024 * 1024
Source = Sample | np.ndarray  # an image file (with label and mask), or an array given by a program


class DecodeCache:
    """Decoded, resized items of the images that a later pass will read again, within a memory budget.

    ``hamacho train`` scores the labelled test images twice: to calibrate the threshold, then to test.
    Decoding a 900x900 PNG costs about as much as resnet18's forward pass on it, so the calibration pass
    keeps what it decoded (about 260 KB per image at 256 px) and the test pass takes it back: on MVTec
    bottle this takes 83 PNG decodes (about 1.4 s) off the test pass. Items are handed over once and
    then dropped; images beyond the budget, and items larger than ``item_bytes`` (the large frames of
    tiled models, streamed rather than cached), are simply decoded again.

    Args:
        keep: Image files the later pass will read.
        budget_bytes: Most bytes of decoded items held.
        item_bytes: Most bytes of one item kept.
    """

    def __init__(self, keep: set[Path], budget_bytes: int = DECODE_CACHE_BYTES,
                 item_bytes: int = DECODE_CACHE_ITEM_BYTES) -> None:
        self.keep = keep
        self.budget_bytes = budget_bytes
        self.item_bytes = item_bytes
        self._items: dict[Path, Item] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def offer(self, path: Path, item: Item) -> None:
        """Keep an item for later if its image is wanted again and the budget allows."""
        if path not in self.keep or item.nbytes() > self.item_bytes:
            return
        with self._lock:
            if path not in self._items and self._bytes + item.nbytes() <= self.budget_bytes:
                self._items[path] = item
                self._bytes += item.nbytes()

    def take(self, path: Path) -> Item | None:
        """The kept item of an image (removed from the cache), or None."""
        with self._lock:
            item = self._items.pop(path, None)
            if item is not None:
                self._bytes -= item.nbytes()
            return item


class AnomalyDataset:
    """Images converted to RGB, cropped and fitted into the model's frame, with masks and labels.

    Args:
        sources: Samples (files with labels and masks) or image arrays (see
            :func:`hamacho.data.decoding.as_rgb_uint8`; unknown label, no mask).
        framing: How images are cropped, resized, padded and masked (:class:`~hamacho.data.framing.Framing`);
            a side or (height, width) for a plain resize.
        cache: Shared :class:`DecodeCache`: items are taken from it when there, and offered to it.
    """

    def __init__(self, sources: Sequence[Source], framing: Framing | int | tuple[int, int],
                 cache: DecodeCache | None = None) -> None:
        self.sources = list(sources)
        self.framing = framing if isinstance(framing, Framing) else Framing.plain(framing)
        self.cache = cache

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        return self.framing.frame

    def __len__(self) -> int:
        return len(self.sources)

    def __getitems__(self, indices: list[int]) -> list[Item]:
        """The items of one batch, decoded on a few threads (the DataLoader calls this per batch).

        OpenCV releases the GIL while it decodes, so a batch reads in parallel even with ``num_workers``
        0. On this project's 2-core CPU, MVTec bottle (900x900 PNG) decodes at 8.5 ms per image on 2
        threads against 14 ms on one. The threads run no torch operation: a torch operation on a pool
        thread gives that thread an OpenMP team of its own; with more OpenMP threads than cores, libgomp
        stops spinning between parallel regions for the rest of the process, and every later torch
        operation pays for waking its workers (PatchCore's bank search ran 2.5x slower after a single
        batch had been resized by torch on the pool). So where torch is loaded the threads only decode
        and the calling thread resizes with torch's kernel (0.8 ms an image); without torch (exported
        models) the threads also resize, with the same arithmetic in numpy (:mod:`hamacho.data.resize`).
        Inside DataLoader worker processes, which already run in parallel, items are read one by one.
        """
        if len(indices) < 2 or _in_loader_worker():
            return [self[index] for index in indices]
        futures = [_decoder_pool().submit(self._load, index) for index in indices]
        try:
            loaded = [future.result() for future in futures]
        except BaseException:
            # A failure or a second Ctrl-C: let running decodes end (they silence file descriptor 2 while
            # they work) before anyone reports the failure on stderr.
            for future in futures:
                future.cancel()
            wait(futures)
            raise
        return [self._settle(item, fresh) for item, fresh in loaded]

    def __getitem__(self, index: int) -> Item:
        return self._settle(*self._load(index))

    def _load(self, index: int) -> tuple[Item, bool]:
        """The item of one source and whether it is fresh: taken from the cache, or decoded (and, without
        torch, resized)."""
        source = self.sources[index]
        if self.cache is not None and isinstance(source, Sample):
            cached = self.cache.take(source.path)
            if cached is not None:
                cached.index = index
                return cached, False
        item = self._read(index, source)
        if item.pixels is None:
            item.image = np.zeros((3, *self.framing.frame), dtype=np.uint8)
            if self.framing.masks_inputs:
                item.inspected = np.zeros(self.framing.frame, dtype=bool)
        elif not torch_loaded():
            self._resize(item)
        return item, True

    def _resize(self, item: Item) -> None:
        assert item.placement is not None
        item.image = to_chw(self.framing.frame_image(item.pixels, item.placement, item.inspected))
        item.pixels = None

    def _settle(self, item: Item, fresh: bool) -> Item:
        """In the calling thread, in order: resize what is left to resize, offer fresh items to the cache."""
        if item.pixels is not None:
            self._resize(item)
        source = self.sources[item.index]
        if fresh and self.cache is not None and isinstance(source, Sample):
            self.cache.offer(source.path, item)
        return item

    def _read(self, index: int, source: Source) -> Item:
        """Decode and convert one image (kept full size in ``pixels``), place it in the frame, read its mask."""
        framing = self.framing
        sample = source if isinstance(source, Sample) else None
        label = -1 if sample is None or sample.label is None else sample.label
        item = Item(index=index, label=label, mask=np.zeros(framing.frame, dtype=np.uint8))
        try:
            image = read_image(sample.path) if sample is not None else as_rgb_uint8(source)
            item.placement = framing.locate(image)
        except ImageReadError as exc:
            item.valid, item.error = False, str(exc)
            return item
        item.pixels, item.original_size = image, image.shape[:2]
        item.inspected = framing.inspected(item.placement)
        if sample is None:
            return item
        if sample.mask_path is not None:
            try:
                mask = read_mask(sample.mask_path)
            except ImageReadError as exc:
                item.error = f"mask ignored: {exc}"
                return item
            if mask.shape != image.shape[:2]:
                item.error = (f"mask ignored: {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} "
                              f"but the image is {image.shape[1]}x{image.shape[0]}")
                return item
            item.mask = framing.frame_mask(mask, item.placement).astype(np.uint8)
            item.has_mask = True
        elif sample.label == 0:
            item.has_mask = True  # a good image's mask is all zeros
        return item


def iter_batches(
    sources: Sequence[Source], framing: Framing | int | tuple[int, int], batch_size: int,
    cache: DecodeCache | None = None,
) -> Iterator[Batch]:
    """Batches of the sources, in order, each decoded on the decoding threads."""
    dataset = AnomalyDataset(sources, framing, cache)
    for start in range(0, len(dataset), batch_size):
        yield collate(dataset.__getitems__(list(range(start, min(start + batch_size, len(dataset))))))


def _in_loader_worker() -> bool:
    """True inside a torch DataLoader worker process (only training uses them; torch is loaded then)."""
    data = sys.modules.get("torch.utils.data")
    return data is not None and data.get_worker_info() is not None


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
