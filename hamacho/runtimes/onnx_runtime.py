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
        # Memory: measured on MVTec bottle at 256 px, batch 8, resnet18, this project's CPU. Priority-based
        # order runs PatchCore's bank blocks one after the other (peak 1016 -> 388 MiB, and 12 % faster);
        # without memory patterns and with the arena shrunk after each run PaDiM peaks at 317 MiB instead
        # of 375 MiB, at the same speed.
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.enable_mem_pattern = False
        # ONNX Runtime's own thread pool spins while it waits, like OpenMP's by default: on a line PC whose other
        # work keeps a core busy that halves the throughput (benchmarks/busy_core.py, docs/benchmark.md#busy-machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.session = ort.InferenceSession(str(folder / metadata["graph"]), options, providers=providers)

    def run(self, images: np.ndarray) -> RuntimeOutput:
        feed = {INPUT_NAME: np.ascontiguousarray(images, dtype=np.uint8)}
        outputs = self.session.run(list(OUTPUT_NAMES), feed, self._run_options)
        return RuntimeOutput(*(np.asarray(o, dtype=np.float32) for o in outputs))
