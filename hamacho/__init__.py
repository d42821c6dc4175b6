"""Hamacho: visual anomaly detection for industrial inspection (PaDiM, PatchCore).

The library API is :class:`hamacho.Predictor` (load a model file, score images; see docs/api.md).
It is imported on first use, so that ``import hamacho`` (and the CLI's start-up) stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "Prediction"):
        from hamacho import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'hamacho' has no attribute {name!r}")
