"""Model folders of the service: importing a model.pt or export folder safely, zipping one for download.

An import is checked by loading it with the :class:`~hamacho.predictor.Predictor` (a foreign, damaged
or tampered file is refused with the loader's one line) in a temporary folder, and moved into
``models/`` only then. Zip archives are unpacked member by member: absolute names, ``..``, links, too
many members or too many bytes are refused.
"""

from __future__ import annotations

import json
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

from hamacho.errors import HamachoError, first_line
from hamacho.results.summary import RunSummary
from hamacho.serve.storage import TMP, InputError, new_name, remove_tree

MAX_MEMBERS = 64
MODEL_FILE = "model.pt"


def describe(predictor: Any, entry: str) -> dict[str, Any]:
    """Columns and summary of a model row from its loaded Predictor (for imports)."""
    settings, metadata = predictor.settings, predictor.metadata
    runtime = metadata.get("runtime")
    facts = metadata.get("dataset") or {}
    summary = RunSummary.from_dict({**facts, "calibration": predictor.calibration,
                                    "thresholds": metadata.get("thresholds") or {}, "config": metadata.get("config"),
                                    "precision": metadata.get("precision")})
    return {"model": settings.model.name, "display_name": predictor.display_name,
            "backbone": settings.model.backbone, "image_size": json.dumps(settings.dataset.image_size),
            "format": runtime or MODEL_FILE, "entry": entry, "summary": summary}


def unpack_zip(archive: Path, destination: Path, max_bytes: int) -> None:
    """Extract a zip archive safely (see the module docstring).

    Raises:
        InputError: Not a zip, or a member that is unsafe or over the limits.
    """
    try:
        with zipfile.ZipFile(archive) as handle:
            members = [m for m in handle.infolist() if not m.is_dir()]
            if len(members) > MAX_MEMBERS:
                raise InputError(f"the archive has {len(members)} files; an export folder has a few")
            if sum(m.file_size for m in members) > max_bytes:
                raise InputError(f"the archive unpacks to more than {max_bytes} bytes")
            for member in members:
                parts = Path(member.filename.replace("\\", "/")).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts or not parts or ":" in parts[0]:
                    raise InputError(f"unsafe name in the archive: {member.filename!r}")
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise InputError(f"links are not allowed in the archive: {member.filename!r}")
                target = destination.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as exc:
        raise InputError("not a zip archive of an export folder, and not a model.pt") from exc


def find_entry(folder: Path) -> Path:
    """The model inside an unpacked or copied folder: model.pt, or the folder holding metadata.json."""
    for name in (MODEL_FILE, "metadata.json"):
        found = sorted(folder.rglob(name), key=lambda p: len(p.parts))
        if found:
            return found[0] if name == MODEL_FILE else found[0].parent
    raise InputError("no model.pt and no export folder (metadata.json) found")


def is_torch_file(path: Path) -> bool:
    """True for a PyTorch checkpoint (a zip with data.pkl, or a legacy pickle), False for other files."""
    if not zipfile.is_zipfile(path):
        return True  # not a zip: only a legacy checkpoint could be a model; the loader decides
    with zipfile.ZipFile(path) as handle:
        return any(name.endswith("data.pkl") for name in handle.namelist())


def checked_import(data_dir: Path, staged: Path, device: str) -> tuple[Path, dict[str, Any]]:
    """Load the model in ``staged`` (a folder), then move that folder into ``models/``.

    Returns:
        The new folder (relative name under data_dir) and the row's values from :func:`describe`.
    """
    from hamacho.predictor import Predictor

    entry = find_entry(staged)
    try:
        predictor = Predictor.load(entry, device=device)
    except HamachoError as exc:
        raise InputError(f"not a usable Hamacho model: {first_line(exc)}") from exc
    values = describe(predictor, entry.relative_to(staged).as_posix())
    metrics = staged / "metrics.json"
    if metrics.is_file():
        try:
            found = json.loads(metrics.read_text())
        except ValueError:
            found = None
        if isinstance(found, dict):  # the run's findings the model file does not hold, for the model card
            summary = values["summary"]
            summary.metrics = found.get("metrics") if isinstance(found.get("metrics"), dict) else None
            for key in ("held_out", "synthetic_recall"):
                if isinstance(found.get(key), dict):
                    setattr(summary, key, found[key])
    name = new_name()
    (data_dir / "models").mkdir(exist_ok=True)
    staged.rename(data_dir / "models" / name)
    return Path("models") / name, values


def stage_dir(data_dir: Path) -> Path:
    """A fresh folder under tmp/ (removed at start-up if the server dies)."""
    path = data_dir / TMP / new_name()
    path.mkdir(parents=True)
    return path


def zip_folder(folder: Path, data_dir: Path) -> Path:
    """Zip an export folder into tmp/ for download (the caller removes it after sending)."""
    target = data_dir / TMP / new_name(".zip")
    try:
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as handle:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    handle.write(path, Path(folder.name) / path.relative_to(folder))
    except BaseException:
        remove_tree(target)
        raise
    return target
