"""Runtimes behind the Predictor: PyTorch for model files, ONNX Runtime, OpenVINO or TorchScript for exports.

A runtime takes uint8 RGB images at the model's input size, ``(B, 3, H, W)`` numpy, and returns the
model's four outputs as numpy float32 (:class:`RuntimeOutput`); everything around it (decoding,
resizing, batching, thresholds, pictures, metrics) is the Predictor's and shared by all runtimes.
Only the PyTorch and TorchScript runtimes import torch, and only when they are opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hamacho.errors import ModelFileError
from hamacho.extras import TRAINING_PACKAGES
from hamacho.settings import Settings

# Packages of the PyTorch runtime that an inference-only install (exports only) lacks.


@dataclass
class RuntimeOutput:
    """The model's outputs for B images: normalized and raw maps (B, H, W) and image scores (B,), float32."""

    maps: np.ndarray
    scores: np.ndarray
    raw_maps: np.ndarray
    raw_scores: np.ndarray


class Runtime(Protocol):
    """What the Predictor needs from a runtime."""

    name: str  # torch | onnx | openvino | torchscript

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""

    @property
    def calibration(self) -> dict[str, float]:
        """Raw thresholds and score ranges the model normalizes with."""

    def run(self, images: np.ndarray) -> RuntimeOutput:
        """Score uint8 images (B, 3, H, W); safe to call from several threads at once."""


@dataclass
class OpenedModel:
    """A runtime with what the Predictor reports about it (and the valid-area mask stored with the model)."""

    runtime: Runtime
    settings: Settings
    metadata: dict[str, Any]
    path: Path
    display_name: str
    valid_area: np.ndarray | None = None


def open_model(path: str | Path, device: str = "auto") -> OpenedModel:
    """Open a model file (``model.pt``, or the results folder holding it) or an export folder.

    An export folder (or its ``metadata.json``) opens on the runtime it was exported for, without torch.

    Raises:
        ModelFileError: Missing, foreign, damaged, tampered or newer files, or a runtime that is not installed
            (PyTorch too, for a model file).
    """
    from hamacho.runtimes.export_folder import find_export

    export = find_export(path)
    if export is not None:
        from hamacho.runtimes.export_folder import open_export

        return open_export(export, device)
    try:
        from hamacho.runtimes.torch_runtime import open_model_file
    except ModuleNotFoundError as exc:  # an inference-only install: exports only
        if (exc.name or "").partition(".")[0] not in TRAINING_PACKAGES:
            raise
        raise ModelFileError(f"{path}: a model file (model.pt) needs PyTorch, which is not installed here: pip "
                             "install 'hamacho[train]'; or export it (hamacho export) and use the export "
                             "folder") from exc
    return open_model_file(path, device)
