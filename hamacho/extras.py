"""Which optional parts of Hamacho are installed, asked without importing them."""

from __future__ import annotations

from importlib.util import find_spec

# What training (and model.pt files) needs: the "train" extra.
TRAINING_PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics")
TRAINING_MISSING = ("training needs PyTorch, which is not installed here ({missing}): pip install 'hamacho[train]'; "
                    "exported models (ONNX, OpenVINO) are scored without it")


def missing_training_packages() -> list[str]:
    """The packages of the "train" extra that cannot be imported here (empty when training works)."""
    missing = []
    for name in TRAINING_PACKAGES:
        try:
            if find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):  # a blocked or half-installed package
            missing.append(name)
    return missing


def training_unavailable() -> str | None:
    """Why training cannot run here (one line), or None when it can."""
    missing = missing_training_packages()
    return TRAINING_MISSING.format(missing=", ".join(missing)) if missing else None
