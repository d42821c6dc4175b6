"""Files under the service's data folder, and the checks on everything that comes from outside.

* Uploaded bytes are judged by their content, never by their name: the header gives the format and
  size (an image over the pixel limit is refused before it is decoded: decompression bombs), then the
  whole image is decoded once (truncated and damaged files are refused).
* A client's file name is only ever a label (:func:`display_name`); stored files get generated names.
* Server-side paths must lie inside an allowed root once resolved (symlinks and ``..``), the same reading as
  the roots themselves get (:func:`allowed_path`).
* Every file is written atomically (a temporary name, then a rename), so a killed server leaves whole
  files or none; files without a database row are removed at start-up once old (:func:`remove_orphans`).
"""

from __future__ import annotations

import io
import shutil
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from hamacho.data.decoding import as_rgb_uint8
from hamacho.errors import ConfigError, HamachoError
from hamacho.files import atomic_write_bytes
from hamacho.serve.service_config import resolve_server_path

# PIL format name -> the extension the stored file gets
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
IMAGES, MODELS, PREDICTIONS, JOBS, TMP = "images", "models", "predictions", "jobs", "tmp"


class InputError(HamachoError):
    """Bad input from a client (answered with 400 and the message)."""


class TooLarge(InputError):
    """An upload over a size limit (answered with 413)."""


@dataclass
class CheckedImage:
    """An image file that decoded: its bytes, stored extension, size and the decoded pixels."""

    data: bytes
    extension: str
    width: int
    height: int
    decoded: np.ndarray = field(repr=False)

    def rgb(self) -> np.ndarray:
        """The image as RGB uint8 (H, W, 3), from the decode the check made (no second decode)."""
        return as_rgb_uint8(self.decoded, bgr=True)


@dataclass
class Skipped:
    """A file of a request that was not taken, and why (one line, without the file's name)."""

    name: str
    reason: str
    too_large: bool = False

    @classmethod
    def of(cls, name: str, error: InputError) -> Skipped:
        """The skip an :class:`InputError` about the file ``name`` stands for."""
        text = str(error)
        return cls(name, text[len(name) + 2:] if text.startswith(f"{name}: ") else text, isinstance(error, TooLarge))


def check_each(received: list[tuple[str, bytes]], max_pixels: int) -> tuple[list[tuple[str, CheckedImage]],
                                                                             list[Skipped]]:
    """:func:`check_image` of each file: ``(display name, checked image)`` of those that pass, and the others
    with their reasons, each in the order received."""
    checked, skipped = [], []
    for name, data in received:
        try:
            checked.append((name, check_image(data, name, max_pixels)))
        except InputError as exc:
            skipped.append(Skipped.of(name, exc))
    return checked, skipped


class NothingTaken(InputError):
    """A request whose every file was skipped; the answer lists them (``{"error", "skipped"}``)."""

    def __init__(self, message: str, skipped: list[Skipped]) -> None:
        super().__init__(message)
        self.skipped = skipped


class NothingTakenTooLarge(NothingTaken, TooLarge):
    """:class:`NothingTaken` where every file was over a size limit (413)."""


def refuse_all(skipped: list[Skipped], done: str = "added") -> NothingTaken:
    """The error of a request whose every file was skipped (``nothing <done>: N skipped: name: reason; ...``,
    the first five): 413 when each was over a size limit, else 400."""
    listed = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
    message = f"nothing {done}: {len(skipped)} skipped: {listed}"
    kind = NothingTakenTooLarge if all(s.too_large for s in skipped) else NothingTaken
    return kind(message, skipped)


def display_name(name: str | None, fallback: str = "image") -> str:
    """A client's file name made safe to show and store as a label: the last path part, no control characters."""
    text = unicodedata.normalize("NFC", str(name or ""))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip().strip(".")
    return text[:200] or fallback


def check_image(data: bytes, name: str, max_pixels: int) -> CheckedImage:
    """Accept bytes only if they are a PNG, JPEG, BMP or TIFF image within ``max_pixels`` that decodes.

    Raises:
        InputError: With the file's name and the reason.
    """
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib; reads headers only

    if not data:
        raise InputError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as header:
            fmt, (width, height) = header.format, header.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a readable image (PNG, JPEG, BMP or TIFF)") from exc
    if fmt not in FORMATS:
        raise InputError(f"{name}: image format {fmt} is not supported (PNG, JPEG, BMP or TIFF)")
    if width * height > max_pixels:
        raise InputError(f"{name}: {width}x{height} pixels is over the limit of {max_pixels} pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0 or image.shape[:2] != (height, width):
        raise InputError(f"{name}: not a readable image (damaged or truncated)")
    return CheckedImage(data, FORMATS[fmt], width, height, image)


def new_name(extension: str = "") -> str:
    """A fresh, unguessable file or folder name."""
    return uuid.uuid4().hex + extension


def store_bytes(data_dir: Path, folder: str, data: bytes, extension: str) -> str:
    """Write ``data`` atomically under ``data_dir/folder``; return its path relative to ``data_dir``."""
    relative = f"{folder}/{new_name(extension)}"
    atomic_write_bytes(data_dir / relative, data)
    return relative


def allowed_path(path: str, roots: list[Path]) -> Path:
    """Resolve a server-side path that must lie inside one of ``roots``.

    The path is resolved like the roots (:func:`~hamacho.serve.service_config.resolve_server_path`: symlinks and
    ``..`` included) and accepted iff the result is a root or lies under one. Whether it exists is told
    only then, so nothing is learnt about files outside the roots.

    Raises:
        InputError: A path that is not one, lies outside every root, or does not exist.
    """
    try:
        resolved = resolve_server_path(path)
    except ConfigError as exc:
        raise InputError(str(exc)) from exc
    if not any(resolved == root or root in resolved.parents for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise InputError(f"{path}: outside the allowed folders ({shown}); see `hamacho serve --allow-path`")
    if not resolved.exists():
        raise InputError(f"{path}: no such file or folder on the server")
    return resolved


def read_limited(path: Path, limit: int) -> bytes:
    """A server-side file's bytes, refused over ``limit`` bytes."""
    size = path.stat().st_size
    if size > limit:
        raise TooLarge(f"{path.name}: {size} bytes is over the limit of {limit} bytes per file")
    return path.read_bytes()


def remove_tree(path: Path) -> None:
    """Delete a folder or file if it exists (no error when it is already gone)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink(missing_ok=True)


def remove_orphans(folder: Path, known: set[str], older_than: float = 0.0) -> int:
    """Delete entries of ``folder`` whose names are not in ``known`` and that were last modified more than
    ``older_than`` seconds ago (left by a killed process; younger ones may still be being written)."""
    removed = 0
    cutoff = time.time() - older_than
    if folder.is_dir():
        for entry in folder.iterdir():
            if entry.name in known:
                continue
            try:
                modified = entry.lstat().st_mtime
            except OSError:
                continue
            if modified <= cutoff:
                remove_tree(entry)
                removed += 1
    return removed
