"""The model file: weights, feature indices, memory bank, calibration and configuration in one file.

It is a torch zip holding only tensors, strings and numbers, loaded with ``weights_only=True`` so that
no pickled code can run. A SHA-256 over the metadata and every tensor detects damaged or edited
files, and a format version lets a newer file be refused by name instead of misread.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hamacho import __version__
from hamacho.errors import HamachoError, ModelFileError
from hamacho.models.base import AnomalyModule
from hamacho.report.files import atomic_path

FORMAT_NAME = "hamacho-model"
FORMAT_VERSION = 1
MODEL_FILENAME = "model.pt"


@dataclass
class LoadedModel:
    """A module restored from a model file, with the file's metadata."""

    module: AnomalyModule
    metadata: dict[str, Any]
    path: Path


def _digest(state: dict[str, torch.Tensor], metadata_json: str) -> str:
    sha = hashlib.sha256(metadata_json.encode("utf-8"))
    for key in sorted(state):
        tensor = state[key].contiguous()
        sha.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy())  # hashed in place, no copy
    return sha.hexdigest()


def save_model_file(path: str | Path, module: AnomalyModule, extra: dict[str, Any] | None = None) -> Path:
    """Write the module's state and metadata atomically (temporary file, fsync, rename).

    Args:
        path: Target file.
        module: A fitted and calibrated module.
        extra: More metadata (dataset counts, timings...), JSON-serialisable.

    Returns:
        The path written.
    """
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    metadata = {
        "config": module.config,
        "calibration": module.calibration.as_dict(),
        "hamacho_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    metadata_json = json.dumps(metadata, sort_keys=True)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": metadata_json,
        "state_dict": state,
        "sha256": _digest(state, metadata_json),
    }
    path = Path(path)
    with atomic_path(path, durable=True) as tmp:
        torch.save(payload, tmp)
    return path


def resolve_model_path(path: str | Path) -> Path:
    """The model file itself, or ``model.pt`` inside a results folder given instead."""
    path = Path(path)
    if path.is_dir() and (path / MODEL_FILENAME).is_file():
        return path / MODEL_FILENAME
    return path


def read_payload(path: str | Path) -> dict[str, Any]:
    """Read and verify a model file without building the model.

    Raises:
        ModelFileError: Missing, foreign, corrupt, edited or newer-format file.
    """
    path = resolve_model_path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"model path is a folder without {MODEL_FILENAME}: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"{path} is not a Hamacho model file, or it is damaged ({_load_failure(path, exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a Hamacho model file (a torch file of another kind)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses model format {version}, written by a newer Hamacho; this version ({__version__}) "
            f"reads format {FORMAT_VERSION} at most: upgrade hamacho"
        )
    state, metadata_json = payload.get("state_dict"), payload.get("metadata")
    if not isinstance(state, dict) or not isinstance(metadata_json, str):
        raise ModelFileError(f"{path} is damaged: its weights or metadata are missing")
    if _digest(state, metadata_json) != payload.get("sha256"):
        raise ModelFileError(f"{path} is damaged or was modified: its checksum does not match its content")
    payload["metadata"] = json.loads(metadata_json)
    return payload


def load_model_file(path: str | Path) -> LoadedModel:
    """Rebuild the trained module from a model file (no download: the weights are in the file).

    Raises:
        ModelFileError: See :func:`read_payload`; also when the weights do not fit the configuration.
    """
    from hamacho.models.factory import build_module

    path = resolve_model_path(path)
    payload = read_payload(path)
    metadata = payload["metadata"]
    try:
        module = build_module(metadata["config"], backbone_weights="none")
        module.load_state_dict(payload["state_dict"], strict=True)
    except HamachoError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path} does not fit its own configuration ({_reason(exc)})") from exc
    module.eval()
    return LoadedModel(module=module, metadata=metadata, path=path)


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in the user's terms (torch's own text suggests unsafe loading)."""
    if not zipfile.is_zipfile(path):
        return "not a torch archive"
    if str(exc).startswith("Weights only load failed"):
        return "it holds Python objects other than tensors and plain data, which are never unpickled"
    return _reason(exc)


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
