"""ONNX Runtime behind the Predictor: runs an exported ``model.onnx`` without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from hamacho.runtimes import RuntimeOutput
from hamacho.runtimes.export_folder import INPUT_NAME, OUTPUT_NAMES, ExportedRuntime


class OnnxRuntime(ExportedRuntime):
    """An ONNX Runtime session over an export folder's graph (``InferenceSession.run`` is thread-safe).

    Args:
        folder: The export folder.
        metadata: Its checked metadata.
        device: ``auto`` or ``cuda``/``gpu`` use the CUDA provider when onnxruntime has it, else the CPU.
    """

    name = "onnx"

    def __init__(self, folder: Path, metadata: dict[str, Any], device: str = "auto") -> None:
        super().__init__(metadata)
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda", "gpu") and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
        self.session = ort.InferenceSession(str(folder / metadata["graph"]), options, providers=providers)

    def run(self, images: np.ndarray) -> RuntimeOutput:
        outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})
        return RuntimeOutput(*(np.asarray(o, dtype=np.float32) for o in outputs))
