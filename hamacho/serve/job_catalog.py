"""Training jobs as requests see them: the checks before one is queued, listing, cancelling.

A job is checked in full before anything is queued: this install can train, its settings are valid,
the server-side files they name (backbone weights, a valid-area mask) lie inside the allowed roots, its
model tag is free, its images exist and include at least two good ones. The job row is added and the
queue woken only then (:mod:`.job_queue` runs it).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from hamacho.extras import training_unavailable
from hamacho.serve.db import ACTIVE_JOB_STATES, ImageRow, JobRow, ModelRow
from hamacho.serve.model_catalog import ensure_free_tag
from hamacho.serve.schemas import JobIn
from hamacho.serve.service import Conflict, NotFound, Service, Unavailable, find_model, get_row, paged
from hamacho.serve.storage import InputError, allowed_path
from hamacho.serve.weights_check import imagenet_problem
from hamacho.serve.worker import job_settings
from hamacho.settings import Settings

WEIGHT_WORDS = ("imagenet", "none")
WEIGHT_SUFFIXES = (".pth", ".pt")  # torchvision's state-dict files
MAX_SCANNED = 20_000  # files looked at per root when listing weight files (an import folder may hold images)
JobAndModel = tuple[JobRow, ModelRow | None]  # a job and the model it made (None until it succeeded)


def check_server_paths(settings: Settings, roots: list[Path]) -> None:
    """Refuse settings whose server-side files (backbone weights, valid-area mask) lie outside ``roots``.

    The worker reads those files: a job may name only what a request could register itself. Weights
    given as ``imagenet`` or ``none`` name no file.

    Raises:
        InputError: A path outside the roots, or missing.
    """
    weights = settings.model.backbone_weights
    if weights and weights.lower() not in WEIGHT_WORDS:
        allowed_path(weights, roots)
    if settings.dataset.valid_area_mask:
        allowed_path(settings.dataset.valid_area_mask, roots)


def weight_files(roots: list[Path], limit: int = 200) -> list[Path]:
    """Backbone weight files (``*.pth``, ``*.pt``; not Hamacho's own ``model.pt``) inside the allowed roots, for a
    job's ``model.backbone_weights``: sorted, at most ``limit``, hidden folders and files skipped, at most
    :data:`MAX_SCANNED` files looked at per root."""
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for seen, path in enumerate(sorted(root.rglob("*"))):
            if seen >= MAX_SCANNED or len(found) >= limit:
                break
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            if (not hidden and path.suffix.lower() in WEIGHT_SUFFIXES and path.name != "model.pt"
                    and path.is_file()):
                try:
                    found.append(allowed_path(str(path), roots))
                except InputError:  # a link out of the roots
                    continue
    return sorted(set(found))[:limit]


def queue_job(service: Service, session: Session, order: JobIn) -> JobRow:
    """Check a job (see the module docstring), add its row and wake the queue.

    Args:
        service: The running service (allowed roots, the queue).
        session: The request's session, outside a transaction.
        order: The request's job.

    Returns:
        The queued job's row.

    Raises:
        Unavailable: This install has no PyTorch (checked first, before anything else).
        InputError: Not exactly one of tag and image ids; invalid settings; a server-side path refused; ImageNet
            weights this server can neither find nor download (:mod:`~hamacho.serve.weights_check`); fewer
            than 2 good images.
        Conflict: The model tag is taken by a model or an unfinished job.
        NotFound: An image id, or the model to compare with, that does not exist.
    """
    missing = training_unavailable()
    if missing:
        raise Unavailable(missing)
    if (order.tag is None) == (order.image_ids is None):
        raise InputError("give exactly one of tag and image_ids")
    settings = job_settings(order.model, order.parameters)
    check_server_paths(settings, service.config.allowed_roots)
    if (settings.model.backbone_weights or "").lower() == "imagenet":
        with session.begin():  # every cheap refusal first: the weights check may ask the network
            _chosen_images(session, order)
        problem = imagenet_problem(settings.model.backbone, service.config.offline, service.config.allowed_roots)
        if problem:
            raise InputError(problem)
    with session.begin():  # (again after the weights check: another request may have taken the tag meanwhile)
        earlier, chosen = _chosen_images(session, order)
        counts = {group: sum(1 for _, g in chosen if g == group) for group in ("good", "bad", "mask")}
        row = JobRow(model_tag=order.model_tag, model=settings.model.name, parameters=json.dumps(order.parameters),
                     image_ids=json.dumps([image_id for image_id, _ in chosen]), counts=json.dumps(counts),
                     tag=order.tag, compare_with=earlier)
        session.add(row)
    service.runner.wake()
    return row


def _chosen_images(session: Session, order: JobIn) -> tuple[int | None, list[tuple[int, str]]]:
    """A job's refusals that need the database (caller's transaction): a taken model tag, a missing model to
    compare with or image id, fewer than 2 good images. Returns the compared model's id and ``(id, group)`` of
    the images."""
    ensure_free_tag(session, order.model_tag)
    earlier = find_model(session, order.compare_with).id if order.compare_with is not None else None
    query = select(ImageRow.id, ImageRow.group)
    query = query.where(ImageRow.tag == order.tag) if order.tag is not None else query.where(
        ImageRow.id.in_(order.image_ids or []))
    chosen = [(image_id, group) for image_id, group in session.execute(query)]
    if order.image_ids is not None:
        absent = sorted(set(order.image_ids) - {image_id for image_id, _ in chosen})
        if absent:
            raise NotFound(f"no image with id {absent[0]}" + (
                f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
    goods = sum(1 for _, group in chosen if group == "good")
    if goods < 2:
        where = f"tag {order.tag!r}" if order.tag is not None else "the given images"
        raise InputError(f"{where} has {goods} good image(s); training needs at least 2")
    return earlier, chosen


def _with_models(session: Session, rows: list[JobRow]) -> list[JobAndModel]:
    models = {m.id: m for m in session.scalars(select(ModelRow).where(
        ModelRow.id.in_([row.model_id for row in rows if row.model_id is not None])))}
    return [(row, models.get(row.model_id) if row.model_id is not None else None) for row in rows]


def jobs_page(session: Session, status: str | None, offset: int, limit: int) -> tuple[int, list[JobAndModel]]:
    """``(total, one page)`` of the jobs of a status (None: any), newest first, with their models."""
    query = select(JobRow) if status is None else select(JobRow).where(JobRow.status == status)
    with session.begin():
        total, rows = paged(session, query, JobRow.id.desc(), offset, limit)
        return total, _with_models(session, rows)


def job_and_model(session: Session, job_id: int, fresh: bool = False) -> JobAndModel:
    """One job and its model.

    Args:
        session: The request's session, outside a transaction.
        job_id: The job.
        fresh: Read it again from the database even if this session read it before.

    Raises:
        NotFound: No job with that id.
    """
    with session.begin():
        row = get_row(session, JobRow, job_id, "job", fresh=fresh)
        return _with_models(session, [row])[0]


def request_cancel(service: Service, session: Session, job_id: int) -> JobAndModel:
    """Cancel a queued job, or ask a running one to stop at its next step; return it as it is then.

    Raises:
        NotFound: No job with that id.
        Conflict: The job has already ended.
    """
    row, _model = job_and_model(session, job_id)
    if row.status not in ACTIVE_JOB_STATES:
        raise Conflict(f"job {job_id} has already ended ({row.status})")
    service.runner.cancel(job_id)
    return job_and_model(session, job_id, fresh=True)


def active_counts(session: Session) -> dict[str, int]:
    """Jobs queued and running now (``{"queued": n, "running": m}``), after checking the database answers."""
    with session.begin():
        session.execute(text("SELECT 1"))
        counts = dict(session.execute(select(JobRow.status, func.count()).where(
            JobRow.status.in_(("queued", "running"))).group_by(JobRow.status)).all())
    return {"queued": counts.get("queued", 0), "running": counts.get("running", 0)}
