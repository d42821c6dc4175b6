"""TorchScript behind the Predictor: an exported ``model.torchscript.pt`` (needs torch, not Hamacho's models)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hamacho.runtimes import RuntimeOutput
from hamacho.runtimes.export_folder import ExportedRuntime
from hamacho.runtimes.torch_runtime import resolve_device


class TorchScriptRuntime(ExportedRuntime):
    """A traced module loaded with ``torch.jit.load`` (read only: threads may share it).

    Args:
        folder: The export folder.
        metadata: Its checked metadata.
        device: ``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ...
    """

    name = "torchscript"

    def __init__(self, folder: Path, metadata: dict[str, Any], device: str = "auto") -> None:
        super().__init__(metadata)
        self.device = resolve_device(device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still loads
            self.module = torch.jit.load(str(folder / metadata["graph"]), map_location=self.device).eval()

    def run(self, images: np.ndarray) -> RuntimeOutput:
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))
        return RuntimeOutput(*(o.float().cpu().numpy() for o in outputs))
