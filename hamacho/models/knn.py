"""Exact nearest-neighbour search by chunked matrix products (bounded memory).

Candidates are ranked with squared distances ``|m|^2 - 2 q.m`` (+ ``|q|^2``, which does not change the
ranking), the matrix-product form ``torch.cdist`` also uses for large inputs. That form loses digits to
cancellation (PatchCore features have |m|^2 near 2e5 and nearest distances^2 near 1e2, so near-ties get
mis-ranked: 18 of 9216 bottle queries had a wrong neighbour), and its rounding depends on how many
queries share a product. So the ``k + RERANK`` best candidates get their distance recomputed directly
as ``|q - m|`` and are ranked on that: the right neighbours, exact distances, independent of batch size
and chunking.
Queries are processed in chunks so that a (chunk, M) distance block never exceeds ``max_elements``.
faiss was not taken: its exact CPU index (IndexFlatL2) runs the same BLAS product, so it cannot be
faster for exact search, and it would add a native dependency.
"""

from __future__ import annotations

import torch

MAX_ELEMENTS = 1 << 24  # 64 MiB of float32 distances per block
RERANK = 8  # extra candidates re-ranked by exact distance
PAIR_BLOCK = 512  # (query, bank row) pairs gathered at once for exact distances (3 MiB at D = 1536)


def pair_distances(queries: torch.Tensor, which: torch.Tensor, bank: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``|queries[w] - bank[r]|`` for pairs of query indices ``which`` (P,) and bank row indices ``rows`` (P,).

    Gathered and reduced in blocks of :data:`PAIR_BLOCK` pairs, in place, so the temporaries stay in
    cache: for 16 bottle images (16384 queries x 8 candidates, D = 1536) this takes 0.08 s against
    1.07 s for one ``((q - bank[r]) ** 2).sum()`` over the whole set (three 800 MB temporaries).
    Every exact distance in this package comes from here, so rankings and reported scores agree.
    """
    out = torch.empty(rows.shape[0], dtype=bank.dtype, device=bank.device)
    for start in range(0, rows.shape[0], PAIR_BLOCK):
        block = torch.index_select(bank, 0, rows[start : start + PAIR_BLOCK])
        block.sub_(torch.index_select(queries, 0, which[start : start + PAIR_BLOCK]))
        out[start : start + PAIR_BLOCK] = torch.linalg.vector_norm(block, dim=1)
    return out


def _chunk_rows(num_bank: int, max_elements: int) -> int:
    return max(1, max_elements // max(num_bank, 1))


def nearest_neighbors(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    bank_sq_norms: torch.Tensor | None = None,
    max_elements: int = MAX_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances and indices of the ``k`` nearest bank rows for every query row.

    Args:
        queries: (Q, D).
        bank: (M, D).
        k: Neighbours per query (1..M).
        bank_sq_norms: Precomputed ``(bank ** 2).sum(1)``, to avoid recomputing it per call.
        max_elements: Largest distance block held at once.

    Returns:
        ``(distances, indices)``, each (Q, k), nearest first.
    """
    if bank_sq_norms is None:
        bank_sq_norms = (bank * bank).sum(dim=1)
    k = min(k, bank.shape[0])
    rows = _chunk_rows(bank.shape[0], max_elements)
    distances, indices = [], []
    for start in range(0, queries.shape[0], rows):
        chunk = queries[start : start + rows]
        ranking = torch.addmm(bank_sq_norms.unsqueeze(0), chunk, bank.T, alpha=-2.0)
        where = ranking.topk(min(k + RERANK, bank.shape[0]), dim=1, largest=False).indices
        pairs = torch.arange(chunk.shape[0], device=chunk.device).repeat_interleave(where.shape[1])
        exact = pair_distances(chunk, pairs, bank, where.reshape(-1)).view(where.shape)
        exact, order = exact.topk(k, dim=1, largest=False)
        distances.append(exact)
        indices.append(where.gather(1, order))
    return torch.cat(distances), torch.cat(indices)


def nearest_neighbors_graph(
    queries: torch.Tensor, bank: torch.Tensor, k: int, bank_sq_norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_neighbors` in one block, without loops over data-dependent sizes (for exported graphs).

    Same candidates, re-ranking and exact distances; meant for few queries (the (Q, M) ranking is held at once).
    """
    k = min(k, bank.shape[0])
    where = torch.addmm(bank_sq_norms.unsqueeze(0), queries, bank.T, alpha=-2.0).topk(
        min(k + RERANK, bank.shape[0]), dim=1, largest=False).indices
    exact = torch.linalg.vector_norm(queries.unsqueeze(1) - bank[where], dim=2)
    distances, order = exact.topk(k, dim=1, largest=False)
    return distances, where.gather(1, order)
