"""Models: list, show, delete, import, download, report files, load and unload."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import delete, select
from starlette.background import BackgroundTask

from hamacho.results.summary import RunSummary
from hamacho.serve.db import ModelRow, ResultRow
from hamacho.serve.model_files import (
    MODEL_FILE,
    checked_import,
    is_torch_file,
    stage_dir,
    unpack_zip,
    zip_folder,
)
from hamacho.serve.routes.jobs import tag_in_use
from hamacho.serve.schemas import (
    Deleted,
    ImportPathIn,
    Limit,
    LoadedList,
    LoadedOut,
    ModelList,
    ModelOut,
    Offset,
)
from hamacho.serve.service import API, Service, check_tag, find_model, get_service, paged, thresholds_out
from hamacho.serve.storage import InputError, TooLarge, allowed_path, remove_tree

router = APIRouter(tags=["models"])
EXAMPLE_PICTURES = 8


def example_pictures(folder: Path) -> list[str]:
    """Up to :data:`EXAMPLE_PICTURES` report pictures (relative paths), shared fairly among the folders
    (defect types first: ``bad/`` sorts before ``good/``)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.png")) if folder.is_dir() else []:
        relative = path.relative_to(folder).as_posix()
        groups.setdefault(relative.rpartition("/")[0], []).append(relative)
    chosen: list[str] = []
    while len(chosen) < EXAMPLE_PICTURES and any(groups.values()):
        for names in groups.values():
            if names and len(chosen) < EXAMPLE_PICTURES:
                chosen.append(names.pop(0))
    return chosen


def model_out(row: ModelRow, service: Service) -> ModelOut:
    """The API's view of a model row."""
    summary = RunSummary.from_json(row.summary)
    base = f"{API}/models/{row.id}"
    folder = service.path(row.folder)
    chosen = example_pictures(folder / "images") if row.source == "trained" else []
    report = summary.report and (folder / "report.html").is_file()
    return ModelOut(id=row.id, tag=row.tag, model=row.model, display_name=row.display_name, backbone=row.backbone,
                    image_size=json.loads(str(row.image_size)), format=row.format, source=row.source, job_id=row.job_id,
                    created_at=row.created_at, metrics=summary.metrics, thresholds=thresholds_out(summary),
                    dataset={"counts": summary.counts, "images_fitted": summary.images_fitted,
                             "images_calibrated": summary.images_calibrated, "notes": summary.notes},
                    config=summary.config, loaded=service.cache.is_loaded(row.id),
                    report_url=f"{base}/files/report.html" if report else None,
                    pictures=[f"{base}/files/images/{name}" for name in chosen], download_url=f"{base}/download")


@router.get("/models", response_model=ModelList)
def list_models(offset: Offset = 0, limit: Limit = 50, service: Service = Depends(get_service)) -> ModelList:
    """Models, newest first."""
    with service.factory() as session:
        total, rows = paged(session, select(ModelRow), ModelRow.id.desc(), offset, limit)
    return ModelList(items=[model_out(row, service) for row in rows], total=total, offset=offset, limit=limit)


@router.get("/models/{ref}", response_model=ModelOut)
def get_model(ref: str, service: Service = Depends(get_service)) -> ModelOut:
    """One model: metrics, thresholds, config, dataset counts, report and picture links."""
    with service.factory() as session:
        return model_out(find_model(session, ref), service)


@router.delete("/models/{ref}", response_model=Deleted)
def delete_model(ref: str, service: Service = Depends(get_service)) -> Deleted:
    """Delete a model, its files and its saved results (409 while predictions use it)."""
    with service.factory() as session, session.begin():
        row = find_model(session, ref)
        busy = service.cache.busy(row.id)
        if busy:
            raise HTTPException(409, f"model {row.tag!r} is in use by {busy} prediction request(s); try again")
        folders = [row.folder, *session.scalars(select(ResultRow.folder).where(ResultRow.model_id == row.id))]
        session.execute(delete(ResultRow).where(ResultRow.model_id == row.id))
        session.delete(row)
        model_id = row.id
    service.cache.unload(model_id)
    for folder in folders:
        remove_tree(service.path(folder))
    return Deleted(deleted=1)


def _add_imported(service: Service, staged: Path, tag: str) -> ModelOut:
    try:
        folder, values = checked_import(service.config.data_dir, staged, service.config.device)
    except BaseException:
        remove_tree(staged)
        raise
    try:
        with service.factory() as session, session.begin():
            problem = tag_in_use(session, tag)
            if problem:
                raise HTTPException(409, problem)
            summary = values.pop("summary")
            row = ModelRow(tag=tag, source="imported", folder=folder.as_posix(), summary=summary.to_json(),
                           **values)
            session.add(row)
            session.flush()
            return model_out(row, service)
    except BaseException:
        remove_tree(service.path(folder.as_posix()))
        raise


def _free_tag(service: Service, tag: str) -> None:
    check_tag(tag, required=True)
    with service.factory() as session:
        problem = tag_in_use(session, tag)
    if problem:
        raise HTTPException(409, problem)


@router.post("/models/import", status_code=201, response_model=ModelOut)
def import_model(file: UploadFile = File(..., description="model.pt, or a .zip of an export folder"),
                       tag: str = Form(...), service: Service = Depends(get_service)) -> ModelOut:
    """Import an uploaded model.pt or zipped export folder (checked by loading it)."""
    _free_tag(service, tag)
    limit = service.config.max_request_bytes
    staged = stage_dir(service.config.data_dir)
    try:
        upload = staged.parent / f"{staged.name}.upload"
        size = 0
        with open(upload, "wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the model file is over the limit of {limit} bytes")
                out.write(chunk)
        if size == 0:
            raise InputError("the model file is empty")
        if is_torch_file(upload):
            upload.rename(staged / MODEL_FILE)
        else:
            unpack_zip(upload, staged, limit * 4)
    except BaseException:
        remove_tree(staged)
        raise
    finally:
        remove_tree(staged.parent / f"{staged.name}.upload")
    return _add_imported(service, staged, tag)


@router.post("/models/import-path", status_code=201, response_model=ModelOut)
def import_model_path(body: ImportPathIn, service: Service = Depends(get_service)) -> ModelOut:
    """Import a server-side model.pt (or its results folder) or export folder, inside the allowed roots."""
    _free_tag(service, body.tag)
    path = allowed_path(body.path, service.config.allowed_roots)
    staged = stage_dir(service.config.data_dir)
    try:
        if path.is_file() or (path / MODEL_FILE).is_file():
            source = path if path.is_file() else path / MODEL_FILE
            shutil.copyfile(source, staged / MODEL_FILE)
            if (source.parent / "metrics.json").is_file():
                shutil.copyfile(source.parent / "metrics.json", staged / "metrics.json")
        elif (path / "metadata.json").is_file():
            shutil.copytree(path, staged / path.name, symlinks=False)
        else:
            raise InputError(f"{body.path}: not a model.pt, a results folder with one, or an export folder")
    except BaseException:
        remove_tree(staged)
        raise
    return _add_imported(service, staged, body.tag)


@router.get("/models/{ref}/download")
def download_model(ref: str, service: Service = Depends(get_service)) -> FileResponse:
    """model.pt, or the export folder as a zip."""
    with service.factory() as session:
        row = find_model(session, ref)
    entry = service.path(row.folder) / row.entry
    if entry.is_file():
        return FileResponse(entry, filename=f"{row.tag}.pt", media_type="application/octet-stream")
    archive = zip_folder(entry, service.config.data_dir)
    return FileResponse(archive, filename=f"{row.tag}-{row.format}.zip", media_type="application/zip",
                        background=BackgroundTask(remove_tree, archive))


@router.get("/models/{ref}/report")
def model_report(ref: str, service: Service = Depends(get_service)) -> FileResponse:
    """The training report (report.html); its pictures load from ``files/``."""
    with service.factory() as session:
        row = find_model(session, ref)
    return _file(service, row, "report.html")


@router.get("/models/{ref}/files/{name:path}")
def model_file(ref: str, name: str, service: Service = Depends(get_service)) -> FileResponse:
    """A file of a trained model's results folder (report.html, its figures and pictures)."""
    with service.factory() as session:
        row = find_model(session, ref)
    return _file(service, row, name)


def _file(service: Service, row: ModelRow, name: str) -> FileResponse:
    folder = service.path(row.folder).resolve()
    if ".." in Path(name).parts or name.startswith("/"):
        raise HTTPException(400, "'..' is not allowed in file names")
    path = (folder / name).resolve()
    if folder not in path.parents or not path.is_file() or path.name == MODEL_FILE:
        raise HTTPException(404, f"model {row.tag!r} has no file {name!r}")
    return FileResponse(path)


@router.post("/models/{ref}/load", response_model=LoadedList)
def load_model(ref: str, service: Service = Depends(get_service)) -> LoadedList:
    """Load a model into memory (the least recently used goes when the limit is reached)."""
    with service.factory() as session:
        row = find_model(session, ref)
    service.cache.load(row.id, service.path(row.folder) / row.entry)
    return loaded_models(service)


@router.post("/models/{ref}/unload", response_model=LoadedList)
def unload_model(ref: str, service: Service = Depends(get_service)) -> LoadedList:
    """Release a model from memory."""
    with service.factory() as session:
        row = find_model(session, ref)
    if not service.cache.unload(row.id):
        raise HTTPException(409, f"model {row.tag!r} is not loaded")
    return loaded_models(service)


@router.get("/loaded", response_model=LoadedList)
def loaded_models(service: Service = Depends(get_service)) -> LoadedList:
    """The models in memory, most recently used first."""
    entries = service.cache.loaded()
    with service.factory() as session:
        tags = dict(session.execute(select(ModelRow.id, ModelRow.tag).where(
            ModelRow.id.in_([e["id"] for e in entries]))).all())
    return LoadedList(items=[LoadedOut(id=e["id"], tag=tags.get(e["id"], ""), last_used=e["last_used"])
                             for e in entries if e["id"] in tags], max_loaded=service.cache.max_loaded)
