"""The state one running service shares between requests, the service's refusals, and the helpers of its layer.

Below the routes, the service layer (this module and :mod:`.image_catalog`, :mod:`.job_catalog`,
:mod:`.model_catalog`, :mod:`.prediction_store`) speaks no HTTP statuses: it raises
:class:`~hamacho.serve.storage.InputError` (400), :class:`~hamacho.serve.storage.TooLarge` (413) and the
:class:`Refusal` kinds below, which the app answers with their statuses (``app.STATUS``).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi import UploadFile
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from hamacho.errors import HamachoError
from hamacho.post.normalization import raw_threshold
from hamacho.results.summary import RunSummary
from hamacho.serve.data_marker import adopt_data_folder
from hamacho.serve.db import ImageRow, ModelRow, ResultRow, open_database
from hamacho.serve.job_queue import JobRunner
from hamacho.serve.predictors import PredictorCache
from hamacho.serve.replicas import Replica
from hamacho.serve.schemas import TAG_PATTERN
from hamacho.serve.service_config import ServiceConfig
from hamacho.serve.storage import (
    IMAGES,
    MODELS,
    PREDICTIONS,
    TMP,
    InputError,
    Skipped,
    TooLarge,
    display_name,
    remove_orphans,
)

Row = TypeVar("Row")


class Refusal(HamachoError):
    """A request the service refuses, in one line it wrote itself (answered with that line, uncut)."""


class NotFound(Refusal):
    """No row with the id, tag or name a request gave (answered with 404)."""


class Conflict(Refusal):
    """The current state refuses the request: a tag in use, a model in use, a job that ended (409)."""


class Unavailable(Refusal):
    """A well-formed request this install cannot carry out: training without PyTorch (422)."""


API = "/api/v1"


@dataclass
class Service:
    """What the routes share (``app.state.service``)."""

    config: ServiceConfig
    factory: sessionmaker[Session]
    runner: JobRunner
    cache: PredictorCache
    replica: Replica
    lock: threading.Lock = field(default_factory=threading.Lock)
    unsaved: deque[str] = field(default_factory=deque)  # folders of unsaved predictions, oldest first

    def forget_old_unsaved(self, folders: list[str]) -> list[str]:
        """Remember unsaved predictions' folders; return those beyond ``keep_unsaved`` (oldest first)."""
        with self.lock:
            self.unsaved.extend(folders)
            return [self.unsaved.popleft() for _ in range(max(0, len(self.unsaved) - self.config.keep_unsaved))]

    @classmethod
    def open(cls, config: ServiceConfig) -> Service:
        """Open (or create) the data folder and database, and make both consistent after a crash.

        Raises:
            ConfigError: The database cannot be opened or is newer than this Hamacho.
        """
        if config.database_url is None:  # the default SQLite database lives in the data folder
            config.data_dir.mkdir(parents=True, exist_ok=True)
        factory = open_database(config.url)
        adopt_data_folder(factory, config.data_dir)  # before anything is written there
        for sub in (IMAGES, MODELS, PREDICTIONS, TMP):
            (config.data_dir / sub).mkdir(exist_ok=True)
        runner = JobRunner(factory, config.url, config.data_dir, config.workers, config.lease_seconds,
                           config.device)
        cache = PredictorCache(config.max_loaded, config.device)
        replica = Replica(factory, cache, config.data_dir, config.sync_seconds)
        service = cls(config, factory, runner, cache, replica)
        runner.recover()
        service.remove_orphans()
        replica.register()
        return service

    def remove_orphans(self) -> dict[str, int]:
        """Delete files no row lists and older than ``orphan_grace_seconds`` (left by a process killed mid-write);
        return counts per folder.

        Younger files are left alone: another replica may be writing them, or has not committed their row yet
        (every file is written before its row). Unsaved predictions are a cache: they go once that old too.
        """
        with self.factory() as session:
            images = {Path(p).name for p in session.scalars(select(ImageRow.stored))}
            models = {Path(p).name for p in session.scalars(select(ModelRow.folder))}
            results = {Path(p).name for p in session.scalars(select(ResultRow.folder))}
        data, grace = self.config.data_dir, self.config.orphan_grace_seconds
        return {"images": remove_orphans(data / IMAGES, images, grace),
                "models": remove_orphans(data / MODELS, models, grace),
                "predictions": remove_orphans(data / PREDICTIONS, results, grace),
                "tmp": remove_orphans(data / TMP, set(), grace)}

    def path(self, relative: str) -> Path:
        """A path under the data folder."""
        return self.config.data_dir / relative


def check_tag(tag: str | None, required: bool = False) -> str | None:
    """A tag as given, or None for none.

    Args:
        tag: The tag a request gave (None or empty for none).
        required: Refuse a missing tag too.

    Raises:
        InputError: Not 1 to 128 characters without control characters or slashes (or missing and ``required``).
    """
    if not tag and not required:
        return None
    if not tag or not re.fullmatch(TAG_PATTERN, tag):
        raise InputError("tag: 1 to 128 characters, no control characters or slashes")
    return tag


def get_row(session: Session, table: type[Row], row_id: int, what: str, fresh: bool = False) -> Row:
    """The row of ``table`` with ``row_id``, in the caller's transaction.

    Args:
        session: The request's session, in a transaction.
        table: The row class.
        row_id: Its primary key.
        what: How the refusal names the row (``image``, ``job``, ``result``).
        fresh: Read it again even if the session holds it (another process may have changed it).

    Raises:
        NotFound: ``no <what> with id N``.
    """
    row = session.get(table, row_id, populate_existing=fresh)
    if row is None:
        raise NotFound(f"no {what} with id {row_id}")
    return row


def find_model(session: Session, ref: str) -> ModelRow:
    """A model by id or tag (a number that is one model's id and another's tag finds the id), in the caller's
    transaction.

    Raises:
        NotFound: No model has that tag or id.
    """
    clauses = [ModelRow.tag == ref]
    if ref.isdigit() and len(ref) < 12:
        clauses.append(ModelRow.id == int(ref))
    row = session.scalar(select(ModelRow).where(or_(*clauses)).order_by(ModelRow.tag == ref))
    if row is None:
        raise NotFound(f"no model with id or tag {ref!r}")
    return row


def paged(session: Session, query: Select, order: Any, offset: int, limit: int) -> tuple[int, list[Any]]:
    """``(total rows, one page of rows)`` of a query, in ``order`` (one expression or a tuple of them; in the
    caller's transaction)."""
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ordered = query.order_by(*order) if isinstance(order, tuple) else query.order_by(order)
    return total, list(session.scalars(ordered.offset(offset).limit(limit)))


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    """An uploaded file's bytes, refused (413) over ``limit``."""
    name = display_name(upload.filename)
    if upload.size is not None and upload.size > limit:
        raise TooLarge(f"{name}: {upload.size} bytes is over the limit of {limit} bytes per file")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{name}: over the limit of {limit} bytes per file")
    return data


async def read_uploads(uploads: list[UploadFile], limit: int) -> tuple[list[tuple[str, bytes]], list[Skipped]]:
    """``(display name, bytes)`` of each upload within ``limit``, and the others skipped (over the limit)."""
    received, skipped = [], []
    for upload in uploads:
        try:
            received.append((display_name(upload.filename), await read_upload(upload, limit)))
        except TooLarge as exc:
            skipped.append(Skipped.of(display_name(upload.filename), exc))
    return received, skipped


def thresholds_out(summary: RunSummary, version: int = 0, cuts: tuple[float, float] = (0.5, 0.5)) -> dict:
    """``{"method", "rule", "version", "image": {"raw", "normalized", "source"}, "pixel": {...}, "false_alarms"}``
    from a model's summary and its current threshold version (number and normalized cuts; 0: the trained 0.5 and
    0.5); ``rule`` is what the method resolved to (``auto``: ``balanced``, ``fpr``, ``f1-bounded`` or ``f1``; None for models
    trained before it was recorded); ``false_alarms`` (None unless the good-image rule set or bounded the
    threshold) holds the good images it used and the expected false-alarm rate with its 95 % range (of the
    trained thresholds)."""
    calibration, given = summary.calibration, summary.thresholds
    out: dict = {"method": given.get("method"), "rule": given.get("rule"), "version": version}
    for level, cut in zip(("image", "pixel"), cuts):
        trained = calibration.get(f"{level}_threshold")
        try:
            raw = raw_threshold(calibration, level, cut) if cut != 0.5 else trained
        except KeyError:  # an old summary without the level's min and max
            raw = trained if cut == 0.5 else None
        out[level] = {"raw": raw, "normalized": cut, "source": given.get(level)}
    keys = ("good_images", "target_fpr", "expected_fpr", "expected_fpr_low", "expected_fpr_high", "good_images_above")
    out["false_alarms"] = {key: given[key] for key in keys} if all(key in given for key in keys) else None
    return out
