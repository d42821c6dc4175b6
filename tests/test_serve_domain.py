"""The service layer without HTTP: mask linking, model tags, job checks, example pictures, model files.

These functions take a session (and a data folder) and raise the service's own errors; the app answers
those with their statuses (tests/test_serve_api.py checks the answers).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("sqlalchemy")
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hamacho.predictor import Prediction
from hamacho.serve.db import ImageRow, JobRow, ModelRow, ResultRow, open_database
from hamacho.serve.image_catalog import (
    check_and_register,
    check_link_to,
    image_and_mask,
    link_masks,
    register,
    remove_images,
)
from hamacho.serve.job_catalog import check_server_paths, queue_job, request_cancel
from hamacho.serve.model_catalog import (
    EXAMPLE_PICTURES,
    check_new_tag,
    ensure_free_tag,
    example_pictures,
    file_of_model,
    tag_in_use,
)
from hamacho.serve.prediction_store import predict_and_store
from hamacho.serve.schemas import JobIn
from hamacho.serve.service import Conflict, NotFound, Service
from hamacho.serve.service_config import ServiceConfig
from hamacho.serve.storage import InputError, check_image
from hamacho.serve.worker import job_settings
from tests.databases import service_database_url
from tests.serve_support import png_bytes


@pytest.fixture
def factory(database_url) -> sessionmaker[Session]:
    """A fresh database of each kind (SQLite: ``<tmp_path>/hamacho.db``)."""
    factory = open_database(database_url)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def session(factory) -> Session:
    """A session like a request's: no transaction unless a function opens one."""
    with factory(autobegin=False) as session:
        yield session


DISTINCT = itertools.count(1)  # grey levels of pictures that must differ (a tag refuses the same content twice)


def picture(value: int = 0) -> bytes:
    return png_bytes(np.full((8, 8, 3), value, np.uint8))


def add_images(session: Session, data_dir: Path, group: str, names: list[str], tag: str | None = "parts",
               link_to: int | None = None) -> list[ImageRow]:
    items = [(name, check_image(picture(next(DISTINCT) % 256), name, 10_000)) for name in names]  # no duplicates
    return [row for row, _mask in register(session, data_dir, items, group, tag, link_to).rows]


def mask_targets(session: Session) -> dict[str, str | None]:
    """``{mask name: name of its image}``."""
    with session.begin():
        names = dict(session.execute(select(ImageRow.id, ImageRow.name)).all())
        return {mask.name: names.get(mask.image_id) for mask in
                session.scalars(select(ImageRow).where(ImageRow.group == "mask"))}


def test_masks_link_by_name_stem_bad_images_first(session, tmp_path):
    add_images(session, tmp_path, "good", ["003.png", "004.png", "005.png"])
    add_images(session, tmp_path, "bad", ["003.jpg", "006.png"])
    add_images(session, tmp_path, "mask", ["003_mask.png", "004-mask.png", "006_gt.png", "005.png", "999_mask.png"])
    assert mask_targets(session) == {"003_mask.png": "003.jpg",  # the bad 003 before the good one
                                     "004-mask.png": "004.png", "006_gt.png": "006.png", "005.png": "005.png",
                                     "999_mask.png": None}  # no such image: stays unlinked
    # an image registered later gets its waiting mask; a second mask for a linked image does not link
    add_images(session, tmp_path, "good", ["999.png"])
    add_images(session, tmp_path, "mask", ["004_mask.png"])
    targets = mask_targets(session)
    assert targets["999_mask.png"] == "999.png" and targets["004_mask.png"] is None


def test_masks_link_within_their_tag_only(session, tmp_path):
    add_images(session, tmp_path, "good", ["001.png"], tag="a")
    add_images(session, tmp_path, "mask", ["001_mask.png"], tag="b")
    add_images(session, tmp_path, "mask", ["001_mask.png"], tag=None)
    assert set(mask_targets(session).values()) == {None}
    add_images(session, tmp_path, "good", ["001.png"], tag=None)
    with session.begin():
        untagged = session.scalars(select(ImageRow).where(ImageRow.group == "mask", ImageRow.tag.is_(None))).one()
        assert untagged.image_id is not None  # linked to the untagged 001.png
        link_masks(session, "b")  # nothing for tag b to link to: no change, no error


def test_link_to_links_one_mask_and_refuses_the_rest(session, tmp_path):
    good = add_images(session, tmp_path, "good", ["a.png"])[0].id  # (a refused request's rollback expires rows)
    mask = add_images(session, tmp_path, "mask", ["any-name.png"], link_to=good)[0]
    assert mask.image_id == good and image_and_mask(session, good)[1] == mask.id
    for link_to in (mask.id, 999):  # a mask, or nothing, is not an image to link to
        with pytest.raises(NotFound, match=f"link_to: no image with id {link_to}"):
            add_images(session, tmp_path, "mask", ["m.png"], link_to=link_to)
    with pytest.raises(InputError, match="link_to is for one mask file at a time"):
        check_link_to("good", 1, good)
    with pytest.raises(InputError, match="link_to is for one mask file at a time"):
        check_link_to("mask", 2, good)
    check_link_to("mask", 1, good)
    check_link_to("good", 5, None)
    # refused registrations left no rows and no files behind
    with session.begin():
        assert session.scalar(select(ImageRow).where(ImageRow.name == "m.png")) is None
    assert len(list((tmp_path / "images").iterdir())) == 2


def test_register_keeps_what_decodes_and_delete_removes_files(session, tmp_path):
    config = ServiceConfig(data_dir=tmp_path, max_pixels=10_000)
    with pytest.raises(InputError, match="nothing added: 1 skipped: bad.png: not a readable image"):
        check_and_register(session, config, [("bad.png", b"not an image")], "good", "t")
    assert not (tmp_path / "images").exists() or not list((tmp_path / "images").iterdir())
    registered = check_and_register(session, config, [("ok.png", picture()), ("bad.png", b"not an image"),
                                                      ("ok2.png", picture(1))], "good", "t")
    assert [row.name for row, _ in registered.rows] == ["ok.png", "ok2.png"]
    assert [(s.name, s.reason) for s in registered.skipped] == [
        ("bad.png", "not a readable image (PNG, JPEG, BMP or TIFF)")]
    rows = [row for row, _ in registered.rows]
    assert remove_images(session, tmp_path, [rows[0].id], None, missing_is_error=True) == 1
    assert remove_images(session, tmp_path, [], "t") == 1
    assert not list((tmp_path / "images").iterdir())
    with pytest.raises(NotFound, match=f"no image with id {rows[0].id}"):
        remove_images(session, tmp_path, [rows[0].id], None, missing_is_error=True)


def test_a_model_tag_is_taken_by_a_model_or_an_unfinished_job(session):
    with session.begin():
        assert tag_in_use(session, "m1") is None
        session.add(ModelRow(tag="m1", model="padim", display_name="PaDiM", backbone="resnet18", image_size="64",
                             format="model.pt", source="imported", folder="models/x", entry="model.pt"))
        session.add(JobRow(model_tag="running", model="padim", status="running"))
        session.add(JobRow(model_tag="failed", model="padim", status="failed"))
    with session.begin():
        assert tag_in_use(session, "m1") == ("model tag 'm1' is already used by a model; "
                                             "choose another or delete that model")
        assert "is already used by job 1, which has not finished" in tag_in_use(session, "running")
        assert tag_in_use(session, "failed") is None  # a failed job's tag is free again
        with pytest.raises(Conflict, match="already used by a model"):
            ensure_free_tag(session, "m1")
    with pytest.raises(Conflict, match="already used by job 1"):
        check_new_tag(session, "running")
    with pytest.raises(InputError, match="tag: 1 to 128 characters"):
        check_new_tag(session, "a/b")
    check_new_tag(session, "free")


@pytest.fixture
def service(tmp_path, database_url) -> Service:
    roots = tmp_path / "import"
    roots.mkdir()
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=service_database_url(database_url),
                           allowed_roots=[roots])
    service = Service.open(config)
    yield service
    service.runner.close()


def test_a_job_is_checked_before_it_is_queued(service, tmp_path, monkeypatch):
    monkeypatch.setattr("hamacho.serve.job_catalog.training_unavailable", lambda: None)  # as with PyTorch
    roots = service.config.allowed_roots
    check_server_paths(job_settings("padim", {"model.backbone_weights": "ImageNet"}), roots)
    with pytest.raises(InputError, match="outside the allowed folders"):
        check_server_paths(job_settings("padim", {"model.backbone_weights": str(tmp_path / "w.pth")}), roots)
    with pytest.raises(InputError, match="no such file or folder"):
        check_server_paths(job_settings("padim", {"dataset.valid_area_mask": str(roots[0] / "m.png")}), roots)
    with service.factory(autobegin=False) as session:
        with pytest.raises(InputError, match="give exactly one of tag and image_ids"):
            queue_job(service, session, JobIn(model_tag="j"))
        with pytest.raises(NotFound, match=r"no image with id 7 \(and 1 more\)"):
            queue_job(service, session, JobIn(model_tag="j", image_ids=[7, 8]))
        add_images(session, service.config.data_dir, "good", ["1.png"])
        with pytest.raises(InputError, match="tag 'parts' has 1 good image"):
            queue_job(service, session, JobIn(model_tag="j", tag="parts"))
        add_images(session, service.config.data_dir, "good", ["2.png"])
        # the default weights: ImageNet, refused offline (the tests' HAMACHO_OFFLINE) until they are cached
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        with pytest.raises(InputError, match=r"ImageNet weights for resnet18 are not on this server and cannot be "
                                             r"downloaded \(this server is offline\)"):
            queue_job(service, session, JobIn(model_tag="j", tag="parts"))
        cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
        cached.parent.mkdir(parents=True)
        cached.write_bytes(b"")
        job = queue_job(service, session, JobIn(model_tag="j", tag="parts"))
        assert job.status == "queued" and job.counts == '{"good": 2, "bad": 0, "mask": 0}'
        job_id = job.id  # (a refused request's rollback expires the rows the session holds)
        with pytest.raises(Conflict, match=f"already used by job {job_id}"):
            queue_job(service, session, JobIn(model_tag="j", tag="parts"))
        row, model = request_cancel(service, session, job_id)  # read again after the queue changed it
        assert row.status == "cancelled" and row.cancel_requested and model is None
        with pytest.raises(Conflict, match=f"job {job_id} has already ended \\(cancelled\\)"):
            request_cancel(service, session, job_id)


def test_example_pictures_are_shared_among_folders(tmp_path):
    assert example_pictures(tmp_path / "missing") == []
    for folder, count in (("good", 6), ("bad/scratch", 6), ("bad/hole", 1)):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(count):
            (tmp_path / folder / f"{i}.png").write_bytes(b"")
    chosen = example_pictures(tmp_path)
    assert len(chosen) == EXAMPLE_PICTURES
    assert chosen[:3] == ["bad/hole/0.png", "bad/scratch/0.png", "good/0.png"]  # one of each folder first
    folders = [name.rpartition("/")[0] for name in chosen]
    assert folders.count("bad/scratch") == 4 and folders.count("good") == 3  # bad/hole had one only


def test_a_model_folder_gives_its_files_but_not_the_model(service):
    folder = service.config.data_dir / "models" / "m"
    (folder / "images").mkdir(parents=True)
    (folder / "report.html").write_text("<html>")
    (folder / "model.pt").write_bytes(b"")
    row = ModelRow(tag="m", folder="models/m", entry="model.pt")
    assert file_of_model(service, row, "report.html") == (folder / "report.html").resolve()
    for name in ("model.pt", "images", "nothing.png"):
        with pytest.raises(NotFound, match=f"model 'm' has no file '{name}'"):
            file_of_model(service, row, name)
    for name in ("../m/report.html", "/etc/hosts"):
        with pytest.raises(InputError, match="'..' is not allowed"):
            file_of_model(service, row, name)


class FakePredictor:
    """Scores every image 0.6 with a ramp for a map, deciding at the cuts it is given (as the Predictor does)."""

    def __init__(self) -> None:
        self.calibration = {"image_threshold": 1.0, "image_min": 0.0, "image_max": 2.0,
                            "pixel_threshold": 3.0, "pixel_min": 2.0, "pixel_max": 4.0}
        self.settings = SimpleNamespace(visualization=SimpleNamespace(heatmap_alpha=0.4))
        self.cuts: list[tuple[float, float]] = []

    def predict(self, images: list[np.ndarray], image_threshold: float = 0.5,
                pixel_threshold: float = 0.5) -> list[Prediction]:
        self.cuts.append((image_threshold, pixel_threshold))
        out = []
        for image in images:
            ramp = np.linspace(0, 1, image.shape[0] * image.shape[1], dtype=np.float32).reshape(image.shape[:2])
            out.append(Prediction("array #0", 1.2, 0.6, "NG" if 0.6 >= image_threshold else "OK", image_threshold,
                                  pixel_threshold, anomaly_map=ramp, mask=ramp >= pixel_threshold))
        return out


def test_predictions_use_the_predictors_decisions_at_the_requested_cuts(service, monkeypatch):
    fake = FakePredictor()
    monkeypatch.setattr(service.cache, "using", lambda _id, _path, _epoch: contextlib.nullcontext(fake))
    with service.factory(autobegin=False) as session:
        with session.begin():
            row = ModelRow(tag="m", model="padim", display_name="PaDiM", backbone="resnet18", image_size="64",
                           format="model.pt", source="imported", folder="models/m", entry="model.pt")
            session.add(row)
        received = [("a.png", picture(10)), ("b.png", picture(20))]
        stored = predict_and_store(service, session, row, received, 0.7, 0.25, save=True)
        assert fake.cuts == [(0.7, 0.25)]  # the request's cuts, not the defaults
        assert [r["decision"] for r in stored.records] == ["OK", "OK"]  # 0.6 < 0.7: the Predictor's call
        first = stored.records[0]
        assert first["image_threshold"] == {"normalized": 0.7, "raw": pytest.approx(1.4)}
        assert first["pixel_threshold"] == {"normalized": 0.25, "raw": pytest.approx(2.5)}
        folder = service.config.data_dir / "predictions" / first["folder"]
        mask = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert mask.sum() == 48  # the Predictor's mask: the ramp (64 pixels) at or above 0.25
        assert json.loads((folder / "prediction.json").read_text()) == first
        with session.begin():
            saved = list(session.scalars(select(ResultRow.id)))
        assert stored.result_ids == saved and len(saved) == 2 and stored.dropped == []
        # unsaved: no rows, and the oldest folders beyond keep_unsaved are handed back to be removed
        monkeypatch.setattr(service.config, "keep_unsaved", 1)
        unsaved = predict_and_store(service, session, row, received, 0.5, 0.5, save=False)
        assert unsaved.result_ids == [None, None] and unsaved.dropped == [unsaved.records[0]["folder"]]
        assert [r["decision"] for r in unsaved.records] == ["NG", "NG"]
