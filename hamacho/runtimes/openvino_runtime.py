"""OpenVINO behind the Predictor: runs an exported ``model.xml``/``model.bin`` without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from hamacho.runtimes import RuntimeOutput
from hamacho.runtimes.export_folder import INPUT_NAME, OUTPUT_NAMES, ExportedRuntime


class OpenVinoRuntime(ExportedRuntime):
    """A model compiled by OpenVINO; each call gets its own infer request, so threads may share it.

    The inference precision is the export's (f32; f16 for ``--precision fp16``; bf16 for ``--precision
    bf16``): left to itself OpenVINO picks bfloat16 on CPUs that have it (AMX, AVX512-BF16), which is 2.6x
    faster on this project's CPU but moved PaDiM's raw scores by up to 2 %, so only a bf16 export asks
    for it.

    Args:
        folder: The export folder.
        metadata: Its checked metadata.
        device: ``gpu`` compiles for OpenVINO's GPU plugin; anything else for the CPU (``auto`` included,
            so that results equal the CPU figures in docs/export.md).
    """

    name = "openvino"

    def __init__(self, folder: Path, metadata: dict[str, Any], device: str = "auto") -> None:
        super().__init__(metadata)
        core = ov.Core()
        model = core.read_model(str(folder / metadata["graph"]))
        hint = {"INFERENCE_PRECISION_HINT": {"fp16": "f16", "bf16": "bf16"}.get(metadata.get("precision"), "f32")}
        self.compiled = core.compile_model(model, "GPU" if device == "gpu" else "CPU", hint)
        self._outputs = [self.compiled.output(name) for name in OUTPUT_NAMES]

    def run(self, images: np.ndarray) -> RuntimeOutput:
        request = self.compiled.create_infer_request()
        result = request.infer({INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)})
        return RuntimeOutput(*(np.array(result[output], dtype=np.float32) for output in self._outputs))
