"""The model file: weights, feature indices, memory bank, calibration and configuration in one file.

It is a torch zip holding only tensors, strings and numbers, loaded with ``weights_only=True`` so that
no pickled code can run. A SHA-256 over the metadata and every tensor detects damaged or edited
files, and a format version lets a newer file be refused by name instead of misread.

Format 2 holds the plain model's state (calibration included, under ``calibration.``) and, for a model
trained with ``dataset.valid_area_mask``, the mask itself (``valid_area_mask``, uint8 0/1 in original
pixels, covered by the checksum), so that inference, export and the service apply it without the file. Format 1, written
by Hamacho before the Predictor, held the Lightning wrapper's state (``model.`` + ``calibration.``); it
is read by dropping the ``model.`` prefix.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hamacho import __version__
from hamacho.config import settings_from_dict, settings_to_dict
from hamacho.errors import HamachoError, ModelFileError, first_line
from hamacho.files import atomic_path
from hamacho.models.base import AnomalyModel
from hamacho.settings import Settings

FORMAT_NAME = "hamacho-model"
FORMAT_VERSION = 2
MODEL_FILENAME = "model.pt"
VALID_AREA_KEY = "\0valid_area_mask"  # its name in the checksum (no state-dict key can start with NUL)


@dataclass
class LoadedModel:
    """A model restored from a model file, with its settings, the file's metadata and its valid-area mask."""

    model: AnomalyModel
    settings: Settings
    metadata: dict[str, Any]
    path: Path
    valid_area: np.ndarray | None = None


def _digest(state: dict[str, torch.Tensor], metadata_json: str) -> str:
    sha = hashlib.sha256(metadata_json.encode("utf-8"))
    for key in sorted(state):
        tensor = state[key].contiguous()
        sha.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy())  # hashed in place, no copy
    return sha.hexdigest()


def save_model_file(
    path: str | Path,
    model: AnomalyModel,
    settings: Settings,
    extra: dict[str, Any] | None = None,
    before_commit: Callable[[], None] | None = None,
    valid_area: np.ndarray | None = None,
) -> Path:
    """Write the model's state and metadata atomically (temporary file, fsync, rename).

    Args:
        path: Target file.
        model: A fitted and calibrated model.
        settings: The settings it was trained with.
        extra: More metadata (dataset counts, timings...), JSON-serialisable.
        before_commit: Called just before the rename; if it raises, nothing is written (see
            :func:`hamacho.files.atomic_path`).
        valid_area: The valid-area mask the model was trained with (bool, original pixels), or None.

    Returns:
        The path written.
    """
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    metadata = {
        "config": settings_to_dict(settings),
        "calibration": model.calibration.as_dict(),
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
    }
    checked = state
    if valid_area is not None:
        payload["valid_area_mask"] = torch.from_numpy(np.ascontiguousarray(valid_area, dtype=np.uint8))
        checked = {**state, VALID_AREA_KEY: payload["valid_area_mask"]}
    payload["sha256"] = _digest(checked, metadata_json)
    path = Path(path)
    with atomic_path(path, durable=True, before_commit=before_commit) as tmp:
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
    area = payload.get("valid_area_mask")
    if area is not None and not (isinstance(area, torch.Tensor) and area.dtype == torch.uint8 and area.dim() == 2):
        raise ModelFileError(f"{path} is damaged: its valid-area mask is not a 2-D uint8 tensor")
    checked = state if area is None else {**state, VALID_AREA_KEY: area}
    if _digest(checked, metadata_json) != payload.get("sha256"):
        raise ModelFileError(f"{path} is damaged or was modified: its checksum does not match its content")
    payload["metadata"] = json.loads(metadata_json)
    return payload


def load_model_file(path: str | Path) -> LoadedModel:
    """Rebuild the trained model from a model file (no download: the weights are in the file).

    Raises:
        ModelFileError: See :func:`read_payload`; also when the weights or settings do not fit this version.
    """
    from hamacho.models.factory import build_model

    path = resolve_model_path(path)
    payload = read_payload(path)
    metadata = payload["metadata"]
    state = payload["state_dict"]
    if payload["format_version"] < 2:
        state = {key.removeprefix("model."): value for key, value in state.items()}
    try:
        settings = settings_from_dict(metadata["config"], source=str(path))
        model = build_model(settings, backbone_weights="none")
        model.load_state_dict(state, strict=True)
    except HamachoError as exc:
        raise ModelFileError(f"{path} cannot be used by this version of Hamacho ({exc})") from exc
    except Exception as exc:
        raise ModelFileError(f"{path} does not fit its own configuration ({first_line(exc, 200)})") from exc
    area = payload.get("valid_area_mask")
    return LoadedModel(model=model.eval(), settings=settings, metadata=metadata, path=path,
                       valid_area=None if area is None else area.numpy() > 0)


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in the user's terms (torch's own text suggests unsafe loading)."""
    if not zipfile.is_zipfile(path):
        return "not a torch archive"
    if str(exc).startswith("Weights only load failed"):
        return "it holds Python objects other than tensors and plain data, which are never unpickled"
    return first_line(exc, 200)
