"""Predictions with a model (uploads or server-side paths) and their pictures (stored by
:mod:`hamacho.serve.prediction_store`); saved results are in :mod:`.results`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, File, Form, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUpload

from hamacho.errors import ConfigError
from hamacho.predictor import check_cut
from hamacho.serve.db import ModelRow
from hamacho.serve.deps import ServiceDep, SessionDep
from hamacho.serve.model_catalog import model_by_ref
from hamacho.serve.prediction_store import (
    picture_path,
    predict_and_store,
    read_server_images,
    remove_predictions,
)
from hamacho.serve.schemas import (
    PredictionOut,
    PredictOut,
    SkippedOut,
)
from hamacho.serve.service import API, Service, read_uploads
from hamacho.serve.storage import Skipped
from hamacho.serve.threshold_versions import current_cuts

router = APIRouter(tags=["predict"])
MAX_IMAGES = 100


def prediction_out(data: dict[str, Any], result_id: int | None) -> PredictionOut:
    """The API's view of a stored prediction."""
    base = f"{API}/predictions/{data['folder']}"
    ok = data.get("error") is None
    return PredictionOut(**{k: v for k, v in data.items() if k in PredictionOut.model_fields},
                         image_url=f"{base}/image" if ok else None,
                         heatmap_url=f"{base}/heatmap.png" if ok else None,
                         segmentation_url=f"{base}/segmentation.png" if ok else None,
                         map_url=f"{base}/map.png" if ok else None, result_id=result_id)


def _predict(service: Service, session: Session, row: ModelRow, received: list[tuple[str, bytes]], paths: list[str],
             image_cut: float, pixel_cut: float, save: bool, skipped: list[Skipped],
             version: int | None) -> tuple[PredictOut, list[str]]:
    """Read the server-side images, score and store those that decode (on a worker thread); also return unsaved
    folders to drop."""
    received = received + read_server_images(service.config, paths)
    stored = predict_and_store(service, session, row, received, image_cut, pixel_cut, save, skipped, version)
    items = [prediction_out(record, result_id) for record, result_id in zip(stored.records, stored.result_ids)]
    return PredictOut(model_id=row.id, model_tag=row.tag, items=items,
                      skipped=[SkippedOut(name=s.name, reason=s.reason) for s in stored.skipped]), stored.dropped


@router.post("/models/{ref}/predict", response_model=PredictOut)
async def predict(ref: str, background: BackgroundTasks, service: ServiceDep, session: SessionDep,
                  files: list[UploadFile] = File(default=[], description="Images (repeat the field)"),
                  paths: list[str] = Form(default=[], description="Server-side image files (repeat the field)"),
                  image_threshold: float | None = Form(None, description="0..1; default: the model's current version"),
                  pixel_threshold: float | None = Form(None, description="0..1; default: the model's current version"),
                  save: bool = Form(False)) -> PredictOut:
    """Score images with a model (loaded first if it is not in memory); ``save`` keeps them as results. File by
    file: files that do not decode are listed in ``skipped``; 400 only when none could be scored. Cuts not given
    are the model's current threshold version's, whose number each prediction records."""
    try:
        given = {level: None if cut is None else check_cut(f"{level}_threshold", cut)
                 for level, cut in (("image", image_threshold), ("pixel", pixel_threshold))}
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from exc
    files = [f for f in files if isinstance(f, StarletteUpload)]
    if not files and not paths:
        raise HTTPException(400, "send images in 'files' or server-side paths in 'paths'")
    if len(files) + len(paths) > MAX_IMAGES:
        raise HTTPException(400, f"at most {MAX_IMAGES} images per request")
    row = model_by_ref(session, ref)
    current = current_cuts(session, row)
    image_cut = current.image if given["image"] is None else given["image"]
    pixel_cut = current.pixel if given["pixel"] is None else given["pixel"]
    version = current.version if (image_cut, pixel_cut) == (current.image, current.pixel) else None
    received, skipped = await read_uploads(files, service.config.max_file_bytes)
    result, dropped = await run_in_threadpool(_predict, service, session, row, received, paths, image_cut, pixel_cut,
                                              save, skipped, version)
    if dropped:
        background.add_task(remove_predictions, service.config.data_dir, dropped)
    return result


@router.get("/predictions/{folder}/{name}")
def prediction_file(folder: str, name: str, service: ServiceDep) -> FileResponse:
    """A prediction's picture: image, heatmap.png, segmentation.png, map.png (normalized map) or mask.png."""
    path = picture_path(service.config.data_dir, folder, name)
    return FileResponse(path) if name == "image" else FileResponse(path, media_type="image/png")
