"""Which optional parts of Hamacho are installed, asked without importing them."""

from __future__ import annotations

from importlib.util import find_spec

# What training, model.pt files and exports import: the "train" extra (torchmetrics is in that extra for
# the reference checks in tests; no module of Hamacho imports it).
TRAINING_PACKAGES = ("torch", "torchvision", "lightning")


def missing_training_packages() -> list[str]:
    """The packages of :data:`TRAINING_PACKAGES` that cannot be imported here (empty when training works)."""
    missing = []
    for name in TRAINING_PACKAGES:
        try:
            if find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):  # a blocked or half-installed package
            missing.append(name)
    return missing


def training_unavailable() -> str | None:
    """Why this install cannot train (one line), or None when it can.

    An inference-only install (``pip install "hamacho[serve,onnx]"``, no PyTorch) imports exported models
    and predicts with them; only training (and model.pt files) need PyTorch.
    """
    missing = missing_training_packages()
    if not missing:
        return None
    what = "PyTorch, which is" if "torch" in missing else f"{' and '.join(missing)}, which " + (
        "are" if len(missing) > 1 else "is")
    return (f"training needs {what} not installed here: pip install 'hamacho[train]'; exported models "
            "(ONNX, OpenVINO) can be imported and used for predictions")
