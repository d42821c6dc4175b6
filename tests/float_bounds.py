"""How far a float32 score of the same pixels may move when only the batch around the image changes.

Where batch composition enters (found by comparing each stage of PaDiM on a batch of one and of three:
docs/api.md#reproducibility):

* oneDNN convolutions choose their blocking and loop order by batch size, so each output is the same sum
  of ``C_in / groups * kh * kw`` products added in another order (the first layer already differs);
* MKL's batched matrix products (PaDiM's Mahalanobis distance: one column is a gemv, several a gemm
  micro-kernel; PatchCore's nearest-neighbour distances) sum ``C`` (embedding size) products in another
  order;
* not decoding, resizing (per image), the blur (one matrix product per map) or normalization (elementwise).

So a score computed in another batch is the same function evaluated with other rounding. The bound:
a sum of K float32 products, in any order, is within ``lambda * sqrt(K) * u * sum|x_i y_i|`` of the
exact sum with probability at least ``1 - 2 exp(-lambda^2 / 2)`` (Higham and Mary, "A new approach to
probabilistic rounding error analysis", SIAM J. Sci. Comput. 2019; the worst case ``K * u`` needs
adversarial data). Two orders differ by at most twice that. To first order, relative perturbations of
well-conditioned sums add up along the network (ReLU, pooling, bilinear upsampling and the blur are
convex or 1-Lipschitz and do not amplify), so the raw score moves by at most

    rtol = 2 * lambda * u * sum over every reduction on the path of sqrt(K)

relative. With ``lambda = 5`` (a larger error in one sum: probability below 1e-5) and ``u = 2**-24`` this
is 2.7e-4 for ResNet-18 (layers 1-3, PaDiM's 100 channels), 2.1e-4 for MobileNetV2 and 8.2e-4 for
Wide ResNet-50 (PatchCore); observed differences
are about 1e-6 (the bound is loose: errors of independent sums mostly cancel). Normalized scores and
maps are affine in the raw ones: their absolute tolerance is ``rtol * |raw| / (max - min)``.

Where the batches are the same, scores are bit-identical, and the tests compare them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNIT_ROUNDOFF = 2.0**-24  # float32
LAMBDA = 5.0


def reduction_lengths(model) -> list[int]:
    """K of every sum of products between the pixels and the raw score of a model (convolutions, head)."""
    from torch import nn

    lengths = [conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
               for conv in model.feature_extractor.modules() if isinstance(conv, nn.Conv2d)]
    if hasattr(model, "gaussians"):  # PaDiM: delta^T (Sigma^-1 delta)
        lengths += [model.gaussians.mean.shape[1]] * 2
    else:  # PatchCore: x.y in the squared distances, then the neighbours' norms
        lengths += [model.memory_bank.shape[1]] * 2
    return lengths


@dataclass(frozen=True)
class ReorderTolerance:
    """Tolerances for two float32 evaluations of the same image in different batches.

    Attributes:
        raw_rtol: Relative tolerance of raw image scores and maps.
        score_atol: Absolute tolerance of normalized image scores.
        map_atol: Absolute tolerance of normalized maps.
    """

    raw_rtol: float
    score_atol: float
    map_atol: float


def reorder_tolerance(model, raw_score: float, raw_map_max: float) -> ReorderTolerance:
    """The bound of the module docstring for a model (an AnomalyModel) and the raw values compared."""
    rtol = 2 * LAMBDA * UNIT_ROUNDOFF * sum(math.sqrt(k) for k in reduction_lengths(model))
    cal = model.calibration.as_dict()
    return ReorderTolerance(
        raw_rtol=rtol,
        score_atol=rtol * abs(raw_score) / (cal["image_max"] - cal["image_min"]),
        map_atol=rtol * abs(raw_map_max) / (cal["pixel_max"] - cal["pixel_min"]),
    )


def model_of(predictor):
    """The AnomalyModel behind a Predictor on the PyTorch runtime."""
    return predictor.runtime.model


def file_tolerance(model_path, raw_score: float, raw_map_max: float | None = None) -> ReorderTolerance:
    """:func:`reorder_tolerance` for the model in a model file (the maps' maximum: the image score)."""
    from hamacho.model_file import load_model_file

    model = load_model_file(model_path).model
    return reorder_tolerance(model, raw_score, raw_score if raw_map_max is None else raw_map_max)
