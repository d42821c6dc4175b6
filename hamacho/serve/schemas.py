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


class SkippedOut(BaseModel):
    """A file of a request that was not taken."""

    name: str
    reason: str = Field(description="Why, in one line: not a readable image, over a limit, a duplicate")


class ImageList(BaseModel):
    """A page of images; for a registration, the images it added and the files it skipped."""

    items: list[ImageOut]
    total: int = 0
    offset: int = 0
    limit: int = 0
    skipped: list[SkippedOut] = Field(default_factory=list, description="Registrations only: files not added")


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


# Keys the service sets itself; a job may not change them.
SERVICE_KEYS = ("dataset.root", "dataset.format", "dataset.good_dir", "dataset.bad_dir", "dataset.mask_dir",
                "dataset.mask_suffix", "dataset.file_list", "dataset.good_list", "dataset.bad_list",
                "dataset.mask_list", "dataset.name", "project.result_path", "dataset.num_workers",
                "model.name")

_JSON_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "list": "array"}


def parameters_schema() -> dict[str, Any]:
    """JSON schema of a job's ``parameters``: every key a job may set, over all models, with its type, bounds,
    choices, default and help from the settings classes (no torch). The service checks the values themselves
    with the configuration's own checks before a job is queued; this schema documents them (/docs)."""
    from hamacho.config_reference import model_settings
    from hamacho.models.registry import model_names

    properties: dict[str, Any] = {}
    for name in model_names():
        for info in model_settings(name):
            if info.key in SERVICE_KEYS or info.key in properties:
                continue
            schema: dict[str, Any] = {"description": info.help, "default": info.default}
            if info.type in _JSON_TYPES:
                schema["type"] = [_JSON_TYPES[info.type], "null"] if info.nullable else _JSON_TYPES[info.type]
            if info.choices is not None:
                schema["enum"] = list(info.choices)
            for word, value in (("minimum", info.minimum), ("exclusiveMinimum", info.exclusive_minimum),
                                ("maximum", info.maximum)):
                if value is not None:
                    schema[word] = value
            properties[info.key] = schema
    return {"type": "object", "properties": properties, "additionalProperties": False}


class JobIn(BaseModel):
    """A training job to start."""

    model_config = ConfigDict(extra="forbid")
    model_tag: str = Field(pattern=TAG_PATTERN)
    model: str = Field(default=DEFAULT_MODEL, description="A model name from /api/v1/options")
    tag: str | None = None
    image_ids: list[Id] | None = Field(default=None, max_length=100_000)
    parameters: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=lambda schema: schema.update(parameters_schema()),
        description="Configuration keys and values, e.g. {\"dataset.image_size\": [256, 320]}: every key of the "
        "model's settings (/api/v1/options, docs/config-reference.md), checked before queueing")
    compare_with: str | None = Field(
        None, description="A model (id or tag) to compare the new one with: its card then shows both models' metrics "
        "on the same held-out images (a retrain after a review)")


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
    attempt: int = Field(description="Runs started so far (a job whose worker died runs again, up to max_attempts)")
    max_attempts: int
    worker: str | None = Field(description="The worker running it now (host:pid:id), None when not running")
    created_at: str
    started_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None = None
    tag: str | None = Field(None, description="The dataset tag the images were chosen by (None: by id)")
    compare_with: int | None = Field(None, description="The model the new one is compared with")


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
    held_out: dict[str, Any] | None = Field(
        None, description="Metrics on labelled images that did not set the threshold (dataset.holdout); None: none "
        "were held out, and metrics are on the images that set it")
    comparison: dict[str, Any] | None = Field(
        None, description="The model this one was compared with, and both models' metrics on the same held-out "
        "images (before, after)")
    dataset_tag: str | None = Field(None, description="The dataset tag it was trained from (None: unknown)")
    synthetic_recall: dict[str, Any] | None = Field(
        None, description="Trained on good images alone: the share of synthetic defects (cut-paste patches, scratches, "
        "blotches) on held-out good images its threshold flags, an estimate: {images, defects, flagged, by_kind}")


class ModelList(BaseModel):
    """A page of models."""

    items: list[ModelOut]
    total: int
    offset: int
    limit: int


class LoadedOut(BaseModel):
    """One model in memory, on one replica or several."""

    id: int
    tag: str
    last_used: float = Field(description="Seconds since the epoch, the latest over the replicas holding it")
    replicas: list[str] = Field(description="Ids of the live replicas holding it")
    keep_loaded: bool = Field(description="Loaded with /load: every replica keeps it while it has room")


class LoadedList(BaseModel):
    """The models in the memory of the live replicas."""

    items: list[LoadedOut]
    max_loaded: int = Field(description="Models one replica keeps at most")
    replica: str = Field(description="The id of the replica that answered")


class ReplicaOut(BaseModel):
    """A live ``hamacho serve`` process on this database."""

    id: str
    host: str
    pid: int
    started_at: str
    models: list[int] = Field(description="Ids of the models it holds in memory")


class ReplicaList(BaseModel):
    """The live replicas, oldest first."""

    items: list[ReplicaOut]
    replica: str = Field(description="The id of the replica that answered")


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
    threshold_version: int | None = Field(
        None, description="The model's threshold version whose cuts decided, None for cuts of the request's own")
    verdict: Literal["correct", "false_alarm", "missed_defect"] | None = Field(
        None, description="A reviewer's verdict on a saved result (None: not reviewed)")
    reviewed_by: str | None = None
    reviewed_at: str | None = None
    review_note: str | None = None


class ReviewIn(BaseModel):
    """A reviewer's verdict on a saved result."""

    model_config = ConfigDict(extra="forbid")
    verdict: Literal["correct", "false_alarm", "missed_defect"] | None = Field(
        description="correct; false_alarm: an NG that is good; missed_defect: an OK that is defective; null clears")
    by: str | None = Field(None, max_length=128, description="Who reviewed it")
    note: str | None = Field(None, max_length=500)


class ReviewedToDatasetIn(BaseModel):
    """Reviewed results to add to a dataset tag with their corrected labels."""

    model_config = ConfigDict(extra="forbid")
    tag: str | None = Field(description="The dataset tag to add the images to (null: untagged)")
    model: str | None = Field(None, description="Only results of this model (id or tag)")
    result_ids: list[Id] | None = Field(None, max_length=10_000, description="Only these results (null: every "
                                        "reviewed result)")
    verdicts: list[Literal["correct", "false_alarm", "missed_defect"]] = Field(
        default_factory=lambda: ["false_alarm", "missed_defect"], min_length=1,
        description="Which verdicts to take: false alarms are added as good images, missed defects as defective "
        "ones, correct results with their decision's label")


class ThresholdIn(BaseModel):
    """Cuts to save as a model's next threshold version."""

    model_config = ConfigDict(extra="forbid")
    image: float = Field(ge=0, le=1, description="Normalized OK/NG cut: a score at or above it is NG")
    pixel: float = Field(ge=0, le=1, description="Normalized cut of the defect masks")
    by: str | None = Field(None, max_length=128, description="Who saves it (shown in the history)")
    note: str | None = Field(None, max_length=500, description="Why, e.g. 'fewer false alarms on line 3'")


class ThresholdOut(BaseModel):
    """One threshold version of a model (0: the trained thresholds)."""

    version: int
    image: float
    pixel: float
    created_at: str | None
    created_by: str | None
    note: str | None


class ThresholdList(BaseModel):
    """A model's threshold versions, oldest first, and the one predictions use."""

    current: int
    items: list[ThresholdOut]


class PredictOut(BaseModel):
    """Predictions of one request, and the files it could not score."""

    model_id: int
    model_tag: str
    items: list[PredictionOut]
    skipped: list[SkippedOut] = Field(default_factory=list, description="Files not scored, with the reason")


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
