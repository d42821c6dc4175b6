"""The inspection log: every saved result, filtered, sorted and searched in the database, exported as CSV, and
reviewed: a reviewer marks a result correct, a false alarm (an NG that is good) or a missed defect (an OK that
is defective), with their name, the time and a note.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Select, false, func, select
from sqlalchemy.orm import Session, sessionmaker

from hamacho.serve.db import ModelRow, ResultRow, loads, utcnow
from hamacho.serve.service import find_model, get_row, paged
from hamacho.serve.storage import InputError

VERDICTS = ("correct", "false_alarm", "missed_defect")
VERDICT_FILTERS = ("none", "any", *VERDICTS)  # none: not reviewed yet; any: reviewed
# raw_score ranks the NG images whose normalized scores are all 1.0; unscored images (NULL) come last on
# every database (SQLite and PostgreSQL put NULLs at opposite ends by default)
SORTS = {"newest": (ResultRow.id.desc(),), "oldest": (ResultRow.id,),
         "score": (ResultRow.score.desc().nulls_last(), ResultRow.raw_score.desc().nulls_last(), ResultRow.id.desc()),
         "-score": (ResultRow.score.asc().nulls_last(), ResultRow.raw_score.asc().nulls_last(), ResultRow.id.desc())}
CSV_COLUMNS = ("result_id", "created_at", "model_id", "model_tag", "threshold_version", "name", "width", "height",
               "raw_score", "score", "decision", "image_threshold", "pixel_threshold", "verdict", "reviewed_by",
               "reviewed_at", "review_note")
CSV_BATCH = 500


@dataclass
class LogFilter:
    """What the log shows: each field None for no filter.

    Attributes:
        model: A model's id or tag.
        decision: ``OK`` or ``NG``.
        verdict: One of :data:`VERDICT_FILTERS`.
        since: First day (``YYYY-MM-DD``, UTC) included.
        until: Last day included.
        search: Part of the image's name (any case).
        sort: One of :data:`SORTS` (default newest first).
    """

    model: str | None = None
    decision: str | None = None
    verdict: str | None = None
    since: str | None = None
    until: str | None = None
    search: str | None = None
    sort: str = "newest"


def _day(text: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{what}: {text!r} is not a date (YYYY-MM-DD)") from None


def log_query(session: Session, wanted: LogFilter) -> Select:
    """The saved results ``wanted`` selects, unordered (caller's transaction).

    Raises:
        InputError: A decision, verdict, date or sort that is not one of the choices.
        NotFound: No such model.
    """
    query = select(ResultRow)
    if wanted.model is not None:
        query = query.where(ResultRow.model_id == find_model(session, wanted.model).id)
    if wanted.decision is not None:
        if wanted.decision not in ("OK", "NG"):
            raise InputError(f"decision: {wanted.decision!r} is not OK or NG")
        query = query.where(ResultRow.decision == wanted.decision)
    if wanted.verdict is not None:
        if wanted.verdict not in VERDICT_FILTERS:
            raise InputError(f"verdict: {wanted.verdict!r} is not one of {', '.join(VERDICT_FILTERS)}")
        query = query.where(ResultRow.verdict.is_(None) if wanted.verdict == "none" else
                            ResultRow.verdict.is_not(None) if wanted.verdict == "any" else
                            ResultRow.verdict == wanted.verdict)
    since = _day(wanted.since, "since") if wanted.since else None
    until = _day(wanted.until, "until") if wanted.until else None
    if since and until and until < since:
        query = query.where(false())
    if since:
        query = query.where(ResultRow.created_at >= since.isoformat())
    if until:
        query = query.where(ResultRow.created_at < (until + dt.timedelta(days=1)).isoformat())
    if wanted.search:
        query = query.where(func.lower(ResultRow.name).contains(wanted.search.lower(), autoescape=True))
    if wanted.sort not in SORTS:
        raise InputError(f"sort: {wanted.sort!r} is not one of {', '.join(SORTS)}")
    return query


def log_page(session: Session, wanted: LogFilter, offset: int, limit: int) -> tuple[int, list[ResultRow]]:
    """``(total, one page)`` of the log (own transaction)."""
    with session.begin():
        return paged(session, log_query(session, wanted), SORTS[wanted.sort], offset, limit)


def log_csv(factory: sessionmaker[Session], wanted: LogFilter) -> Iterator[str]:
    """The whole log as CSV text, a header then a few hundred rows per piece (each piece its own session and
    transaction, so a long export holds none open while the client reads). Checks the filter at once.

    Raises:
        InputError, NotFound: As :func:`log_query`.
    """
    with factory() as session, session.begin():
        log_query(session, wanted)  # refuse a bad filter before the answer starts
        tags = dict(session.execute(select(ModelRow.id, ModelRow.tag)).all())

    def pieces() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        offset = 0
        while True:
            with factory() as session, session.begin():
                rows = list(session.scalars(log_query(session, wanted).order_by(*SORTS[wanted.sort])
                                            .offset(offset).limit(CSV_BATCH)))
            for row in rows:
                writer.writerow(_csv_row(row, tags.get(row.model_id, "")))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < CSV_BATCH:
                return
            offset += CSV_BATCH

    return pieces()


def _csv_row(row: ResultRow, tag: str) -> list:
    data = loads(row.data) or {}
    cut = lambda level: (data.get(f"{level}_threshold") or {}).get("normalized")
    return [row.id, row.created_at, row.model_id, tag, data.get("threshold_version"), row.name, data.get("width"),
            data.get("height"), data.get("raw_score"), row.score, row.decision, cut("image"), cut("pixel"), row.verdict,
            row.reviewed_by, row.reviewed_at, row.review_note]


def review(session: Session, result_id: int, verdict: str | None, by: str | None, note: str | None) -> ResultRow:
    """Record a reviewer's verdict on a saved result (None clears it) (own transaction).

    Raises:
        NotFound: No such result.
        InputError: Not a verdict, a verdict on a result that has no decision, or one that contradicts the
            decision (a false alarm is an NG result, a missed defect an OK one).
    """
    if verdict is not None and verdict not in VERDICTS:
        raise InputError(f"verdict: {verdict!r} is not one of {', '.join(VERDICTS)} (or null to clear it)")
    with session.begin():
        row = get_row(session, ResultRow, result_id, "result")
        if verdict is not None and row.decision not in ("OK", "NG"):
            raise InputError(f"result {result_id} was not scored (its image could not be read): there is no "
                             "decision to review")
        if verdict == "false_alarm" and row.decision != "NG":
            raise InputError(f"result {result_id} is {row.decision}: only an NG result can be a false alarm")
        if verdict == "missed_defect" and row.decision != "OK":
            raise InputError(f"result {result_id} is {row.decision}: only an OK result can be a missed defect")
        row.verdict, row.reviewed_by, row.review_note = verdict, by if verdict else None, note if verdict else None
        row.reviewed_at = utcnow() if verdict else None
        return row
