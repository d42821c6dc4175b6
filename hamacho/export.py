"""`hamacho export` as a library call: a model file -> an ONNX, OpenVINO or TorchScript folder.

The exported graph is the model's own forward (:class:`~hamacho.models.base.AnomalyModel`): uint8 RGB
images ``(N, 3, H, W)`` at the model's input size in, normalized and raw anomaly maps and image scores
out, normalization with the stored thresholds and min/max included. Decoding, conversion, the crop, the
resize and padding to the frame, tiles and their stitching, and the valid-area mask stay in the Predictor,
which runs them identically for every runtime: a tiled model exports its per-tile model, and a model
with a valid-area mask carries it as ``valid_area_mask.png`` (checked like the graph files). PatchCore's
pruned bank search is replaced by a block-wise one that a static graph can hold (``graph_mode``).

Before the folder appears, the export is opened on its runtime and compared with the PyTorch model on
a seeded batch; the differences are written to ``metadata.json`` (``check``) and printed. The folder is
written under a temporary name and renamed when complete, replacing an earlier export of the same name.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hamacho import __version__
from hamacho.config import settings_to_dict
from hamacho.errors import ConfigError, HamachoError, first_line
from hamacho.files import atomic_write_text, check_writable_dir
from hamacho.model_file import load_model_file
from hamacho.models.registry import display_name
from hamacho.runtimes.export_folder import (
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    INPUT_NAME,
    METADATA_FILENAME,
    OUTPUT_NAMES,
    RUNTIMES,
    find_export,
    open_export,
    sha256_file,
)

PRECISIONS = ("fp32", "fp16", "bf16")
# Which runtimes take which reduced precision: fp16 weights (ONNX: fp16 arithmetic too), and OpenVINO's bf16
# arithmetic on CPUs that have it (AMX, AVX512-BF16: PaDiM resnet18's forward 2.6x faster on this project's CPU).
PRECISION_RUNTIMES = {"fp32": ("onnx", "openvino", "torchscript"), "fp16": ("onnx", "openvino"),
                      "bf16": ("openvino",)}
# Opset 17 (ONNX 1.12): every operator the models use, read by onnxruntime >= 1.12 and OpenVINO >= 2022.1.
ONNX_OPSET = 17
GRAPH_FILE = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.torchscript.pt"}
CHECK_IMAGES = 4  # seeded random images the export is compared on
VALID_AREA_FILENAME = "valid_area_mask.png"


def _write_valid_area(path: Path, valid_area: np.ndarray) -> None:
    """The valid-area mask as a black-and-white PNG (white = inspect)."""
    import cv2

    ok, encoded = cv2.imencode(".png", valid_area.astype(np.uint8) * 255)
    if not ok:
        raise HamachoError(f"cannot encode the valid-area mask for {path}")
    path.write_bytes(encoded.tobytes())


@dataclass
class ExportResult:
    """What an export produced."""

    folder: Path
    runtime: str
    precision: str
    files: dict[str, str]
    check: dict[str, float]


def default_output(model_path: Path, runtime: str, precision: str) -> Path:
    """``export-<runtime>[-fp16|-bf16]/`` beside the model file."""
    return model_path.parent / f"export-{runtime}{'' if precision == 'fp32' else '-' + precision}"


def export_model(
    model_path: str | Path, runtime: str, output: str | Path | None = None, precision: str = "fp32",
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Export a model file for a runtime and check the export against the PyTorch model.

    Args:
        model_path: ``model.pt`` written by ``hamacho train`` (or its results folder).
        runtime: ``onnx``, ``openvino`` or ``torchscript``.
        output: The folder to write (default ``export-<runtime>/`` beside the model file).
        precision: ``fp32``; ``fp16`` (weights in half precision; ONNX and OpenVINO); ``bf16`` (OpenVINO
            computes in bfloat16 where the CPU supports it).
        log: Where one-line messages go.

    Returns:
        The folder, its files and the measured differences to the PyTorch model.

    Raises:
        ConfigError: Unknown runtime or precision, or a runtime package that is not installed.
        ModelFileError: The model file cannot be used.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown export format '{runtime}'; choose one of: {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if runtime not in PRECISION_RUNTIMES[precision]:
        raise ConfigError(f"{precision} export is available for {' and '.join(PRECISION_RUNTIMES[precision])}; "
                          f"use --precision fp32 for {runtime}")
    _require_packages(runtime)
    loaded = load_model_file(model_path)
    folder = Path(output) if output else default_output(loaded.path, runtime, precision)
    _check_output(folder)
    model = loaded.model.eval()
    model.graph_mode = True
    images = np.random.default_rng(0).integers(0, 256, (CHECK_IMAGES, 3, *model.input_size), dtype=np.uint8)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        _write_graph(model, torch.from_numpy(images[:2]), work, runtime, precision)
        if loaded.valid_area is not None:
            _write_valid_area(work / VALID_AREA_FILENAME, loaded.valid_area)
        metadata = _metadata(loaded, runtime, precision, work)
        atomic_write_text(work / METADATA_FILENAME, json.dumps(metadata, indent=2) + "\n")
        metadata["check"] = _compare(model, open_export(work, "cpu").runtime, images)
        atomic_write_text(work / METADATA_FILENAME, json.dumps(metadata, indent=2) + "\n")
        _replace(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    check = metadata["check"]
    log(f"checked against the PyTorch model on {CHECK_IMAGES} seeded random images: largest differences "
        f"{check['score_max_abs']:.2g} (normalized scores), {check['map_max_abs']:.2g} (normalized maps), "
        f"{check['raw_score_max_abs']:.2g} (raw scores), {check['raw_map_max_abs']:.2g} (raw maps)")
    return ExportResult(folder, runtime, precision, metadata["files"], check)


def _require_packages(runtime: str) -> None:
    """Fail before any work when a package the export needs (to write or to check it) is missing."""
    needed = {"onnx": {"onnx": "hamacho[train]", "onnxruntime": "hamacho[onnx]"},
              "openvino": {"onnx": "hamacho[train]", "openvino": "hamacho[openvino]"}, "torchscript": {}}[runtime]
    for package, extra in needed.items():
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(f"exporting to {runtime} needs the package {package}: pip install '{extra}'") from None


def _check_output(folder: Path) -> None:
    """The output may be new, empty or an earlier export (replaced); anything else is refused."""
    check_writable_dir(folder, "export folder")
    if folder.exists() and any(folder.iterdir()) and find_export(folder) is None:
        raise HamachoError(f"export folder {folder} exists and is not a Hamacho export: choose another --output")


def _write_graph(model: torch.nn.Module, example: torch.Tensor, work: Path, runtime: str, precision: str) -> None:
    """Trace the model into ``work`` in the runtime's format."""
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on shapes: all are static
        if runtime == "torchscript":
            torch.jit.trace(model, example, check_trace=False).save(str(work / GRAPH_FILE["torchscript"]))
            return
        onnx_path = work / GRAPH_FILE["onnx"]
        axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
        torch.onnx.export(model, (example,), str(onnx_path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes=axes, opset_version=ONNX_OPSET, do_constant_folding=True, dynamo=False)
    if runtime == "onnx":
        _finish_onnx(onnx_path, half=precision == "fp16")
    if runtime == "openvino":
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_path)), str(work / GRAPH_FILE["openvino"]),
                      compress_to_fp16=precision == "fp16")
        for path in work.iterdir():
            if path.suffix not in (".xml", ".bin"):
                path.unlink()


def _finish_onnx(path: Path, half: bool) -> None:
    """Optionally convert to half precision; keep the weights in ``model.onnx.data`` beside the graph.

    onnxruntime maps an external weights file instead of parsing it with the graph: loading PaDiM resnet18
    peaked at 79 MiB above the interpreter instead of 383 MiB.
    """
    import onnx

    model = onnx.load(str(path))
    if half:  # weights and arithmetic in half precision; inputs and outputs keep their types
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{path.name}.data", size_threshold=1024)
    for other in path.parent.iterdir():  # weights files of the exporter's own (models over 2 GB)
        if other.name not in (path.name, f"{path.name}.data"):
            other.unlink()


def _metadata(loaded: Any, runtime: str, precision: str, work: Path) -> dict[str, Any]:
    settings = loaded.settings
    height, width = loaded.model.input_size
    files = {path.name: sha256_file(path) for path in sorted(work.iterdir()) if path.name != METADATA_FILENAME}
    versions = {"torch": torch.__version__, "hamacho": __version__}
    for package in ("onnx", "onnxruntime", "openvino"):
        try:
            versions[package] = __import__(package).__version__
        except ImportError:
            pass
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "runtime": runtime,
        "precision": precision,
        "graph": GRAPH_FILE[runtime],
        "files": files,
        "onnx_opset": ONNX_OPSET if runtime in ("onnx", "openvino") else None,
        "model": {"name": settings.model.name, "display_name": display_name(settings.model.name),
                  "backbone": settings.model.backbone, "backbone_weights": settings.model.backbone_weights},
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, height, width], "dtype": "uint8", "layout": "NCHW",
                  "colour": "RGB", "resize": "antialiased bilinear on uint8 (torch's kernel, hamacho.data.resize) from the "
                  "original size, done by the Predictor",
                  "framing": {key: settings_to_dict(settings)["dataset"][key]
                              for key in ("image_size", "keep_aspect", "crop", "circle", "tiling")},
                  "valid_area_mask": VALID_AREA_FILENAME if loaded.valid_area is not None else None},
        "outputs": {"anomaly_map": "normalized anomaly maps (N, S, S), 0..1, NG at or above 0.5",
                    "pred_score": "normalized image scores (N,), 0..1, NG at or above 0.5",
                    "raw_map": "raw anomaly maps (N, S, S)", "raw_score": "raw image scores (N,)"},
        "calibration": loaded.model.calibration.as_dict(),
        "thresholds": loaded.metadata.get("thresholds"),
        "config": settings_to_dict(settings),
        "source_model": {"path": str(loaded.path), "created": loaded.metadata.get("created")},
        "hamacho_version": __version__,
        "versions": versions,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _compare(model: torch.nn.Module, runtime: Any, images: np.ndarray) -> dict[str, float]:
    """Largest absolute differences between the runtime's and the PyTorch model's outputs on ``images``."""
    model.graph_mode = False
    with torch.inference_mode():
        reference = [t.float().numpy() for t in model(torch.from_numpy(images))]
    got = runtime.run(images)
    pairs = zip(("map", "score", "raw_map", "raw_score"), (got.maps, got.scores, got.raw_maps, got.raw_scores),
                reference)
    check = {f"{name}_max_abs": float(np.nanmax(np.abs(ours - theirs))) for name, ours, theirs in pairs}
    check["decisions_equal"] = float(np.array_equal(got.scores >= 0.5, reference[1] >= 0.5))
    return check


def _replace(work: Path, folder: Path) -> None:
    """Put the finished folder in place; an earlier export of the same name is removed only afterwards."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
    try:
        work.rename(folder)
    except OSError as exc:
        if old is not None:
            old.rename(folder)
        raise HamachoError(f"cannot write {folder}: {first_line(exc)}") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
