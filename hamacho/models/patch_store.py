"""Training patch embeddings gathered batch by batch within a memory budget.

The coreset needs every training patch, but only as a low-dimensional random projection (256
numbers instead of 1536 for wide_resnet50_2); the full embeddings are needed only for the few
patches the coreset keeps. So the projections always stay in memory, and the full embeddings stay in
memory only while they fit in the budget: beyond it they go to a temporary file, from which the
chosen rows are read back at the end. The memory bank is then identical to the in-memory one (no
effect on accuracy); the cost is disk space and sequential writes.

With the chunked coreset a store holds one chunk's patches only (:mod:`hamacho.models.coreset_stream`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch


class PatchStore:
    """Append-only store of (n, D) float32 patch embeddings.

    Args:
        dim: Embedding size D.
        projection: (D, p) projection matrix for coreset distances, or None to use the full embeddings
            (which then always stay in memory).
        budget_bytes: Most bytes of full embeddings kept in memory.
    """

    def __init__(self, dim: int, projection: torch.Tensor | None, budget_bytes: int) -> None:
        self.dim = dim
        self.projection = projection
        self.budget_bytes = budget_bytes
        self.count = 0
        self._memory: list[torch.Tensor] = []
        self._projected: list[torch.Tensor] = []
        self._file = None
        self._path: Path | None = None

    @property
    def spilled(self) -> bool:
        """True once full embeddings are kept on disk."""
        return self._file is not None

    def add(self, patches: torch.Tensor, projected: torch.Tensor | None = None) -> None:
        """Append (n, D) embeddings; ``projected``: their (n, p) projections when already computed."""
        patches = patches.detach().float().cpu().contiguous()
        if self.projection is not None:
            self._projected.append(patches @ self.projection if projected is None else projected)
            if not self.spilled and (self.count + patches.shape[0]) * self.dim * 4 > self.budget_bytes:
                self._spill()
        if self.spilled:
            self._file.write(patches.numpy().tobytes())
        else:
            self._memory.append(patches)
        self.count += patches.shape[0]

    def _spill(self) -> None:
        # Kept open while patches stream in; closed and deleted by close().
        handle = tempfile.NamedTemporaryFile(prefix="hamacho-patches-", suffix=".f32", delete=False)  # noqa: SIM115
        self._file, self._path = handle, Path(handle.name)
        for block in self._memory:
            handle.write(block.numpy().tobytes())
        self._memory = []

    def projected(self) -> torch.Tensor:
        """(N, p) projections (or the full embeddings when there is no projection), as one tensor.

        The blocks are moved into it one by one and freed as they go, so the peak is the tensor plus one
        block rather than twice the store (torch.cat); the store keeps the joined tensor.
        """
        if self.projection is None:
            self._memory = [_joined(self._memory)]
            return self._memory[0]
        self._projected = [_joined(self._projected)]
        return self._projected[0]

    def gather(self, indices: torch.Tensor) -> torch.Tensor:
        """Full embeddings of the given rows, (len(indices), D)."""
        if not self.spilled:
            out = torch.empty(indices.shape[0], self.dim)
            start = 0
            for block in self._memory:  # no concatenation: that would double the peak memory
                inside = (indices >= start) & (indices < start + block.shape[0])
                out[inside] = block[indices[inside] - start]
                start += block.shape[0]
            return out
        self._file.flush()
        table = np.memmap(self._path, dtype=np.float32, mode="r", shape=(self.count, self.dim))
        order = torch.argsort(indices)
        rows = torch.from_numpy(np.array(table[indices[order].numpy()]))
        del table
        out = torch.empty_like(rows)
        out[order] = rows
        return out

    def close(self) -> None:
        """Free memory and delete the temporary file."""
        self._memory, self._projected = [], []
        if self._file is not None:
            self._file.close()
            self._path.unlink(missing_ok=True)
            self._file = None

    def __del__(self) -> None:
        self.close()


def _joined(blocks: list[torch.Tensor]) -> torch.Tensor:
    """The row blocks as one tensor, emptying ``blocks`` while it is filled."""
    if len(blocks) == 1:
        return blocks.pop()
    total = torch.empty(sum(block.shape[0] for block in blocks), blocks[0].shape[1], dtype=blocks[0].dtype)
    start = 0
    blocks.reverse()
    while blocks:
        block = blocks.pop()
        total[start : start + block.shape[0]] = block
        start += block.shape[0]
        del block
    return total
