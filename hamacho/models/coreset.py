"""Greedy k-center coreset selection (Sener & Savarese, 2018), as used by PatchCore.

Each step adds the point farthest from the points chosen so far. The plain algorithm updates every
point's distance to its nearest centre at every step, reading the whole set each time: about 4 ms per
step for the 214k projected patches (128 dimensions) of MVTec bottle, 85 s for a 10 % coreset on this
project's 2-core CPU, and anomalib's version of it picks about 9 points per second there.

This implementation makes the same choices while touching only the points a new centre can win:

* Points are kept in *cells*, one per centre (the points it is nearest to), with the largest squared
  distance in each cell (``radius_sq``). The farthest point overall is the farthest point of the cell
  with the largest radius, so finding the next centre reads one cell, not the whole set.
* A point ``x`` of the cell of centre ``a`` can only move to a new centre ``c`` if
  ``d(a, c) < 2 d(x, a)`` (triangle inequality), so cells with ``d(a, c)^2 >= 4 radius_sq(a)`` are skipped
  whole. Only the points of the remaining cells get their distance to ``c`` computed.
* ``d(a, c)`` itself is first bounded from below in a few leading principal axes of the points (an
  orthonormal projection never lengthens a vector), so exact centre-to-centre distances are only computed
  for the few centres that pass.

On bottle (214,016 wide_resnet50_2 patches projected to 128 dimensions) a 10 % coreset took 62 s with
point-level pruning alone and takes 23 s this way (29 s at 256 dimensions), with the same selection up
to near-ties within float rounding. What is left is mostly per-step overhead of small torch operations.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

BOUND_DIMS = 16  # principal axes used for the cheap lower bound on centre-to-centre distances
_SLACK = 1e-4  # relative allowance for rounding in the expanded squared-distance form


def random_projection(dim_in: int, dim_out: int, seed: int) -> torch.Tensor:
    """A (dim_in, dim_out) Gaussian random projection scaled to keep distances on average."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=generator) / dim_out**0.5


def _leading_axes(points: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and the ``dims`` principal axes (d, dims) of the points, for lower bounds."""
    mean = points.double().mean(dim=0)
    scatter = torch.zeros(points.shape[1], points.shape[1], dtype=torch.float64)
    for block in torch.split(points, 65536):  # float64 products without a float64 copy of every point
        centred = block.double() - mean
        scatter += centred.T @ centred
    _, vectors = torch.linalg.eigh(scatter)  # ascending eigenvalues
    return mean.float(), vectors[:, -dims:].flip(1).float().contiguous()


def _squared_distances(points: torch.Tensor, centre: torch.Tensor, block: int = 1 << 15) -> torch.Tensor:
    """``|x - c|^2`` for every row, from the differences: exact to float rounding of the result itself.

    The expanded form ``|x|^2 - 2 x.c + |c|^2`` is cheaper but loses digits when the distance is small
    next to the norms, and then picks the wrong point among near-ties; it is used only for bounds here.
    """
    out = torch.empty(points.shape[0], dtype=points.dtype)
    for start in range(0, points.shape[0], block):
        diff = points[start : start + block] - centre
        out[start : start + block] = (diff * diff).sum(dim=1)
    return out


class _Cells:
    """Points grouped by their nearest centre, with each group's largest squared distance."""

    def __init__(self, count: int, n: int, min_sq: torch.Tensor) -> None:
        self.members: list[torch.Tensor] = [torch.arange(n)]
        self.radius_sq = torch.zeros(count, dtype=min_sq.dtype)
        self.radius_sq[0] = min_sq.max()

    def farthest(self, min_sq: torch.Tensor, step: int) -> int:
        """Index of the point with the largest distance to its nearest centre."""
        cell = int(self.radius_sq[:step].max(dim=0).indices)
        members = self.members[cell]
        return int(members[min_sq[members].max(dim=0).indices])

    def split(self, active: torch.Tensor, won: torch.Tensor, members: torch.Tensor, segment: torch.Tensor,
              min_sq: torch.Tensor) -> None:
        """Remove the won points from the ``active`` cells and refresh those cells' radii.

        Args:
            active: Cells that were searched.
            won: Which of ``members`` moved to the new centre.
            members: The searched cells' points, cell after cell.
            segment: Position in ``active`` of each member's cell.
            min_sq: Squared distance of every point to its nearest centre (already updated).
        """
        sizes = active.numel()
        kept = ~won
        rest, rest_segment = members[kept], segment[kept]
        counts = torch.bincount(rest_segment, minlength=sizes).tolist()
        for cell, part in zip(active.tolist(), torch.split(rest, counts)):
            self.members[cell] = part
        radius = torch.zeros(sizes, dtype=min_sq.dtype)
        radius.scatter_reduce_(0, rest_segment, min_sq[rest], reduce="amax", include_self=True)
        self.radius_sq[active] = radius


def greedy_coreset(points: torch.Tensor, count: int, seed: int, progress: bool = False) -> torch.Tensor:
    """Indices of ``count`` points chosen by greedy k-center selection.

    Args:
        points: (N, d) float points (projected features).
        count: Number of points to choose, 1..N.
        seed: Seed of the first centre (itself part of the coreset).
        progress: Show a progress bar.

    Returns:
        (count,) long tensor of distinct indices, in selection order. Once every point is covered
        (duplicates only remain), the next unchosen indices are taken in order.
    """
    n = points.shape[0]
    if not 1 <= count <= n:
        raise ValueError(f"coreset size {count} must be between 1 and the number of points {n}")
    points = points.float().contiguous()
    sq_norms = (points * points).sum(dim=1)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    mean, axes = _leading_axes(points, min(BOUND_DIMS, points.shape[1]))

    chosen = torch.empty(count, dtype=torch.long)
    is_chosen = torch.zeros(n, dtype=torch.bool)
    centres = torch.empty(count, points.shape[1])
    centre_sq = torch.empty(count)
    centre_low = torch.empty(count, axes.shape[1])
    centre_low_sq = torch.empty(count)
    points_low = (points - mean) @ axes  # (N, r): cheap lower bounds on point-to-centre distances

    def add_centre(step: int, index: int) -> None:
        chosen[step], centres[step], centre_sq[step] = index, points[index], sq_norms[index]
        centre_low[step] = points_low[index]
        centre_low_sq[step] = points_low[index] @ points_low[index]
        is_chosen[index] = True

    add_centre(0, first)
    min_sq = _squared_distances(points, points[first])
    min_sq[first] = 0
    cells = _Cells(count, n, min_sq)
    for step in tqdm(range(1, count), desc="Coreset", disable=not progress, leave=False, mininterval=0.5):
        new = cells.farthest(min_sq, step)
        if is_chosen[new]:  # every point is at distance 0 from a centre: only duplicates are left
            chosen[step:] = torch.nonzero(~is_chosen).squeeze(1)[: count - step]
            break
        add_centre(step, new)
        centre = centres[step]
        # Cells the new centre may take points from: d(a, c)^2 < 4 radius_sq(a), bounded first in few axes.
        limit = 4 * cells.radius_sq[:step] * (1 + _SLACK)
        low = centre_low_sq[:step] - 2 * (centre_low[:step] @ centre_low[step]) + centre_low_sq[step]
        low -= _SLACK * (centre_low_sq[:step] + centre_low_sq[step])
        maybe = torch.nonzero(low < limit).squeeze(1)
        between = (centre_sq[maybe] - 2 * (centres[maybe] @ centre) + centre_sq[step]).clamp_(min=0)
        between -= _SLACK * (centre_sq[maybe] + centre_sq[step])  # rounding allowance: a lower bound now
        inside = between < limit[maybe]
        active, between = maybe[inside], between[inside]
        parts = [cells.members[a] for a in active.tolist()]
        sizes = [part.numel() for part in parts]
        members = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes, dtype=torch.long))
        # Point level: x can only move if d(a, c)^2 < 4 d(x, a)^2 for its own centre a.
        reach = torch.nonzero(between[segment] < 4 * (1 + _SLACK) * min_sq[members]).squeeze(1)
        # Then the few leading axes bound d(x, c) itself; only the rest get their exact distance.
        near = members[reach]
        low_x = points_low[near] - centre_low[step]
        low_x = (low_x * low_x).sum(dim=1) - _SLACK * (sq_norms[near] + centre_sq[step])
        reach = reach[low_x < min_sq[near]]
        candidates = members[reach]
        dist = _squared_distances(points[candidates], centre)
        closer = dist < min_sq[candidates]
        closer |= candidates == new
        dist[candidates == new] = 0
        won_points = candidates[closer]
        min_sq[won_points] = dist[closer]
        won = torch.zeros(members.numel(), dtype=torch.bool)
        won[reach[closer]] = True
        cells.members.append(won_points)
        cells.radius_sq[step] = dist[closer].max() if won_points.numel() else 0.0
        cells.split(active, won, members, segment, min_sq)
    return chosen
