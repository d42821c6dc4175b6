"""Training jobs: start (checked before any work), list, show, cancel."""

from __future__ import annotations

from fastapi import APIRouter

from hamacho.results.summary import RunSummary
from hamacho.serve.db import JobRow, ModelRow, loads
from hamacho.serve.deps import ServiceDep, SessionDep
from hamacho.serve.job_catalog import job_and_model, jobs_page, queue_job, request_cancel, weight_files
from hamacho.serve.schemas import JobIn, JobList, JobOut, Limit, Offset, PathId
from hamacho.serve.service import API, thresholds_out

router = APIRouter(tags=["jobs"])


def job_out(row: JobRow, model: ModelRow | None = None) -> JobOut:
    """The API's view of a job row; a succeeded job's model adds its metrics, thresholds and report link."""
    result = None
    if model is not None:
        summary = RunSummary.from_json(model.summary)
        report = f"{API}/models/{model.id}/files/report.html" if summary.report else None
        result = {"metrics": summary.metrics, "thresholds": thresholds_out(summary), "report_url": report}
    return JobOut(result=result, id=row.id, model_tag=row.model_tag, model=row.model, status=row.status, phase=row.phase,
                  percent=row.percent, error=row.error, model_id=row.model_id, parameters=loads(row.parameters) or {},
                  images=loads(row.counts) or {}, cancel_requested=row.cancel_requested, attempt=row.attempts,
                  max_attempts=row.max_attempts, worker=row.owner if row.status == "running" else None,
                  created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at, tag=row.tag,
                  compare_with=row.compare_with)


@router.post("/jobs", status_code=202, response_model=JobOut)
def start_job(body: JobIn, service: ServiceDep, session: SessionDep) -> JobOut:
    """Queue a training job on images chosen by ids or by tag; it runs in a worker process.

    An install without PyTorch (inference only: exported models) refuses every job at once with 422 and
    the ``pip install`` line, before anything is checked or queued: the request is well formed but cannot
    be carried out here. Not 503, which says "try again later" (no retry helps until PyTorch is installed),
    and not 501, which is about HTTP methods the server does not know.
    """
    return job_out(queue_job(service, session, body))


@router.get("/jobs", response_model=JobList)
def list_jobs(session: SessionDep, status: str | None = None, offset: Offset = 0, limit: Limit = 50) -> JobList:
    """Jobs, newest first, optionally of one status."""
    total, rows = jobs_page(session, status, offset, limit)
    return JobList(items=[job_out(row, model) for row, model in rows], total=total, offset=offset, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: PathId, session: SessionDep) -> JobOut:
    """One job: status, phase, percent, error, and the model it made."""
    return job_out(*job_and_model(session, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: PathId, service: ServiceDep, session: SessionDep) -> JobOut:
    """Cancel a queued job, or ask a running one to stop at its next step (409 for a finished job)."""
    return job_out(*request_cancel(service, session, job_id))


@router.get("/weights")
def list_weight_files(service: ServiceDep) -> dict:
    """Backbone weight files a job may name (``model.backbone_weights``): ``*.pth`` and ``*.pt`` files inside the
    allowed folders (``hamacho serve --allow-path``), with the folders themselves."""
    files = weight_files(service.config.allowed_roots)
    return {"items": [{"path": str(path), "name": path.name, "bytes": path.stat().st_size} for path in files],
            "roots": [str(root) for root in service.config.allowed_roots]}
