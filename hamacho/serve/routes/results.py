"""The inspection log: saved results listed with filters, exported as CSV, reviewed, shown, deleted
(:mod:`hamacho.serve.inspection_log`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from hamacho.serve.db import ResultRow, loads
from hamacho.serve.deps import ServiceDep, SessionDep
from hamacho.serve.inspection_log import LogFilter, log_csv, log_page, review
from hamacho.serve.prediction_store import remove_result, saved_result
from hamacho.serve.reviewed_images import add_reviewed
from hamacho.serve.routes.images import images_listed
from hamacho.serve.routes.predict import prediction_out
from hamacho.serve.schemas import (
    Deleted,
    ImageList,
    Limit,
    Offset,
    PathId,
    PredictionOut,
    ResultList,
    ReviewedToDatasetIn,
    ReviewIn,
)
from hamacho.serve.service import check_tag

router = APIRouter(tags=["results"])


def result_out(row: ResultRow) -> PredictionOut:
    """The API's view of a saved result: its prediction and its review."""
    out = prediction_out(loads(row.data), row.id)
    out.verdict, out.reviewed_by, out.reviewed_at, out.review_note = (row.verdict, row.reviewed_by, row.reviewed_at,
                                                                      row.review_note)
    return out


def log_filter(model: str | None = Query(None, description="A model's id or tag"),
               decision: str | None = Query(None, description="OK or NG"),
               verdict: str | None = Query(None, description="none (not reviewed), any (reviewed), correct, "
                                                             "false_alarm or missed_defect"),
               since: str | None = Query(None, description="First day, YYYY-MM-DD (UTC)"),
               until: str | None = Query(None, description="Last day, YYYY-MM-DD (UTC)"),
               q: str | None = Query(None, max_length=255, description="Part of the image's name"),
               sort: str = Query("newest", description="newest (default), oldest, score (highest first) or -score"),
               ) -> LogFilter:
    """The log's filters from the query string (one dependency for the page and the CSV export)."""
    return LogFilter(model=model, decision=decision, verdict=verdict, since=since, until=until, search=q or None,
                     sort=sort)


LogFilterDep = Annotated[LogFilter, Depends(log_filter)]


@router.get("/results", response_model=ResultList)
def list_results(session: SessionDep, wanted: LogFilterDep, offset: Offset = 0, limit: Limit = 50) -> ResultList:
    """The inspection log: saved results, filtered, searched and sorted, a page at a time."""
    total, rows = log_page(session, wanted, offset, limit)
    return ResultList(items=[result_out(r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/results.csv")
def export_results(service: ServiceDep, wanted: LogFilterDep) -> StreamingResponse:
    """The inspection log as CSV (the same filters as ``/results``, every page), streamed."""
    return StreamingResponse(log_csv(service.factory, wanted), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="inspection-log.csv"'})


@router.post("/results/to-dataset", status_code=201, response_model=ImageList)
def reviewed_to_dataset(body: ReviewedToDatasetIn, service: ServiceDep, session: SessionDep) -> ImageList:
    """Add the images of reviewed results to a dataset tag with their corrected labels (a false alarm as a good
    image, a missed defect as a defective one), file by file as uploads are: images the tag already holds are
    skipped with their reason; 400 only when nothing was added. Train from the tag (with ``compare_with``) to see
    the new model beside the old one on the same held-out images."""
    tag = check_tag(body.tag)
    return images_listed(add_reviewed(session, service.config, tag, body.model, body.result_ids,
                                      tuple(body.verdicts)))


@router.put("/results/{result_id}/review", response_model=PredictionOut)
def review_result(result_id: PathId, body: ReviewIn, session: SessionDep) -> PredictionOut:
    """A reviewer's verdict on a saved result: correct, false_alarm (an NG that is good) or missed_defect (an OK
    that is defective); null clears it."""
    return result_out(review(session, result_id, body.verdict, body.by or None, body.note or None))


@router.get("/results/{result_id}", response_model=PredictionOut)
def get_result(result_id: PathId, session: SessionDep) -> PredictionOut:
    """One saved result."""
    return result_out(saved_result(session, result_id))


@router.delete("/results/{result_id}", response_model=Deleted)
def delete_result(result_id: PathId, service: ServiceDep, session: SessionDep) -> Deleted:
    """Delete a saved result and its pictures."""
    remove_result(session, service.config.data_dir, result_id)
    return Deleted(deleted=1)
