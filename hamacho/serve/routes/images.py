"""Images and masks: upload, register server-side files, list, show, thumbnails, delete, tags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hamacho.data.discovery import IMAGE_EXTENSIONS
from hamacho.serve.db import ImageRow
from hamacho.serve.schemas import (
    MAX_ID,
    Deleted,
    Group,
    ImageList,
    ImageOut,
    Limit,
    Offset,
    PathId,
    PathsIn,
    TagList,
    TagOut,
)
from hamacho.serve.service import API, Service, check_tag, get_or_404, get_service, paged, read_upload
from hamacho.serve.storage import (
    IMAGES,
    CheckedImage,
    InputError,
    allowed_path,
    check_image,
    display_name,
    read_limited,
    remove_tree,
    store_bytes,
)

router = APIRouter(tags=["images"])
THUMBNAIL = 160
MAX_PATH_FILES = 10_000
MASK_SUFFIXES = ("_mask", "-mask", "_gt", "")


def image_out(row: ImageRow, mask_id: int | None = None) -> ImageOut:
    """The API's view of an image row."""
    return ImageOut(id=row.id, name=row.name, group=row.group, tag=row.tag, width=row.width, height=row.height,
                    bytes=row.bytes, mask_id=mask_id, image_id=row.image_id, created_at=row.created_at,
                    file_url=f"{API}/images/{row.id}/file", thumbnail_url=f"{API}/images/{row.id}/thumbnail")


def _mask_ids(session: Session, ids: list[int]) -> dict[int, int]:
    rows = session.execute(select(ImageRow.image_id, ImageRow.id).where(
        ImageRow.group == "mask", ImageRow.image_id.in_(ids)))
    return {image_id: mask_id for image_id, mask_id in rows}


def link_masks(session: Session, tag: str | None) -> None:
    """Link the tag's unlinked masks to images by name stem (``003_mask.png`` -> ``003.*``; bad first)."""
    masks = list(session.scalars(select(ImageRow).where(ImageRow.group == "mask", ImageRow.image_id.is_(None),
                                                        ImageRow.tag.is_(tag) if tag is None else ImageRow.tag == tag)))
    if not masks:
        return
    images = list(session.scalars(select(ImageRow).where(ImageRow.group.in_(("bad", "good")),
                                                         ImageRow.tag.is_(tag) if tag is None else ImageRow.tag == tag)
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


def _register(service: Service, items: list[tuple[str, CheckedImage]], group: str, tag: str | None,
              link_to: int | None = None) -> list[ImageOut]:
    data_dir = service.config.data_dir
    stored = [store_bytes(data_dir, IMAGES, checked.data, checked.extension) for _name, checked in items]
    try:
        with service.factory() as session, session.begin():
            if link_to is not None:
                target = session.get(ImageRow, link_to)
                if target is None or target.group == "mask":
                    raise HTTPException(404, f"link_to: no image with id {link_to}")
            rows = [ImageRow(name=name, stored=path, group=group, tag=tag, width=checked.width,
                             height=checked.height, bytes=len(checked.data), image_id=link_to)
                    for (name, checked), path in zip(items, stored)]
            session.add_all(rows)
            session.flush()
            link_masks(session, tag)
            session.flush()
            masks = _mask_ids(session, [row.id for row in rows])
            return [image_out(row, masks.get(row.id)) for row in rows]
    except BaseException:
        for path in stored:
            remove_tree(data_dir / path)
        raise


@router.post("/images", status_code=201, response_model=ImageList)
async def upload_images(files: list[UploadFile] = File(..., description="Image files (repeat the field)"),
                        group: Group = Form(...), tag: str | None = Form(None),
                        link_to: int | None = Form(None, ge=1, le=MAX_ID, description="A mask's image id"),
                        service: Service = Depends(get_service)) -> ImageList:
    """Register uploaded images (checked by decoding) in a group, with an optional tag."""
    tag = check_tag(tag)
    if link_to is not None and (group != "mask" or len(files) != 1):
        raise HTTPException(400, "link_to is for one mask file at a time (group mask)")
    received = [(display_name(upload.filename), await read_upload(upload, service.config.max_file_bytes))
                for upload in files]
    return await run_in_threadpool(_check_and_register, service, received, group, tag, link_to)


def _check_and_register(service: Service, received: list[tuple[str, bytes]], group: str, tag: str | None,
                        link_to: int | None) -> ImageList:
    """Decode-check every file (off the event loop), then register them all or none."""
    items = [(name, check_image(data, name, service.config.max_pixels)) for name, data in received]
    return ImageList(items=_register(service, items, group, tag, link_to), total=len(items), limit=len(items))


@router.post("/images/paths", status_code=201, response_model=ImageList)
def register_paths(body: PathsIn, service: Service = Depends(get_service)) -> ImageList:
    """Register server-side image files, or every image in server-side folders (inside the allowed roots)."""
    config = service.config
    files: list[Path] = []
    for text in body.paths:
        path = allowed_path(text, config.allowed_roots)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                            and not p.name.startswith(".") and allowed_path(str(p), config.allowed_roots))
        else:
            files.append(path)
        if len(files) > MAX_PATH_FILES:
            raise InputError(f"more than {MAX_PATH_FILES} files in one request; register folders one at a time")
    if not files:
        raise InputError("no image files in the given folders")
    items = [(display_name(p.name), check_image(read_limited(p, config.max_file_bytes), p.name, config.max_pixels))
             for p in files]
    return ImageList(items=_register(service, items, body.group, body.tag), total=len(items), limit=len(items))


@router.get("/images", response_model=ImageList)
def list_images(group: Group | None = None, tag: str | None = None, offset: Offset = 0, limit: Limit = 50,
                service: Service = Depends(get_service)) -> ImageList:
    """Images, oldest first, filtered by group and tag, a page at a time."""
    query = select(ImageRow)
    if group:
        query = query.where(ImageRow.group == group)
    if tag is not None:
        query = query.where(ImageRow.tag == tag)
    with service.factory() as session:
        total, rows = paged(session, query, ImageRow.id, offset, limit)
        masks = _mask_ids(session, [row.id for row in rows])
    return ImageList(items=[image_out(row, masks.get(row.id)) for row in rows], total=total, offset=offset,
                     limit=limit)


def _image(service: Service, image_id: int) -> tuple[ImageRow, int | None]:
    with service.factory() as session:
        row = get_or_404(session, ImageRow, image_id, "image")
        return row, _mask_ids(session, [row.id]).get(row.id)


@router.get("/images/{image_id}", response_model=ImageOut)
def get_image(image_id: PathId, service: Service = Depends(get_service)) -> ImageOut:
    """One image."""
    return image_out(*_image(service, image_id))


@router.get("/images/{image_id}/file")
def image_file(image_id: PathId, service: Service = Depends(get_service)) -> FileResponse:
    """The stored file, as uploaded."""
    row, _ = _image(service, image_id)
    return FileResponse(service.path(row.stored), headers={"Cache-Control": "private, max-age=3600"})


@router.get("/images/{image_id}/thumbnail")
def image_thumbnail(image_id: PathId, service: Service = Depends(get_service)) -> Response:
    """A PNG thumbnail, longest side 160 px."""
    row, _ = _image(service, image_id)
    image = cv2.imdecode(np.fromfile(service.path(row.stored), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise HTTPException(404, f"the file of image {image_id} is missing")
    scale = THUMBNAIL / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    _ok, png = cv2.imencode(".png", image)
    return Response(png.tobytes(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/images/{image_id}", response_model=Deleted)
def delete_image(image_id: PathId, service: Service = Depends(get_service)) -> Deleted:
    """Delete one image (a mask linked to it stays, unlinked)."""
    return Deleted(deleted=_delete(service, [image_id], None, missing_is_error=True))


@router.delete("/images", response_model=Deleted)
def delete_images(ids: str | None = Query(None, description="Comma-separated ids"), tag: str | None = None,
                  service: Service = Depends(get_service)) -> Deleted:
    """Delete images by ids and/or by tag."""
    if not ids and tag is None:
        raise HTTPException(400, "give ids=1,2,3 and/or tag=NAME")
    try:
        numbers = [int(part) for part in ids.split(",") if part.strip()] if ids else []
    except ValueError as exc:
        raise HTTPException(400, f"ids must be comma-separated numbers, got {ids!r}") from exc
    if any(not 1 <= number <= MAX_ID for number in numbers):
        raise HTTPException(400, f"ids must be between 1 and {MAX_ID}")
    return Deleted(deleted=_delete(service, numbers, tag))


def _delete(service: Service, ids: list[int], tag: str | None, missing_is_error: bool = False) -> int:
    with service.factory() as session, session.begin():
        query = select(ImageRow)
        if ids and tag is not None:
            query = query.where(ImageRow.id.in_(ids) | (ImageRow.tag == tag))
        elif ids:
            query = query.where(ImageRow.id.in_(ids))
        else:
            query = query.where(ImageRow.tag == tag)
        rows = list(session.scalars(query))
        if missing_is_error and not rows:
            raise HTTPException(404, f"no image with id {ids[0]}")
        stored = [row.stored for row in rows]
        session.execute(delete(ImageRow).where(ImageRow.id.in_([row.id for row in rows])))
    for path in stored:
        remove_tree(service.path(path))
    return len(stored)


@router.get("/tags", response_model=TagList)
def tags(service: Service = Depends(get_service)) -> TagList:
    """Every tag with its image counts per group."""
    with service.factory() as session:
        rows = session.execute(select(ImageRow.tag, ImageRow.group, func.count()).group_by(ImageRow.tag, ImageRow.group))
        counts: dict[str | None, dict[str, int]] = {}
        for tag, group, count in rows:
            counts.setdefault(tag, {"good": 0, "bad": 0, "mask": 0})[group] = count
    return TagList(items=[TagOut(tag=tag, **values) for tag, values in sorted(counts.items(), key=lambda kv: kv[0] or "")])
