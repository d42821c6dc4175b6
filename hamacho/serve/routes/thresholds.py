"""A model's threshold versions: list, save the next one, make one current (roll back)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from hamacho.serve.deps import SessionDep
from hamacho.serve.schemas import MAX_ID, ThresholdIn, ThresholdList, ThresholdOut
from hamacho.serve.threshold_versions import Cuts, all_versions, make_current, save_version

router = APIRouter(tags=["models"])
Version = Annotated[int, Path(ge=0, le=MAX_ID, description="0: the trained thresholds")]


def threshold_out(cuts: Cuts) -> ThresholdOut:
    """The API's view of a threshold version."""
    return ThresholdOut(version=cuts.version, image=cuts.image, pixel=cuts.pixel, created_at=cuts.created_at,
                        created_by=cuts.created_by, note=cuts.note)


@router.get("/models/{ref}/thresholds", response_model=ThresholdList)
def list_thresholds(ref: str, session: SessionDep) -> ThresholdList:
    """Every threshold version of a model, oldest first (0: the trained ones), and the current one."""
    current, versions = all_versions(session, ref)
    return ThresholdList(current=current, items=[threshold_out(cuts) for cuts in versions])


@router.post("/models/{ref}/thresholds", status_code=201, response_model=ThresholdOut)
def save_thresholds(ref: str, body: ThresholdIn, session: SessionDep) -> ThresholdOut:
    """Save cuts as the model's next threshold version and make it current; the older versions are kept."""
    return threshold_out(save_version(session, ref, body.image, body.pixel, body.by or None, body.note or None))


@router.post("/models/{ref}/thresholds/{version}/activate", response_model=ThresholdOut)
def activate_thresholds(ref: str, version: Version, session: SessionDep) -> ThresholdOut:
    """Make a threshold version current again (a roll-back; 0 is the trained thresholds)."""
    return threshold_out(make_current(session, ref, version))
