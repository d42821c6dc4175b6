"""Training jobs: start (checked before any work), list, show, cancel."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException
from sqlalchemy import select

from hamacho.extras import training_unavailable
from hamacho.results.summary import RunSummary
from hamacho.serve.db import ACTIVE_JOB_STATES, ImageRow, JobRow, ModelRow, loads
from hamacho.serve.schemas import JobIn, JobList, JobOut, Limit, Offset, PathId
from hamacho.serve.service import API, Service, get_or_404, get_service, paged, thresholds_out
from hamacho.serve.storage import allowed_path
from hamacho.serve.worker import job_settings

router = APIRouter(tags=["jobs"])
WEIGHT_WORDS = ("imagenet", "none")


def job_out(row: JobRow, model: ModelRow | None = None) -> JobOut:
    """The API's view of a job row; a succeeded job's model adds its metrics, thresholds and report link."""
    result = None
    if model is not None:
        summary = RunSummary.from_json(model.summary)
        report = f"{API}/models/{model.id}/files/report.html" if summary.report else None
        result = {"metrics": summary.metrics, "thresholds": thresholds_out(summary), "report_url": report}
    return JobOut(result=result, id=row.id, model_tag=row.model_tag, model=row.model, status=row.status, phase=row.phase,
                  percent=row.percent, error=row.error, model_id=row.model_id, parameters=loads(row.parameters) or {},
                  images=loads(row.counts) or {}, cancel_requested=row.cancel_requested, created_at=row.created_at,
                  started_at=row.started_at, finished_at=row.finished_at)


def tag_in_use(session, tag: str) -> str | None:
    """Why a model tag cannot be given to a new model, or None when it is free."""
    if session.scalar(select(ModelRow.id).where(ModelRow.tag == tag)) is not None:
        return f"model tag {tag!r} is already used by a model; choose another or delete that model"
    job = session.scalar(select(JobRow.id).where(JobRow.model_tag == tag, JobRow.status.in_(ACTIVE_JOB_STATES)))
    if job is not None:
        return f"model tag {tag!r} is already used by job {job}, which has not finished"
    return None


@router.post("/jobs", status_code=202, response_model=JobOut)
def start_job(body: JobIn, service: Service = Depends(get_service)) -> JobOut:
    """Queue a training job on images chosen by ids or by tag; it runs in a worker process.

    An install without PyTorch (inference only: exported models) refuses every job at once with 422 and
    the ``pip install`` line, before anything is checked or queued: the request is well formed but cannot
    be carried out here. Not 503, which says "try again later" (no retry helps until PyTorch is installed),
    and not 501, which is about HTTP methods the server does not know.
    """
    missing = training_unavailable()
    if missing:
        raise HTTPException(422, missing)
    if (body.tag is None) == (body.image_ids is None):
        raise HTTPException(400, "give exactly one of tag and image_ids")
    settings = job_settings(body.model, body.parameters)
    weights = settings.model.backbone_weights
    if weights and weights.lower() not in WEIGHT_WORDS:
        allowed_path(weights, service.config.allowed_roots)
    if settings.dataset.valid_area_mask:  # read by the worker: a server-side path like the weights
        allowed_path(settings.dataset.valid_area_mask, service.config.allowed_roots)
    with service.factory() as session, session.begin():
        problem = tag_in_use(session, body.model_tag)
        if problem:
            raise HTTPException(409, problem)
        query = select(ImageRow.id, ImageRow.group)
        query = query.where(ImageRow.tag == body.tag) if body.tag is not None else query.where(
            ImageRow.id.in_(body.image_ids or []))
        chosen = list(session.execute(query))
        if body.image_ids is not None:
            missing = sorted(set(body.image_ids) - {image_id for image_id, _ in chosen})
            if missing:
                raise HTTPException(404, f"no image with id {missing[0]}" + (
                    f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        goods = sum(1 for _, group in chosen if group == "good")
        if goods < 2:
            where = f"tag {body.tag!r}" if body.tag is not None else "the given images"
            raise HTTPException(400, f"{where} has {goods} good image(s); training needs at least 2")
        counts = {group: sum(1 for _, g in chosen if g == group) for group in ("good", "bad", "mask")}
        row = JobRow(model_tag=body.model_tag, model=settings.model.name, parameters=json.dumps(body.parameters),
                     image_ids=json.dumps([image_id for image_id, _ in chosen]), counts=json.dumps(counts))
        session.add(row)
        session.flush()
        out = job_out(row)
    service.runner.wake()
    return out


@router.get("/jobs", response_model=JobList)
def list_jobs(status: str | None = None, offset: Offset = 0, limit: Limit = 50,
              service: Service = Depends(get_service)) -> JobList:
    """Jobs, newest first, optionally of one status."""
    query = select(JobRow) if status is None else select(JobRow).where(JobRow.status == status)
    with service.factory() as session:
        total, rows = paged(session, query, JobRow.id.desc(), offset, limit)
        models = {m.id: m for m in session.scalars(select(ModelRow).where(
            ModelRow.id.in_([row.model_id for row in rows if row.model_id is not None])))}
    return JobList(items=[job_out(row, models.get(row.model_id)) for row in rows], total=total, offset=offset,
                   limit=limit)


def _job(service: Service, job_id: int) -> JobOut:
    with service.factory() as session:
        row = get_or_404(session, JobRow, job_id, "job")
        return job_out(row, session.get(ModelRow, row.model_id) if row.model_id is not None else None)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: PathId, service: Service = Depends(get_service)) -> JobOut:
    """One job: status, phase, percent, error, and the model it made."""
    return _job(service, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: PathId, service: Service = Depends(get_service)) -> JobOut:
    """Cancel a queued job, or ask a running one to stop at its next step (409 for a finished job)."""
    job = _job(service, job_id)
    if job.status not in ACTIVE_JOB_STATES:
        raise HTTPException(409, f"job {job_id} has already ended ({job.status})")
    service.runner.cancel(job_id)
    return _job(service, job_id)
