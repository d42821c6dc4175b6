"""Threshold versions of a model: the cuts a QE tuned and saved, kept with who and when, and the one in use.

Version 0 is the trained thresholds (0.5 on both normalized scales, the F1 or good-image rule of the run);
each save adds the next version and makes it current, older ones are kept, and any version can be made current
again (a roll-back is a choice of version, never a deletion). A prediction that names no cuts uses the current
version and records its number; one that names its own cuts records none unless they are a version's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hamacho.serve.db import ModelRow, ThresholdRow, saved_threshold, utcnow
from hamacho.serve.service import NotFound, find_model

TRAINED = 0  # the version of the trained thresholds


@dataclass
class Cuts:
    """One threshold version: normalized OK/NG (``image``) and mask (``pixel``) cuts, 0..1."""

    version: int
    image: float
    pixel: float
    created_at: str | None = None
    created_by: str | None = None
    note: str | None = None


def trained_cuts(row: ModelRow) -> Cuts:
    """Version 0: the thresholds the model was trained with."""
    return Cuts(TRAINED, 0.5, 0.5, row.created_at, None, "the trained thresholds")


def version_of(session: Session, row: ModelRow, version: int) -> Cuts:
    """One version of the model's cuts (caller's transaction).

    Raises:
        NotFound: The model has no such version.
    """
    if version == TRAINED:
        return trained_cuts(row)
    saved = saved_threshold(session, row.id, version)
    if saved is None:
        raise NotFound(f"model {row.tag!r} has no threshold version {version}")
    return Cuts(saved.version, saved.image, saved.pixel, saved.created_at, saved.created_by, saved.note)


def current_cuts(session: Session, row: ModelRow) -> Cuts:
    """The version predictions use now (own transaction)."""
    with session.begin():
        fresh = session.get(ModelRow, row.id, populate_existing=True)
        if fresh is None:
            raise NotFound(f"no model with id or tag {row.tag!r}")
        return version_of(session, fresh, fresh.threshold_version)


def all_versions(session: Session, ref: str) -> tuple[int, list[Cuts]]:
    """``(current version, every version oldest first)`` of a model (own transaction).

    Raises:
        NotFound: No such model.
    """
    with session.begin():
        row = find_model(session, ref)
        saved = session.scalars(select(ThresholdRow).where(ThresholdRow.model_id == row.id)
                                .order_by(ThresholdRow.version))
        return row.threshold_version, [trained_cuts(row), *(Cuts(s.version, s.image, s.pixel, s.created_at,
                                                                 s.created_by, s.note) for s in saved)]


def save_version(session: Session, ref: str, image: float, pixel: float, by: str | None, note: str | None) -> Cuts:
    """Add the next version of a model's cuts and make it current (own transaction, the model's row locked).

    Raises:
        NotFound: No such model.
    """
    with session.begin():
        row = find_model(session, ref)
        session.execute(select(ModelRow.id).where(ModelRow.id == row.id).with_for_update())  # versions in order
        last = session.scalar(select(func.max(ThresholdRow.version)).where(ThresholdRow.model_id == row.id))
        saved = ThresholdRow(model_id=row.id, version=(last or TRAINED) + 1, image=image, pixel=pixel,
                             created_at=utcnow(), created_by=by, note=note)
        session.add(saved)
        row.threshold_version = saved.version
        return Cuts(saved.version, image, pixel, saved.created_at, by, note)


def make_current(session: Session, ref: str, version: int) -> Cuts:
    """Make an existing version current (a roll-back, or forward again) (own transaction).

    Raises:
        NotFound: No such model or version.
    """
    with session.begin():
        row = find_model(session, ref)
        cuts = version_of(session, row, version)
        row.threshold_version = version
        return cuts
