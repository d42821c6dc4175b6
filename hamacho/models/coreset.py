"""Greedy k-center coreset selection (Sener & Savarese, 2018), as used by PatchCore.

Each step adds the point farthest from the points chosen so far. The plain algorithm updates the
distance of every point to its nearest centre at every step, reading the whole set each time (about
4 ms per step for 214k points of 128 dimensions here, 85 s for a 10 % coreset of MVTec bottle).

This implementation gives the same selection but skips points the new centre cannot be nearer to:
with ``a`` the current nearest centre of ``x`` and ``c`` the new centre, the triangle inequality gives
``d(x, c) >= d(a, c) - d(x, a)``, so when ``d(a, c) >= 2 d(x, a)`` the distance of ``x`` cannot
shrink. As the coreset grows the nearest-centre distances shrink and almost every point is skipped.
"""

from __future__ import annotations

import torch
from tqdm import tqdm


def random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A (dim_in, dim_out) Gaussian random projection scaled to keep distances on average."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=generator) / dim_out**0.5


def greedy_coreset(points: torch.Tensor, count: int, seed: int, progress: bool = False) -> torch.Tensor:
    """Indices of ``count`` points chosen by greedy k-center selection.

    Args:
        points: (N, d) float points (projected features).
        count: Number of points to choose, 1..N.
        seed: Seed of the first centre (itself part of the coreset).
        progress: Show a progress bar.

    Returns:
        (count,) long tensor of distinct indices, in selection order.
    """
    n = points.shape[0]
    if not 1 <= count <= n:
        raise ValueError(f"coreset size {count} must be between 1 and the number of points {n}")
    points = points.float().contiguous()
    sq_norms = (points * points).sum(dim=1)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = torch.empty(count, dtype=torch.long)
    centres = torch.empty(count, points.shape[1], dtype=points.dtype)
    centre_sq = torch.empty(count, dtype=points.dtype)
    chosen[0], centres[0], centre_sq[0] = first, points[first], sq_norms[first]
    min_sq = (sq_norms - 2 * (points @ points[first]) + sq_norms[first]).clamp_(min=0)
    min_sq[first] = 0
    nearest = torch.zeros(n, dtype=torch.int32)  # index (into chosen) of each point's nearest centre
    for step in tqdm(range(1, count), desc="Coreset", disable=not progress, leave=False, mininterval=0.5):
        new = int(min_sq.max(dim=0).indices)  # 3x faster than torch.argmax on CPU (0.09 vs 0.29 ms)
        centre = points[new]
        chosen[step], centres[step], centre_sq[step] = new, centre, sq_norms[new]
        # Squared distances from the new centre to the earlier ones, then the points it may win.
        between = (centre_sq[:step] - 2 * (centres[:step] @ centre) + sq_norms[new]).clamp_(min=0)
        candidates = torch.nonzero(torch.index_select(between, 0, nearest) < 4 * min_sq).squeeze(1)
        if candidates.numel():
            dist = (sq_norms[candidates] - 2 * (points[candidates] @ centre) + sq_norms[new]).clamp_(min=0)
            closer = dist < min_sq[candidates]
            won = candidates[closer]
            min_sq[won] = dist[closer]
            nearest[won] = step
        min_sq[new] = 0
    return chosen
