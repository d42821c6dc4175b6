"""Build the model a configuration describes."""

from __future__ import annotations

from hamacho.data.framing import Framing
from hamacho.data.geometry import tile_origins
from hamacho.models.backbone import build_feature_extractor
from hamacho.models.base import AnomalyModel
from hamacho.models.registry import get_spec
from hamacho.settings import Settings, model_input_size


def build_model(settings: Settings, backbone_weights: str | None = None) -> AnomalyModel:
    """Create the untrained model named in ``settings.model.name``.

    Args:
        settings: Validated settings.
        backbone_weights: Overrides ``model.backbone_weights``; ``"none"`` when the weights come from a
            model file anyway.

    Returns:
        The untrained (or, once a state-dict is loaded, trained) model. A tiled model's parameters are
        first resolved for its tiles per image (:meth:`~hamacho.settings.ModelParams.for_tiles`).
    """
    params = settings.model
    tiling = settings.dataset.tiling
    if tiling.tile_size is not None and tiling.resize is not None:
        framing = Framing.from_settings(settings.dataset)
        params = params.for_tiles(len(tile_origins(framing.frame, framing.input_size, framing.stride)))
    spec = get_spec(params.name)
    weights = backbone_weights or str(params.backbone_weights)
    extractor = build_feature_extractor(params.backbone, params.layers, weights, settings.project.seed)
    height, width = model_input_size(settings.dataset)
    size = height if height == width else (height, width)  # a side for squares, as models always took it
    return spec.builder()(params, extractor, size, settings.project.seed)
