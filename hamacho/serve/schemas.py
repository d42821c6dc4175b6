"""Request and response bodies of the API (pydantic; they make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from hamacho.models.registry import DEFAULT_MODEL

Group = Literal["good", "bad", "mask"]
TAG_PATTERN = r"^[^\x00-\x1f/\\]{1,128}$"
MAX_ID = 2**62
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=10**9)]
Limit = Annotated[int, Query(ge=1, le=1000)]


class ImageOut(BaseModel):
    """A registered image or mask."""

    id: int
    name: str
    group: Group
    tag: str | None
    width: int
    height: int
    bytes: int
    mask_id: int | None = None
    image_id: int | None = None
    created_at: str
    file_url: str
    thumbnail_url: str


class ImageList(BaseModel):
    """A page of images."""

    items: list[ImageOut]
    total: int = 0
    offset: int = 0
    limit: int = 0


class PathsIn(BaseModel):
    """Server-side files or folders to register."""

    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, max_length=10_000)
    group: Group
    tag: str | None = Field(default=None, pattern=TAG_PATTERN)


class TagOut(BaseModel):
    """Images per group under one tag."""

    tag: str | None
    good: int
    bad: int
    mask: int


class TagList(BaseModel):
    """Every tag in use."""

    items: list[TagOut]


class Deleted(BaseModel):
    """How many things were deleted."""

    deleted: int


class JobIn(BaseModel):
    """A training job to start."""

    model_config = ConfigDict(extra="forbid")
    model_tag: str = Field(pattern=TAG_PATTERN)
    model: str = Field(default=DEFAULT_MODEL, description="A model name from /api/v1/options")
    tag: str | None = None
    image_ids: list[Id] | None = Field(default=None, max_length=100_000)
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Configuration keys and values, e.g. {\"dataset.image_size\": [256, 320]}: "
        "every key of the model's settings in /api/v1/options (docs/config-reference.md), checked before queueing")


class JobOut(BaseModel):
    """A training job and how far it is."""

    id: int
    model_tag: str
    model: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    phase: str
    percent: float
    error: str | None
    model_id: int | None
    parameters: dict[str, Any]
    images: dict[str, int]
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None = None


class JobList(BaseModel):
    """A page of jobs."""

    items: list[JobOut]
    total: int
    offset: int
    limit: int


class ModelOut(BaseModel):
    """A trained or imported model."""

    id: int
    tag: str
    model: str
    display_name: str
    backbone: str
    image_size: int | list[int]
    format: str
    source: Literal["trained", "imported"]
    job_id: int | None
    created_at: str
    metrics: dict[str, Any] | None
    thresholds: dict[str, Any]
    dataset: dict[str, Any] | None
    config: dict[str, Any] | None
    loaded: bool
    report_url: str | None
    pictures: list[str]
    download_url: str


class ModelList(BaseModel):
    """A page of models."""

    items: list[ModelOut]
    total: int
    offset: int
    limit: int


class LoadedOut(BaseModel):
    """One model in memory."""

    id: int
    tag: str
    last_used: float


class LoadedList(BaseModel):
    """The models in memory."""

    items: list[LoadedOut]
    max_loaded: int


class Cut(BaseModel):
    """A threshold on both scales."""

    normalized: float
    raw: float


class PredictionOut(BaseModel):
    """The outcome for one image."""

    name: str
    width: int | None
    height: int | None
    raw_score: float | None
    score: float | None
    decision: Literal["OK", "NG", ""]
    image_threshold: Cut
    pixel_threshold: Cut
    image_url: str | None
    heatmap_url: str | None
    segmentation_url: str | None
    map_url: str | None
    result_id: int | None
    model_id: int
    created_at: str
    error: str | None


class PredictOut(BaseModel):
    """Predictions of one request."""

    model_id: int
    model_tag: str
    items: list[PredictionOut]


class ResultList(BaseModel):
    """A page of saved results."""

    items: list[PredictionOut]
    total: int
    offset: int
    limit: int


class ImportPathIn(BaseModel):
    """A server-side model to import."""

    model_config = ConfigDict(extra="forbid")
    path: str
    tag: str = Field(pattern=TAG_PATTERN)
