"""Images and masks: registering them with their files, linking masks to images, listing, deleting, tags.

A request registers file by file: every file that decodes is kept, every other one is skipped with its reason,
and so is an image whose content (SHA-256) the tag already has, or the request had before (masks are not
checked: two images may share a mask's content). Only a request that keeps nothing is refused.

A mask belongs to one image (``ImageRow.image_id``): the one named by ``link_to`` when it is uploaded, or
else the image of the same tag whose name stem it carries (``003_mask.png`` -> ``003.*``, a bad image
before a good one), looked for whenever images or masks of that tag are registered (:func:`link_masks`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from hamacho.data.discovery import IMAGE_EXTENSIONS
from hamacho.serve.db import ImageRow
from hamacho.serve.service import NotFound, paged
from hamacho.serve.service_config import ServiceConfig
from hamacho.serve.storage import (
    IMAGES,
    CheckedImage,
    InputError,
    Skipped,
    allowed_path,
    check_each,
    display_name,
    read_limited,
    refuse_all,
    remove_tree,
    store_bytes,
)

THUMBNAIL = 160
MAX_PATH_FILES = 10_000
MASK_SUFFIXES = ("_mask", "-mask", "_gt", "")
GROUPS = ("good", "bad", "mask")
ImageAndMask = tuple[ImageRow, int | None]  # an image row and the id of the mask linked to it


def _tag_is(tag: str | None) -> ColumnElement[bool]:
    return ImageRow.tag.is_(None) if tag is None else ImageRow.tag == tag


def mask_ids(session: Session, ids: list[int]) -> dict[int, int]:
    """``{image id: id of the mask linked to it}`` for those of ``ids`` that have one (caller's transaction)."""
    rows = session.execute(select(ImageRow.image_id, ImageRow.id).where(
        ImageRow.group == "mask", ImageRow.image_id.in_(ids)))
    return {image_id: mask_id for image_id, mask_id in rows}


def link_masks(session: Session, tag: str | None) -> None:
    """Link the tag's unlinked masks to images by name stem, in the caller's transaction.

    A mask named ``<stem><suffix>.*`` (suffix ``_mask``, ``-mask``, ``_gt`` or none) goes to the tag's image
    named ``<stem>.*``, a bad image before a good one, the first registered first; an image that already
    has a mask gets no second one, and a mask without such an image stays unlinked.

    Args:
        session: In a transaction (the caller flushes new rows first).
        tag: The tag whose masks and images are matched (None: the untagged ones).
    """
    masks = list(session.scalars(select(ImageRow).where(ImageRow.group == "mask", ImageRow.image_id.is_(None),
                                                        _tag_is(tag))))
    if not masks:
        return
    images = list(session.scalars(select(ImageRow).where(ImageRow.group.in_(("bad", "good")), _tag_is(tag))
                                  .order_by(ImageRow.group, ImageRow.id)))  # "bad" sorts before "good"
    taken = set(session.scalars(select(ImageRow.image_id).where(ImageRow.group == "mask",
                                                                ImageRow.image_id.is_not(None))))
    by_stem: dict[str, ImageRow] = {}
    for image in images:
        by_stem.setdefault(Path(image.name).stem, image)
    for mask in masks:
        stem = Path(mask.name).stem
        for suffix in MASK_SUFFIXES:
            if suffix and not stem.endswith(suffix):
                continue
            target = by_stem.get(stem[: len(stem) - len(suffix)] if suffix else stem)
            if target is not None and target.id not in taken:
                mask.image_id = target.id
                taken.add(target.id)
                break


def check_link_to(group: str, files: int, link_to: int | None) -> None:
    """Refuse ``link_to`` unless it comes with one mask file (checked before any file is read).

    Raises:
        InputError: ``link_to`` with another group or with several files.
    """
    if link_to is not None and (group != "mask" or files != 1):
        raise InputError("link_to is for one mask file at a time (group mask)")


@dataclass
class Registered:
    """What a registration kept (rows with their masks' ids, in the order received) and what it skipped."""

    rows: list[ImageAndMask]
    skipped: list[Skipped]


def file_hash(data: bytes) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(data).hexdigest()


def known_hashes(session: Session, data_dir: Path, tag: str | None) -> dict[str, str]:
    """``{sha256: name}`` of the tag's images (not masks), hashing the files of rows from before hashes were
    kept (caller's transaction)."""
    rows = list(session.scalars(select(ImageRow).where(ImageRow.group.in_(("good", "bad")), _tag_is(tag))))
    for row in rows:
        if row.sha256 is None and (data_dir / row.stored).is_file():
            row.sha256 = file_hash((data_dir / row.stored).read_bytes())
    return {row.sha256: row.name for row in rows if row.sha256}


def register(session: Session, data_dir: Path, items: list[tuple[str, CheckedImage]], group: str,
             tag: str | None, link_to: int | None = None, skipped: list[Skipped] | None = None) -> Registered:
    """Store the files and add their rows, skipping images the tag already has, then link the tag's masks.

    The files are written first, then the rows added in one transaction; when anything fails, the
    transaction rolls back and the files written are removed.

    Args:
        session: The request's session, outside a transaction.
        data_dir: The service's data folder.
        items: ``(display name, checked image)`` per file.
        group: ``good``, ``bad`` or ``mask``.
        tag: The images' tag, or None.
        link_to: The image a single mask belongs to (see :func:`check_link_to`).
        skipped: Files of the request already skipped (not readable, too large): reported with the rest.

    Returns:
        The new rows with the ids of the masks linked to them, in the order of ``items``, and the skipped files.

    Raises:
        NotFound: ``link_to`` is not an image (missing, or a mask).
        InputError: Nothing is left to register (:func:`~hamacho.serve.storage.refuse_all`).
    """
    skipped = list(skipped or [])
    hashes = [file_hash(checked.data) for _name, checked in items]
    if group != "mask" and items:
        with session.begin():
            seen = known_hashes(session, data_dir, tag)
        kept = []
        for (name, checked), digest in zip(items, hashes):
            if digest in seen:
                where = f"in tag {tag!r}" if tag is not None else "among the untagged images"
                skipped.append(Skipped(name, f"the same content as {seen[digest]}, already {where}"))
            else:
                seen[digest] = name
                kept.append((name, checked, digest))
    else:
        kept = [(name, checked, digest) for (name, checked), digest in zip(items, hashes)]
    if not kept:
        raise refuse_all(skipped)
    stored = [store_bytes(data_dir, IMAGES, checked.data, checked.extension) for _name, checked, _d in kept]
    try:
        with session.begin():
            if link_to is not None:
                target = session.get(ImageRow, link_to)
                if target is None or target.group == "mask":
                    raise NotFound(f"link_to: no image with id {link_to}")
            rows = [ImageRow(name=name, stored=path, group=group, tag=tag, width=checked.width,
                             height=checked.height, bytes=len(checked.data), image_id=link_to, sha256=digest)
                    for (name, checked, digest), path in zip(kept, stored)]
            session.add_all(rows)
            session.flush()
            link_masks(session, tag)
            session.flush()
            masks = mask_ids(session, [row.id for row in rows])
            return Registered([(row, masks.get(row.id)) for row in rows], skipped)
    except BaseException:
        for path in stored:
            remove_tree(data_dir / path)
        raise


def check_and_register(session: Session, config: ServiceConfig, received: list[tuple[str, bytes]], group: str,
                       tag: str | None, link_to: int | None = None,
                       skipped: list[Skipped] | None = None) -> Registered:
    """Decode-check each received file (skipping those that fail), then :func:`register` the rest."""
    items, refused = check_each(received, config.max_pixels)
    return register(session, config.data_dir, items, group, tag, link_to, [*(skipped or []), *refused])


def server_files(paths: list[str], roots: list[Path]) -> list[Path]:
    """The image files named by server-side paths: files as given, folders searched (hidden files skipped).

    Raises:
        InputError: A path outside ``roots`` or missing, more than :data:`MAX_PATH_FILES` files, or none.
    """
    files: list[Path] = []
    for text in paths:
        path = allowed_path(text, roots)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not p.name.startswith(".") and allowed_path(str(p), roots))
        else:
            files.append(path)
        if len(files) > MAX_PATH_FILES:
            raise InputError(f"more than {MAX_PATH_FILES} files in one request; register folders one at a time")
    if not files:
        raise InputError("no image files in the given folders")
    return files


def register_server_files(session: Session, config: ServiceConfig, paths: list[str], group: str,
                          tag: str | None) -> Registered:
    """Check and :func:`register` the images under server-side paths (inside the allowed roots), file by file."""
    received, skipped = [], []
    for path in server_files(paths, config.allowed_roots):
        try:
            received.append((display_name(path.name), read_limited(path, config.max_file_bytes)))
        except InputError as exc:
            skipped.append(Skipped.of(display_name(path.name), exc))
    return check_and_register(session, config, received, group, tag, skipped=skipped)


def images_page(session: Session, group: str | None, tag: str | None, offset: int,
         limit: int) -> tuple[int, list[ImageAndMask]]:
    """``(total, one page)`` of the images of a group and tag (None: any), oldest first."""
    query = select(ImageRow)
    if group:
        query = query.where(ImageRow.group == group)
    if tag is not None:
        query = query.where(ImageRow.tag == tag)
    with session.begin():
        total, rows = paged(session, query, ImageRow.id, offset, limit)
        masks = mask_ids(session, [row.id for row in rows])
    return total, [(row, masks.get(row.id)) for row in rows]


def image_and_mask(session: Session, image_id: int) -> ImageAndMask:
    """One image and the id of its mask.

    Raises:
        NotFound: No image with that id.
    """
    with session.begin():
        row = session.get(ImageRow, image_id)
        if row is None:
            raise NotFound(f"no image with id {image_id}")
        return row, mask_ids(session, [row.id]).get(row.id)


def thumbnail_png(path: Path, image_id: int) -> bytes:
    """A stored image as a PNG whose longest side is at most :data:`THUMBNAIL` pixels.

    Raises:
        NotFound: The file is missing or no longer decodes.
    """
    picture = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if picture is None:
        raise NotFound(f"the file of image {image_id} is missing")
    scale = THUMBNAIL / max(picture.shape[:2])
    if scale < 1:
        picture = cv2.resize(picture, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    _ok, png = cv2.imencode(".png", picture)
    return png.tobytes()


def remove_images(session: Session, data_dir: Path, ids: list[int], tag: str | None,
                  missing_is_error: bool = False) -> int:
    """Delete images by ids and/or tag, rows first (one transaction), then their files; a mask linked to a
    deleted image stays, unlinked.

    Returns:
        How many were deleted.

    Raises:
        NotFound: ``missing_is_error`` and none matched (``no image with id <first id>``).
    """
    with session.begin():
        query = select(ImageRow)
        if ids and tag is not None:
            query = query.where(ImageRow.id.in_(ids) | (ImageRow.tag == tag))
        elif ids:
            query = query.where(ImageRow.id.in_(ids))
        else:
            query = query.where(ImageRow.tag == tag)
        rows = list(session.scalars(query))
        if missing_is_error and not rows:
            raise NotFound(f"no image with id {ids[0]}")
        stored = [row.stored for row in rows]
        session.execute(delete(ImageRow).where(ImageRow.id.in_([row.id for row in rows])))
    for path in stored:
        remove_tree(data_dir / path)
    return len(stored)


def tag_counts(session: Session) -> list[tuple[str | None, dict[str, int]]]:
    """Every tag (None: untagged) with its image counts per group, sorted by tag."""
    with session.begin():
        rows = session.execute(select(ImageRow.tag, ImageRow.group, func.count()).group_by(ImageRow.tag, ImageRow.group))
        counts: dict[str | None, dict[str, int]] = {}
        for tag, group, count in rows:
            counts.setdefault(tag, dict.fromkeys(GROUPS, 0))[group] = count
    return sorted(counts.items(), key=lambda kv: kv[0] or "")
