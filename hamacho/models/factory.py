"""Build the AnomalyModule a configuration describes."""

from __future__ import annotations

from typing import Any

from hamacho.models.backbone import build_feature_extractor
from hamacho.models.base import AnomalyModule


def build_module(config: dict[str, Any], backbone_weights: str | None = None) -> AnomalyModule:
    """Create the model named in ``config["model"]["name"]`` wrapped in an AnomalyModule.

    Args:
        config: Effective configuration as a plain dict.
        backbone_weights: Overrides ``model.backbone_weights``; ``"none"`` when the weights come from a
            model file anyway.

    Returns:
        The untrained (or, once a state-dict is loaded, trained) module.
    """
    model_cfg = config["model"]
    image_size = int(config["dataset"]["image_size"])
    seed = int(config["project"]["seed"])
    weights = backbone_weights or str(model_cfg["backbone_weights"])
    extractor = build_feature_extractor(model_cfg["backbone"], model_cfg["layers"], weights, seed)
    if model_cfg["name"] == "padim":
        from hamacho.models.padim import build_padim

        model = build_padim(model_cfg, image_size, seed, extractor)
    elif model_cfg["name"] == "patchcore":
        from hamacho.models.patchcore import build_patchcore

        model = build_patchcore(model_cfg, image_size, seed, extractor)
    else:
        raise ValueError(f"unknown model {model_cfg['name']!r}")
    return AnomalyModule(model, config)
