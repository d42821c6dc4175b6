"""PatchCore's training patches reduced to their chunked coreset while they arrive.

:func:`~hamacho.models.coreset.chunked_coreset` cuts the training patches (rows, in image order) into
chunks, and each chunk keeps its share of the bank by its own greedy selection, seeded ``seed + its
number``. The chunks and the shares depend only on the number of rows ``n`` and the bank size
(:func:`~hamacho.models.coreset.chunk_plan`), and a chunk's selection only on its own rows. So when ``n``
is known before the rows arrive, each chunk can be selected as soon as its last row is in, and its
other rows dropped: memory then holds one chunk (its full embeddings and projections) plus the bank
chosen so far, whatever the number of training images, and the bank is the one the selection over all
rows at the end gives, row for row.

``n`` is known before feature extraction: the training images, the tiles per image and the batches are
(:meth:`CoresetStream.expect` takes the rows of every coming :meth:`~CoresetStream.add`;
:meth:`hamacho.models.patchcore.PatchcoreModel.expect_updates` derives them). Every add is checked
against what was announced; should one differ (an unreadable image left out of its batch, which fails the
training anyway, or a caller's wrong announcement), streaming stops there: the rows from the current
chunk on are kept and selected at the end as their own chunked coreset (``ceil(ratio * rows)`` centres,
seeds continuing), a valid bank but no longer the one a single pass over all rows would choose. Without
an announcement, or with ``chunk`` 0 (one selection over every row), every row is kept until
:meth:`~CoresetStream.finish`, as before streaming.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from hamacho.models.coreset import chunk_plan, chunked_coreset, greedy_selection
from hamacho.models.patch_store import PatchStore
from hamacho.progress import Phase, null_phase


class CoresetStream:
    """Training patches in, memory bank out; see the module docstring.

    Args:
        dim: Embedding size D.
        projection: (D, p) projection for coreset distances, or None to use the full embeddings.
        budget_bytes: Most bytes of full embeddings a chunk keeps in memory before a temporary file.
        ratio: Share of the rows kept in the bank (``ceil(ratio * n)``, at least one).
        chunk: Rows per greedy selection (0: one selection over every row, at the end).
        seed: Seed of the first chunk's selection (chunk i: ``seed + i``).
    """

    def __init__(self, dim: int, projection: torch.Tensor | None, budget_bytes: int, ratio: float, chunk: int,
                 seed: int) -> None:
        self.dim, self.budget_bytes, self.ratio, self.chunk, self.seed = dim, budget_bytes, ratio, chunk, seed
        self.projection = None if projection is None else projection.detach().float().cpu()
        self.count = 0  # rows added
        self.selected_chunks = 0  # chunks already reduced to their selection
        self.selection_seconds = 0.0  # spent selecting chunks during add() (fitting, timed apart from extraction)
        self._store = self._new_store()  # rows of the current chunk (of all rows, without streaming)
        self._start = 0  # first row of the current chunk
        self._bank: list[torch.Tensor] = []  # full embeddings chosen so far, chunk after chunk
        self._announced: list[int] | None = None  # rows of each coming add, while streaming
        self._adds = 0
        self._bounds: list[int] = []
        self._quota: list[int] = []

    @property
    def streaming(self) -> bool:
        """True while chunks are selected as they complete."""
        return self._announced is not None

    @property
    def spilled(self) -> bool:
        """True when the current chunk's full embeddings are in a temporary file."""
        return self._store.spilled

    def expect(self, rows: Sequence[int]) -> None:
        """Announce the rows of every coming :meth:`add`, in order (before the first); starts streaming when
        they make more than one chunk."""
        if self.count:
            raise RuntimeError("rows must be announced before the first ones are added")
        n = sum(rows)
        if self.chunk <= 0 or n <= 0:
            return
        bounds, quota = chunk_plan(n, max(1, math.ceil(self.ratio * n)), self.chunk)
        if quota.size > 1:
            self._announced, self._bounds, self._quota = list(rows), bounds.tolist(), quota.tolist()

    def add(self, patches: torch.Tensor, advance: Callable[[int], None] | None = None) -> None:
        """Append (n, D) embeddings; select every chunk they complete (but the last, left to :meth:`finish`).

        Args:
            patches: The rows, in training order.
            advance: Told of the selection steps done; may raise to stop (then the stream is closed).
        """
        patches = patches.detach().float().cpu().contiguous()
        projected = None if self.projection is None else patches @ self.projection  # the whole add at once
        announced = self._announced
        if announced is not None and (self._adds >= len(announced) or patches.shape[0] != announced[self._adds]):
            self._announced = None  # not the rows announced: no more streaming (module docstring)
        self._adds += 1
        start, rows = 0, patches.shape[0]
        try:
            while start < rows:
                end = rows
                if self.streaming:
                    end = min(rows, start + self._bounds[self.selected_chunks + 1] - self.count)
                whole = start == 0 and end == rows
                part = patches if whole else patches[start:end].clone()  # no view keeps the whole add alive
                part_projected = projected if projected is None or whole else projected[start:end].clone()
                self._store.add(part, part_projected)
                self.count += end - start
                start = end
                last = self.selected_chunks + 2 >= len(self._bounds)
                if self.streaming and not last and self.count == self._bounds[self.selected_chunks + 1]:
                    self._select_chunk(advance or _ignore)
        except BaseException:
            self.close()
            raise

    def finish(self, phase: Phase | None = None) -> torch.Tensor:
        """The (M, D) memory bank: the chunks selected so far and the selection of the rows left.

        Args:
            phase: Told of the remaining selection steps (its total is set to them); may stop the selection.
        """
        phase = phase or null_phase()
        rest = self.count - self._start
        try:
            if self.streaming and self.count == self._bounds[-1]:  # as announced: the last chunk is left
                phase.set_total(self._quota[self.selected_chunks])
                self._select_current(phase.advance)
            elif rest:  # every row (no streaming), or those from the chunk where the rows departed from the plan
                count = max(1, math.ceil(self.ratio * rest))
                indices = chunked_coreset(self._store.projected(), count, self.seed + self.selected_chunks,
                                          self.chunk, phase=phase)
                self._bank.append(self._store.gather(indices))
            if not self._bank:
                raise RuntimeError("no training patches were added")
            return self._bank[0] if len(self._bank) == 1 else torch.cat(self._bank)
        finally:
            self.close()

    def close(self) -> None:
        """Free the rows and the bank, delete any temporary file."""
        self._store.close()
        self._bank = []
        self._announced = None

    def _select_current(self, advance: Callable[[int], None]) -> None:
        """Add the current chunk's selection (its planned share of the bank) to the bank."""
        quota = self._quota[self.selected_chunks]
        if quota:
            local = greedy_selection(self._store.projected(), quota, self.seed + self.selected_chunks, advance)
            self._bank.append(self._store.gather(torch.from_numpy(local)))

    def _select_chunk(self, advance: Callable[[int], None]) -> None:
        """Reduce the complete current chunk to its selection and start the next one."""
        started = time.perf_counter()
        self._select_current(advance)
        self.selection_seconds += time.perf_counter() - started
        self._store.close()
        self._store = self._new_store()
        self.selected_chunks += 1
        self._start = self.count

    def _new_store(self) -> PatchStore:
        return PatchStore(self.dim, self.projection, self.budget_bytes)


def _ignore(steps: int) -> None:
    """An ``advance`` that ignores the steps."""
