"""Reviewed results into a dataset: a reviewer's corrections become training images with the right label.

A false alarm (an NG result a reviewer found good) is added as a good image, a missed defect (an OK result
that is defective) as a defective one; with ``correct`` asked for too, confirmed results are added with their
decision's label. The saved original image is registered like an upload (decode-checked, and skipped when the
tag already holds the same content), so adding the same reviews twice adds nothing the second time.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from hamacho.serve.db import ResultRow, loads
from hamacho.serve.image_catalog import Registered, check_and_register
from hamacho.serve.service import find_model
from hamacho.serve.service_config import ServiceConfig
from hamacho.serve.storage import InputError, NothingTaken, Skipped, refuse_all

CORRECTIONS = ("false_alarm", "missed_defect")
MAX_RESULTS = 10_000


def corrected_group(verdict: str, decision: str | None) -> str | None:
    """The dataset group a reviewed result belongs to: ``good``, ``bad``, or None (not reviewed)."""
    if verdict == "false_alarm":
        return "good"
    if verdict == "missed_defect":
        return "bad"
    if verdict == "correct" and decision in ("OK", "NG"):
        return "good" if decision == "OK" else "bad"
    return None


def add_reviewed(session: Session, config: ServiceConfig, tag: str | None, model: str | None,
                 result_ids: list[int] | None, verdicts: tuple[str, ...] = CORRECTIONS) -> Registered:
    """Add the original images of reviewed results to the tag ``tag`` with their corrected labels.

    Args:
        session: The request's session, outside a transaction.
        config: The service's settings (data folder, pixel limit).
        tag: The dataset tag to add to (None: untagged).
        model: Only results of this model (id or tag); None: any model.
        result_ids: Only these results; None: every reviewed result (of ``model``).
        verdicts: Which verdicts to take (default the corrections: false alarms and missed defects).

    Returns:
        The images added (good and defective) and the results skipped, with the reason.

    Raises:
        NotFound: ``model`` does not exist.
        InputError: No reviewed result matches, or every one was skipped (already in the tag, unreadable).
    """
    with session.begin():
        query = select(ResultRow).where(ResultRow.verdict.in_(verdicts)).order_by(ResultRow.id)
        if model is not None:
            query = query.where(ResultRow.model_id == find_model(session, model).id)
        if result_ids is not None:
            query = query.where(ResultRow.id.in_(result_ids))
        rows = list(session.scalars(query.limit(MAX_RESULTS)))
        picked = [(row.id, corrected_group(row.verdict or "", row.decision), row.folder, loads(row.data) or {})
                  for row in rows]
    if not picked:
        asked = " or ".join(v.replace("_", " ") for v in verdicts)
        raise InputError(f"no saved result marked {asked}" + (f" for model {model!r}" if model else "")
                         + ": review results in the inspection log first")
    received: dict[str, list[tuple[str, bytes]]] = {"good": [], "bad": []}
    skipped: list[Skipped] = []
    for result_id, group, folder, record in picked:
        name = str(record.get("name") or f"result-{result_id}")
        if group is None:  # reviewed before unscored results were refused a verdict
            skipped.append(Skipped(name, f"result {result_id} was not scored: no label to give it"))
            continue
        path = config.data_dir / folder / str(record.get("image") or "")
        try:
            data = Path(path).read_bytes()
        except OSError:
            skipped.append(Skipped(name, f"result {result_id}: its image file is gone"))
            continue
        received[group].append((name, data))
    added: list = []
    for group in ("good", "bad"):
        if not received[group]:
            continue
        try:
            registered = check_and_register(session, config, received[group], group, tag)
        except NothingTaken as exc:
            skipped.extend(exc.skipped)
            continue
        added.extend(registered.rows)
        skipped.extend(registered.skipped)
    if not added:
        raise refuse_all(skipped)
    return Registered(added, skipped)
