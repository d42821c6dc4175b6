"""Models: list, show, delete, import, download, report files, load and unload."""

from __future__ import annotations

import json

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from hamacho.serve.deps import ServiceDep, SessionDep
from hamacho.serve.model_catalog import (
    ModelView,
    add_imported,
    check_new_tag,
    download_of,
    file_of_model,
    load_into_memory,
    model_by_ref,
    model_views,
    models_page,
    release_from_memory,
    remove_model,
    stage_server_model,
    stage_upload,
)
from hamacho.serve.replicas import live_holders, live_replicas
from hamacho.serve.schemas import (
    Deleted,
    ImportPathIn,
    Limit,
    LoadedList,
    LoadedOut,
    ModelList,
    ModelOut,
    Offset,
    ReplicaList,
    ReplicaOut,
)
from hamacho.serve.service import API, thresholds_out
from hamacho.serve.storage import remove_tree

router = APIRouter(tags=["models"])


def model_out(shown: ModelView) -> ModelOut:
    """The API's view of a model."""
    row, summary = shown.row, shown.summary
    base = f"{API}/models/{row.id}"
    return ModelOut(id=row.id, tag=row.tag, model=row.model, display_name=row.display_name, backbone=row.backbone,
                    image_size=json.loads(str(row.image_size)), format=row.format, source=row.source, job_id=row.job_id,
                    created_at=row.created_at, metrics=summary.metrics,
                    thresholds=thresholds_out(summary, row.threshold_version, shown.cuts),
                    dataset={"counts": summary.counts, "images_fitted": summary.images_fitted,
                             "images_calibrated": summary.images_calibrated, "notes": summary.notes},
                    config=summary.config, loaded=shown.loaded,
                    report_url=f"{base}/files/report.html" if shown.report else None,
                    pictures=[f"{base}/files/images/{name}" for name in shown.pictures], download_url=f"{base}/download",
                    held_out=summary.held_out, comparison=summary.comparison, dataset_tag=shown.dataset_tag,
                    synthetic_recall=summary.synthetic_recall)


@router.get("/models", response_model=ModelList)
def list_models(service: ServiceDep, session: SessionDep, offset: Offset = 0, limit: Limit = 50) -> ModelList:
    """Models, newest first."""
    total, rows = models_page(session, offset, limit)
    return ModelList(items=[model_out(view) for view in model_views(service, session, rows)], total=total,
                     offset=offset, limit=limit)


@router.get("/models/{ref}", response_model=ModelOut)
def get_model(ref: str, service: ServiceDep, session: SessionDep) -> ModelOut:
    """One model: metrics, thresholds, config, dataset counts, report and picture links."""
    return model_out(model_views(service, session, [model_by_ref(session, ref)])[0])


@router.delete("/models/{ref}", response_model=Deleted)
def delete_model(ref: str, service: ServiceDep, session: SessionDep) -> Deleted:
    """Delete a model, its files and its saved results (409 while predictions use it)."""
    remove_model(service, session, ref)
    return Deleted(deleted=1)


@router.post("/models/import", status_code=201, response_model=ModelOut)
def import_model(service: ServiceDep, session: SessionDep,
                 file: UploadFile = File(..., description="model.pt, or a .zip of an export folder"),
                 tag: str = Form(...)) -> ModelOut:
    """Import an uploaded model.pt or zipped export folder (checked by loading it)."""
    check_new_tag(session, tag)
    staged = stage_upload(service.config.data_dir, file.file, service.config.max_request_bytes)
    return model_out(add_imported(service, session, staged, tag))


@router.post("/models/import-path", status_code=201, response_model=ModelOut)
def import_model_path(body: ImportPathIn, service: ServiceDep, session: SessionDep) -> ModelOut:
    """Import a server-side model.pt (or its results folder) or export folder, inside the allowed roots."""
    check_new_tag(session, body.tag)
    staged = stage_server_model(service.config.data_dir, body.path, service.config.allowed_roots)
    return model_out(add_imported(service, session, staged, body.tag))


@router.get("/models/{ref}/download")
def download_model(ref: str, service: ServiceDep, session: SessionDep) -> FileResponse:
    """model.pt, or the export folder as a zip."""
    sent = download_of(service, model_by_ref(session, ref))
    return FileResponse(sent.path, filename=sent.filename, media_type=sent.media_type,
                        background=BackgroundTask(remove_tree, sent.path) if sent.temporary else None)


@router.get("/models/{ref}/report")
def model_report(ref: str, service: ServiceDep, session: SessionDep) -> FileResponse:
    """The training report (report.html); its pictures load from ``files/``."""
    return FileResponse(file_of_model(service, model_by_ref(session, ref), "report.html"))


@router.get("/models/{ref}/files/{name:path}")
def model_file(ref: str, name: str, service: ServiceDep, session: SessionDep) -> FileResponse:
    """A file of a trained model's results folder (report.html, its figures and pictures)."""
    return FileResponse(file_of_model(service, model_by_ref(session, ref), name))


@router.post("/models/{ref}/load", response_model=LoadedList)
def load_model(ref: str, service: ServiceDep, session: SessionDep) -> LoadedList:
    """Load a model into memory (the least recently used goes when the limit is reached)."""
    load_into_memory(service, session, ref)
    return loaded_models(service, session)


@router.post("/models/{ref}/unload", response_model=LoadedList)
def unload_model(ref: str, service: ServiceDep, session: SessionDep) -> LoadedList:
    """Release a model from memory."""
    release_from_memory(service, session, ref)
    return loaded_models(service, session)


@router.get("/loaded", response_model=LoadedList)
def loaded_models(service: ServiceDep, session: SessionDep) -> LoadedList:
    """The models in the memory of the live replicas, most recently used first (the same on every replica)."""
    return LoadedList(items=[LoadedOut(id=held.model_id, tag=held.tag, last_used=held.last_used,
                                       replicas=held.replicas, keep_loaded=held.keep_loaded)
                             for held in live_holders(session)],
                      max_loaded=service.cache.max_loaded, replica=service.replica.id)


@router.get("/replicas", response_model=ReplicaList)
def replicas(service: ServiceDep, session: SessionDep) -> ReplicaList:
    """The live ``hamacho serve`` replicas on this database, oldest first, with the models each holds."""
    return ReplicaList(items=[ReplicaOut(id=row.id, host=row.host, pid=row.pid, started_at=row.started_at,
                                         models=held) for row, held in live_replicas(session)],
                       replica=service.replica.id)
