"""Hamacho: visual anomaly detection for industrial inspection (PaDiM, PatchCore).

The library API is :class:`hamacho.Predictor` (load a model file, score images; see docs/api.md).
It is imported on first use, so that ``import hamacho`` (and the CLI's start-up) stays light.
Importing hamacho before torch asks OpenMP to wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless the
environment already sets it), so that a busy machine's other work does not stall the library's threads.
"""

import sys
from typing import Any

from hamacho.resources import wait_passively

if "torch" not in sys.modules:  # once torch is loaded, OpenMP has read its settings (docs/api.md#threads)
    wait_passively()

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Predictor", "Prediction"):
        from hamacho import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'hamacho' has no attribute {name!r}")
