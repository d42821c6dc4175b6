"""The PyTorch runtime: a model (from a model file, or in memory while training) run by its own forward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hamacho.errors import ConfigError
from hamacho.models.base import AnomalyModel
from hamacho.models.registry import display_name
from hamacho.runtimes import OpenedModel, RuntimeOutput


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (or Lightning's ``gpu``) is the GPU when there is one, else the CPU; others are taken as given."""
    if isinstance(device, torch.device):
        return device
    if device in ("auto", "gpu"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if device == "auto" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device '{device}'; use auto, cpu, cuda or mps") from exc


class TorchRuntime:
    """Runs an :class:`~hamacho.models.base.AnomalyModel` on a device (in eval mode, without gradients).

    The model is only read, so several threads may run it at once.
    """

    name = "torch"

    def __init__(self, model: AnomalyModel, device: str | torch.device = "auto") -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)

    @property
    def input_size(self) -> tuple[int, int]:
        return self.model.input_size

    @property
    def calibration(self) -> dict[str, float]:
        return self.model.calibration.as_dict()  # read live: training sets it after the first pass

    def run(self, images: np.ndarray) -> RuntimeOutput:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(images)).to(self.device))
        arrays = [t.float().cpu().numpy() for t in out]
        return RuntimeOutput(*arrays)


def open_model_file(path: str | Path, device: str = "auto") -> OpenedModel:
    """A model file (or its results folder) on the PyTorch runtime."""
    from hamacho.model_file import load_model_file

    loaded = load_model_file(path)
    return OpenedModel(TorchRuntime(loaded.model, device), loaded.settings, loaded.metadata, loaded.path,
                       display_name(loaded.settings.model.name), loaded.valid_area)
