"""Models as requests see them: tags, what a model's answer shows, imports, files, deleting, loading.

A model tag names one model: it is refused while a model or an unfinished job has it (:func:`tag_in_use`),
for imports and for new jobs alike. An import is staged in ``tmp/``, checked by loading it, moved into
``models/`` and given its row in one step: a refused or failed import leaves no folder and no row.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hamacho.results.summary import RunSummary
from hamacho.serve.db import ACTIVE_JOB_STATES, JobRow, LoadedModelRow, ModelRow, ResultRow, ThresholdRow
from hamacho.serve.model_files import (
    MODEL_FILE,
    checked_import,
    is_torch_file,
    stage_dir,
    unpack_zip,
    zip_folder,
)
from hamacho.serve.replicas import ModelBusy, held_models, lock_for_delete
from hamacho.serve.service import Conflict, NotFound, Service, check_tag, find_model, paged
from hamacho.serve.storage import InputError, TooLarge, allowed_path, remove_tree

EXAMPLE_PICTURES = 8
CHUNK = 1 << 20


@dataclass
class ModelView:
    """A model row with what its answer shows besides the columns.

    Attributes:
        row: The model's row.
        summary: Its run summary (metrics, thresholds, dataset facts, config).
        report: Its folder has a training report to show.
        pictures: Example report pictures, relative to the folder's ``images/`` (trained models only).
        loaded: A live replica holds it in memory (as the replicas last published: ``replicas.py``).
        cuts: Its current threshold version's normalized (image, pixel) cuts.
        dataset_tag: The tag of the images its training job chose (None: chosen by id, or imported).
    """

    row: ModelRow
    summary: RunSummary
    report: bool
    pictures: list[str]
    loaded: bool
    cuts: tuple[float, float] = (0.5, 0.5)
    dataset_tag: str | None = None


@dataclass
class Download:
    """What a model's download sends: a file, its name for the client, its type, and whether it is a
    temporary zip to remove once sent."""

    path: Path
    filename: str
    media_type: str
    temporary: bool


def example_pictures(folder: Path) -> list[str]:
    """Up to :data:`EXAMPLE_PICTURES` report pictures (paths relative to ``folder``), shared fairly among its
    subfolders (defect types first: ``bad/`` sorts before ``good/``); none when there is no folder."""
    groups: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.png")) if folder.is_dir() else []:
        relative = path.relative_to(folder).as_posix()
        groups.setdefault(relative.rpartition("/")[0], []).append(relative)
    chosen: list[str] = []
    while len(chosen) < EXAMPLE_PICTURES and any(groups.values()):
        for names in groups.values():
            if names and len(chosen) < EXAMPLE_PICTURES:
                chosen.append(names.pop(0))
    return chosen


def model_view(service: Service, row: ModelRow, loaded: bool, cuts: tuple[float, float] = (0.5, 0.5),
               dataset_tag: str | None = None) -> ModelView:
    """What a model's answer shows: its summary, report, example pictures, whether it is ``loaded``, its
    current ``cuts`` and the ``dataset_tag`` it was trained from."""
    summary = RunSummary.from_json(row.summary)
    folder = service.path(row.folder)
    pictures = example_pictures(folder / "images") if row.source == "trained" else []
    report = bool(summary.report) and (folder / "report.html").is_file()
    return ModelView(row, summary, report, pictures, loaded, cuts, dataset_tag)


def model_views(service: Service, session: Session, rows: list[ModelRow]) -> list[ModelView]:
    """:func:`model_view` of each row, with whether a live replica holds it and its current threshold version's
    cuts (own transaction)."""
    with session.begin():
        held = held_models(session, [row.id for row in rows])
        saved = {(t.model_id, t.version): (t.image, t.pixel) for t in session.scalars(select(ThresholdRow).where(
            ThresholdRow.model_id.in_([row.id for row in rows if row.threshold_version]),
            ThresholdRow.version > 0))}
        tags = dict(session.execute(select(JobRow.id, JobRow.tag).where(
            JobRow.id.in_([row.job_id for row in rows if row.job_id is not None]))).all())
    return [model_view(service, row, row.id in held, saved.get((row.id, row.threshold_version), (0.5, 0.5)),
                       tags.get(row.job_id)) for row in rows]


def tag_in_use(session: Session, tag: str) -> str | None:
    """Why a model tag cannot be given to a new model, or None when it is free (caller's transaction)."""
    if session.scalar(select(ModelRow.id).where(ModelRow.tag == tag)) is not None:
        return f"model tag {tag!r} is already used by a model; choose another or delete that model"
    job = session.scalar(select(JobRow.id).where(JobRow.model_tag == tag, JobRow.status.in_(ACTIVE_JOB_STATES)))
    if job is not None:
        return f"model tag {tag!r} is already used by job {job}, which has not finished"
    return None


def ensure_free_tag(session: Session, tag: str) -> None:
    """Refuse a model tag in use (caller's transaction).

    Raises:
        Conflict: With :func:`tag_in_use`'s reason.
    """
    problem = tag_in_use(session, tag)
    if problem:
        raise Conflict(problem)


def check_new_tag(session: Session, tag: str) -> None:
    """Refuse a new model's tag early, before an import's work (:func:`add_imported` checks it again).

    Raises:
        InputError: Not a valid tag.
        Conflict: The tag is in use.
    """
    check_tag(tag, required=True)
    with session.begin():
        ensure_free_tag(session, tag)


def model_by_ref(session: Session, ref: str) -> ModelRow:
    """A model by id or tag (see :func:`~hamacho.serve.service.find_model`).

    Raises:
        NotFound: No such model.
    """
    with session.begin():
        return find_model(session, ref)


def models_page(session: Session, offset: int, limit: int) -> tuple[int, list[ModelRow]]:
    """``(total, one page)`` of the models, newest first."""
    with session.begin():
        return paged(session, select(ModelRow), ModelRow.id.desc(), offset, limit)


def remove_model(service: Service, session: Session, ref: str) -> None:
    """Delete a model's row and its saved results' rows (one transaction), then unload it and remove its files.

    Every replica stops serving it once this returns (each reads the row first) and frees its memory at its
    next sync (``replicas.py``).

    Raises:
        NotFound: No such model.
        Conflict: Predictions are using it now, on this replica or another (PostgreSQL).
    """
    with session.begin():
        row = find_model(session, ref)
        busy = service.cache.busy(row.id)
        if busy:
            raise Conflict(f"model {row.tag!r} is in use by {busy} prediction request(s); try again")
        try:
            lock_for_delete(session, row.id)
        except ModelBusy:
            raise Conflict(f"model {row.tag!r} is in use by a prediction request on another replica; "
                           "try again") from None
        folders = [row.folder, *session.scalars(select(ResultRow.folder).where(ResultRow.model_id == row.id))]
        session.execute(delete(ResultRow).where(ResultRow.model_id == row.id))
        session.execute(delete(LoadedModelRow).where(LoadedModelRow.model_id == row.id))
        session.delete(row)
        model_id = row.id
    service.cache.unload(model_id)
    for folder in folders:
        remove_tree(service.path(folder))


def stage_upload(data_dir: Path, stream: BinaryIO, limit: int) -> Path:
    """Write an uploaded model.pt or zipped export folder into a fresh staging folder (see :func:`add_imported`).

    Raises:
        TooLarge: Over ``limit`` bytes (a zip may unpack to four times that).
        InputError: Empty, or a zip that is not a safe export folder.
    """
    staged = stage_dir(data_dir)
    upload = staged.parent / f"{staged.name}.upload"
    try:
        size = 0
        with open(upload, "wb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the model file is over the limit of {limit} bytes")
                out.write(chunk)
        if size == 0:
            raise InputError("the model file is empty")
        if is_torch_file(upload):
            upload.rename(staged / MODEL_FILE)
        else:
            unpack_zip(upload, staged, limit * 4)
    except BaseException:
        remove_tree(staged)
        raise
    finally:
        remove_tree(upload)
    return staged


def stage_server_model(data_dir: Path, text: str, roots: list[Path]) -> Path:
    """Copy a server-side model.pt (with its metrics.json), results folder or export folder into a staging folder.

    Raises:
        InputError: Outside ``roots``, missing, or none of those.
    """
    path = allowed_path(text, roots)
    staged = stage_dir(data_dir)
    try:
        if path.is_file() or (path / MODEL_FILE).is_file():
            source = path if path.is_file() else path / MODEL_FILE
            shutil.copyfile(source, staged / MODEL_FILE)
            if (source.parent / "metrics.json").is_file():
                shutil.copyfile(source.parent / "metrics.json", staged / "metrics.json")
        elif (path / "metadata.json").is_file():
            shutil.copytree(path, staged / path.name, symlinks=False)
        else:
            raise InputError(f"{text}: not a model.pt, a results folder with one, or an export folder")
    except BaseException:
        remove_tree(staged)
        raise
    return staged


def add_imported(service: Service, session: Session, staged: Path, tag: str) -> ModelView:
    """Check a staged model by loading it, move it into ``models/`` and add its row, all or nothing.

    Args:
        service: The running service.
        session: The request's session, outside a transaction.
        staged: From :func:`stage_upload` or :func:`stage_server_model` (removed when the model is refused).
        tag: The new model's tag.

    Raises:
        InputError: Not a usable Hamacho model.
        Conflict: The tag was taken meanwhile (the moved folder is removed).
    """
    try:
        folder, values = checked_import(service.config.data_dir, staged, service.config.device)
    except BaseException:
        remove_tree(staged)
        raise
    try:
        with session.begin():
            ensure_free_tag(session, tag)
            summary = values.pop("summary")
            row = ModelRow(tag=tag, source="imported", folder=folder.as_posix(), summary=summary.to_json(), **values)
            session.add(row)
            session.flush()
            return model_view(service, row, False)
    except BaseException:
        remove_tree(service.path(folder.as_posix()))
        raise


def download_of(service: Service, row: ModelRow) -> Download:
    """A model's download: its model.pt, or its export folder zipped into ``tmp/``."""
    entry = service.path(row.folder) / row.entry
    if entry.is_file():
        return Download(entry, f"{row.tag}.pt", "application/octet-stream", temporary=False)
    return Download(zip_folder(entry, service.config.data_dir), f"{row.tag}-{row.format}.zip", "application/zip",
                    temporary=True)


def file_of_model(service: Service, row: ModelRow, name: str) -> Path:
    """A file of a model's folder (report.html, its figures and pictures; never the model file itself).

    Raises:
        InputError: A name with ``..`` or starting with ``/``.
        NotFound: No such file inside the folder.
    """
    folder = service.path(row.folder).resolve()
    if ".." in Path(name).parts or name.startswith("/"):
        raise InputError("'..' is not allowed in file names")
    path = (folder / name).resolve()
    if folder not in path.parents or not path.is_file() or path.name == MODEL_FILE:
        raise NotFound(f"model {row.tag!r} has no file {name!r}")
    return path


def load_into_memory(service: Service, session: Session, ref: str) -> None:
    """Load a model into memory here, and mark it kept: every replica loads it while it has room.

    Raises:
        NotFound: No such model.
    """
    with session.begin():
        row = find_model(session, ref)
        row.keep_loaded = True
        model_id, path, epoch = row.id, service.path(row.folder) / row.entry, row.memory_epoch
    service.cache.load(model_id, path, epoch)
    service.replica.publish()


def release_from_memory(service: Service, session: Session, ref: str) -> None:
    """Release a model from the memory of every replica: here at once, the others at their next sync.

    Raises:
        NotFound: No such model.
        Conflict: No replica holds it and none was asked to keep it.
    """
    with session.begin():
        row = find_model(session, ref)
        held = row.id in held_models(session, [row.id]) or service.cache.is_loaded(row.id) or row.keep_loaded
        if not held:
            raise Conflict(f"model {row.tag!r} is not loaded")
        row.keep_loaded = False
        row.memory_epoch += 1
        session.execute(delete(LoadedModelRow).where(LoadedModelRow.model_id == row.id))
        model_id = row.id
    service.cache.unload(model_id)
