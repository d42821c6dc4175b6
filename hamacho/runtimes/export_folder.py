"""Export folders: their ``metadata.json``, its checks, and opening one on its runtime (no torch needed).

An export folder holds the graph files of one runtime and ``metadata.json`` (see docs/export.md): the
format and its version, the runtime, the input (uint8 RGB ``(N, 3, S, S)``) and outputs, the calibration,
the training configuration and a SHA-256 of every graph file. Opening one checks all of them first, so a
damaged or edited graph, or an export written by a newer Hamacho, is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hamacho.config import settings_from_dict
from hamacho.errors import ConfigError, ModelFileError, first_line
from hamacho.runtimes import OpenedModel

EXPORT_FORMAT = "hamacho-export"
EXPORT_FORMAT_VERSION = 1
METADATA_FILENAME = "metadata.json"
RUNTIMES = ("onnx", "openvino", "torchscript")
INPUT_NAME = "images"
OUTPUT_NAMES = ("anomaly_map", "pred_score", "raw_map", "raw_score")
INSTALL_HINT = {"onnx": "pip install 'hamacho[onnx]' (onnxruntime)",
                "openvino": "pip install 'hamacho[openvino]' (openvino)",
                "torchscript": "pip install torch"}


def find_export(path: str | Path) -> Path | None:
    """The export folder ``path`` names (the folder, or its metadata.json), or None for anything else."""
    path = Path(path)
    if path.is_dir() and (path / METADATA_FILENAME).is_file():
        return path
    if path.name == METADATA_FILENAME and path.is_file():
        return path.parent
    return None


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(folder: Path) -> dict[str, Any]:
    """The folder's metadata, checked: format, version, runtime, and the SHA-256 of every graph file.

    Raises:
        ModelFileError: Naming the first problem.
    """
    path = folder / METADATA_FILENAME
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path} cannot be read as JSON ({first_line(exc, 200)})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != EXPORT_FORMAT:
        raise ModelFileError(f"{path} is not the metadata of a Hamacho export")
    version = metadata.get("format_version")
    if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
        raise ModelFileError(f"{path} is export format {version}, written by a newer Hamacho; this version reads "
                             f"format {EXPORT_FORMAT_VERSION} at most: upgrade hamacho")
    if metadata.get("runtime") not in RUNTIMES:
        raise ModelFileError(f"{path} names an unknown runtime {metadata.get('runtime')!r}")
    files = metadata.get("files")
    if not isinstance(files, dict) or not files:
        raise ModelFileError(f"{path} lists no graph files")
    for name, expected in files.items():
        graph = folder / name
        if Path(name).name != name or not graph.is_file():
            raise ModelFileError(f"export {folder} is incomplete: {name} is missing")
        if sha256_file(graph) != expected:
            raise ModelFileError(f"export {folder} is damaged or was modified: {name} does not match the "
                                 f"SHA-256 in {METADATA_FILENAME}")
    return metadata


def open_export(folder: Path, device: str = "auto") -> OpenedModel:
    """An export folder on its runtime (ONNX Runtime, OpenVINO or TorchScript).

    Raises:
        ModelFileError: See :func:`read_metadata`; also when the runtime is not installed.
    """
    metadata = read_metadata(folder)
    try:
        settings = settings_from_dict(metadata["config"], source=str(folder / METADATA_FILENAME), generic_model=True)
    except (ConfigError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{folder / METADATA_FILENAME} holds no usable configuration ({exc})") from exc
    runtime_name = metadata["runtime"]
    try:
        if runtime_name == "onnx":
            from hamacho.runtimes.onnx_runtime import OnnxRuntime as runtime_class
        elif runtime_name == "openvino":
            from hamacho.runtimes.openvino_runtime import OpenVinoRuntime as runtime_class
        else:
            from hamacho.runtimes.torchscript_runtime import TorchScriptRuntime as runtime_class
    except ImportError as exc:
        raise ModelFileError(f"export {folder} runs on {runtime_name}, which is not installed here: "
                             f"{INSTALL_HINT[runtime_name]}") from exc
    runtime = runtime_class(folder, metadata, device)
    return OpenedModel(runtime, settings, metadata, folder, metadata.get("model", {}).get("display_name", ""),
                       _valid_area(folder, metadata))


def _valid_area(folder: Path, metadata: dict[str, Any]) -> Any:
    """The export's valid-area mask (``valid_area_mask.png``, checked with the other files), or None."""
    name = metadata.get("input", {}).get("valid_area_mask")
    if not name:
        return None
    from hamacho.data.decoding import ImageReadError, read_image

    try:
        return read_image(folder / name).max(axis=2) >= 128
    except ImageReadError as exc:
        raise ModelFileError(f"export {folder}: its valid-area mask cannot be read ({exc})") from exc


class ExportedRuntime:
    """What every export runtime shares: its metadata, input size and calibration (subclasses add ``run``).

    Args:
        metadata: The export's checked metadata.
    """

    name = ""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input the graph expects."""
        shape = self.metadata["input"]["shape"]
        return int(shape[-2]), int(shape[-1])

    @property
    def calibration(self) -> dict[str, float]:
        """The raw thresholds and min/max baked into the graph."""
        return dict(self.metadata["calibration"])
