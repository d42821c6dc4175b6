"""Images and masks: upload, register server-side files, list, show, thumbnails, delete, tags."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from hamacho.serve.db import ImageRow
from hamacho.serve.deps import ServiceDep, SessionDep
from hamacho.serve.image_catalog import (
    Registered,
    check_and_register,
    check_link_to,
    image_and_mask,
    images_page,
    register_server_files,
    remove_images,
    tag_counts,
    thumbnail_png,
)
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
    SkippedOut,
    TagList,
    TagOut,
)
from hamacho.serve.service import API, check_tag, read_uploads

router = APIRouter(tags=["images"])
CACHED = {"Cache-Control": "private, max-age=3600"}


def image_out(row: ImageRow, mask_id: int | None = None) -> ImageOut:
    """The API's view of an image row."""
    return ImageOut(id=row.id, name=row.name, group=row.group, tag=row.tag, width=row.width, height=row.height,
                    bytes=row.bytes, mask_id=mask_id, image_id=row.image_id, created_at=row.created_at,
                    file_url=f"{API}/images/{row.id}/file", thumbnail_url=f"{API}/images/{row.id}/thumbnail")


def images_listed(registered: Registered) -> ImageList:
    """A registration's answer: the images added and the files skipped, with the reason."""
    rows = registered.rows
    return ImageList(items=[image_out(row, mask_id) for row, mask_id in rows], total=len(rows), limit=len(rows),
                     skipped=[SkippedOut(name=s.name, reason=s.reason) for s in registered.skipped])


@router.post("/images", status_code=201, response_model=ImageList)
async def upload_images(service: ServiceDep, session: SessionDep,
                        files: list[UploadFile] = File(..., description="Image files (repeat the field)"),
                        group: Group = Form(...), tag: str | None = Form(None),
                        link_to: int | None = Form(None, ge=1, le=MAX_ID, description="A mask's image id")) -> ImageList:
    """Register uploaded images (checked by decoding) in a group, with an optional tag, file by file: every file
    that decodes is added, the others (and images the tag already has) are listed in ``skipped`` with their
    reason; 400 (413 when every file was too large) only when nothing was added."""
    tag = check_tag(tag)
    check_link_to(group, len(files), link_to)
    received, skipped = await read_uploads(files, service.config.max_file_bytes)
    # decoding and the database, off the event loop
    registered = await run_in_threadpool(check_and_register, session, service.config, received, group, tag,
                                         link_to, skipped)
    return images_listed(registered)


@router.post("/images/paths", status_code=201, response_model=ImageList)
def register_paths(body: PathsIn, service: ServiceDep, session: SessionDep) -> ImageList:
    """Register server-side image files, or every image in server-side folders (inside the allowed roots), file
    by file as uploads are."""
    return images_listed(register_server_files(session, service.config, body.paths, body.group, body.tag))


@router.get("/images", response_model=ImageList)
def list_images(session: SessionDep, group: Group | None = None, tag: str | None = None, offset: Offset = 0,
                limit: Limit = 50) -> ImageList:
    """Images, oldest first, filtered by group and tag, a page at a time."""
    total, rows = images_page(session, group, tag, offset, limit)
    return ImageList(items=[image_out(row, mask_id) for row, mask_id in rows], total=total, offset=offset,
                     limit=limit)


@router.get("/images/{image_id}", response_model=ImageOut)
def get_image(image_id: PathId, session: SessionDep) -> ImageOut:
    """One image."""
    return image_out(*image_and_mask(session, image_id))


@router.get("/images/{image_id}/file")
def image_file(image_id: PathId, service: ServiceDep, session: SessionDep) -> FileResponse:
    """The stored file, as uploaded."""
    row, _ = image_and_mask(session, image_id)
    return FileResponse(service.path(row.stored), headers=CACHED)


@router.get("/images/{image_id}/thumbnail")
def image_thumbnail(image_id: PathId, service: ServiceDep, session: SessionDep) -> Response:
    """A PNG thumbnail, longest side 160 px."""
    row, _ = image_and_mask(session, image_id)
    return Response(thumbnail_png(service.path(row.stored), image_id), media_type="image/png",
                    headers=CACHED)


@router.delete("/images/{image_id}", response_model=Deleted)
def delete_image(image_id: PathId, service: ServiceDep, session: SessionDep) -> Deleted:
    """Delete one image (a mask linked to it stays, unlinked)."""
    return Deleted(deleted=remove_images(session, service.config.data_dir, [image_id], None,
                                                       missing_is_error=True))


@router.delete("/images", response_model=Deleted)
def delete_images(service: ServiceDep, session: SessionDep,
                  ids: str | None = Query(None, description="Comma-separated ids"), tag: str | None = None) -> Deleted:
    """Delete images by ids and/or by tag."""
    if not ids and tag is None:
        raise HTTPException(400, "give ids=1,2,3 and/or tag=NAME")
    try:
        numbers = [int(part) for part in ids.split(",") if part.strip()] if ids else []
    except ValueError as exc:
        raise HTTPException(400, f"ids must be comma-separated numbers, got {ids!r}") from exc
    if any(not 1 <= number <= MAX_ID for number in numbers):
        raise HTTPException(400, f"ids must be between 1 and {MAX_ID}")
    return Deleted(deleted=remove_images(session, service.config.data_dir, numbers, tag))


@router.get("/tags", response_model=TagList)
def tags(session: SessionDep) -> TagList:
    """Every tag with its image counts per group."""
    return TagList(items=[TagOut(tag=tag, **counts) for tag, counts in tag_counts(session)])
