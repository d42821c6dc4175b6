"""The service's API against the app (httpx via TestClient): images, jobs, auth, system; errors as one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig
from tests.conftest import pause_env
from tests.databases import serve_arguments, service_database_url
from tests.serve_support import (
    API,
    FAST_PARAMETERS,
    dataset_files,
    decode,
    png_bytes,
    upload,
    upload_dataset,
    wait_job,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory, module_database_url):
    """A running service (jobs on) over a fresh data folder and database, with a generated dataset on disk."""
    base = tmp_path_factory.mktemp("serve")
    files = dataset_files(base / "parts")
    config = ServiceConfig(data_dir=base / "data", database_url=service_database_url(module_database_url),
                           allowed_roots=[base / "import"], max_file_bytes=200_000,
                           max_request_bytes=2_000_000, max_pixels=300 * 300)
    (base / "import").mkdir()
    with TestClient(create_app(config)) as client:
        yield {"client": client, "files": files, "base": base, "config": config}


@pytest.fixture
def client(env):
    return env["client"]


def error_of(response) -> str:
    body = response.json()
    # one line; a request whose every file was skipped lists them too (docs/service.md, Images)
    assert set(body) - {"skipped"} == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"], body
    assert all(set(s) == {"name", "reason"} for s in body.get("skipped", [])), body
    return body["error"]


def test_health_version_and_auth_flags(client):
    health = client.get(f"{API}/health").json()
    assert health["status"] == "ok" and health["database"] == "ok"
    assert set(health["jobs"]) == {"queued", "running"}
    version = client.get(f"{API}/version").json()
    assert version["api"] == "v1" and version["hamacho"]
    assert client.get(f"{API}/auth").json() == {"required": False}
    options = client.get(f"{API}/options").json()
    assert {"padim", "patchcore"} <= {m["name"] for m in options["models"]} and "resnet18" in options["backbones"]
    assert {m["name"]: m["display_name"] for m in options["models"]}["patchcore"] == "PatchCore"
    assert options["defaults"]["padim"]["dataset"]["image_size"] == 256
    size = {s["key"]: s for s in options["settings"]["padim"]}["dataset.image_size"]
    assert size["default"] == 256 and size["label"] == "Image size" and size["option"] == "--image-size"
    assert "multiple of 32" in size["help"] and options["training"] == {"available": True, "reason": None}
    assert client.get("/openapi.json").json()["info"]["title"] == "Hamacho"


def test_upload_links_masks_lists_pages_and_deletes(client, env):
    files = env["files"]
    created = upload_dataset(client, files, tag="links")
    bads, masks = created["bad"], created["mask"]
    assert [m["image_id"] for m in masks] == [b["id"] for b in bads]  # 000_mask.png -> 000.png
    shown = client.get(f"{API}/images/{bads[0]['id']}").json()
    assert shown["mask_id"] == masks[0]["id"] and shown["width"] == 96 and shown["group"] == "bad"
    # the stored file is the uploaded one, byte for byte
    assert client.get(shown["file_url"]).content == files["bad"][0].read_bytes()
    thumb = decode(client.get(shown["thumbnail_url"]).content)
    assert thumb.shape[:2] == (96, 96)  # small images are not enlarged
    page = client.get(f"{API}/images", params={"tag": "links", "group": "good", "limit": 4, "offset": 8}).json()
    assert page["total"] == len(files["good"]) == 11 and len(page["items"]) == 3
    tags = {t["tag"]: t for t in client.get(f"{API}/tags").json()["items"]}
    assert tags["links"] == {"tag": "links", "good": 11, "bad": 3, "mask": 3}
    # delete one, then several by id, then the rest by tag
    assert client.delete(f"{API}/images/{bads[0]['id']}").json() == {"deleted": 1}
    assert client.get(f"{API}/images/{masks[0]['id']}").json()["image_id"] is None  # the mask stays, unlinked
    ids = ",".join(str(m["id"]) for m in masks)
    assert client.delete(f"{API}/images", params={"ids": ids}).json() == {"deleted": 3}
    assert client.delete(f"{API}/images", params={"tag": "links"}).json() == {"deleted": 13}
    assert client.get(f"{API}/images", params={"tag": "links"}).json()["total"] == 0
    assert "no image with id" in error_of(client.get(f"{API}/images/{bads[0]['id']}"))
    stored = list((env["config"].data_dir / "images").iterdir())
    assert all(not p.name.startswith(".") for p in stored)


def test_explicit_mask_link_and_its_errors(client, env):
    bad = upload(client, "bad", env["files"]["bad"][:1], tag="explicit").json()["items"][0]
    mask_path = env["files"]["mask"][0]
    response = client.post(f"{API}/images", data={"group": "mask", "tag": "explicit", "link_to": str(bad["id"])},
                           files=[("files", ("whatever.png", mask_path.read_bytes(), "image/png"))])
    assert response.status_code == 201 and response.json()["items"][0]["image_id"] == bad["id"]
    response = client.post(f"{API}/images", data={"group": "mask", "link_to": "999999"},
                           files=[("files", ("m.png", mask_path.read_bytes(), "image/png"))])
    assert response.status_code == 404 and "link_to" in error_of(response)
    response = client.post(f"{API}/images", data={"group": "good", "link_to": str(bad["id"])},
                           files=[("files", ("m.png", mask_path.read_bytes(), "image/png"))])
    assert response.status_code == 400 and "link_to" in error_of(response)
    client.delete(f"{API}/images", params={"tag": "explicit"})


@pytest.mark.parametrize("name, data, status, words", [
    ("fake.png", b"this is not an image", 400, "not a readable image"),
    ("empty.png", b"", 400, "empty file"),
    ("cut.png", png_bytes(np.full((50, 50, 3), 90, np.uint8))[:-40], 400, "not a readable image"),
    ("huge.png", png_bytes(np.zeros((400, 400), np.uint8)), 400, "over the limit of 90000 pixels"),
    ("big.png", png_bytes(np.random.default_rng(0).integers(0, 255, (290, 290, 3), dtype=np.uint8)), 413,
     "over the limit of 200000 bytes"),
])
def test_a_bad_file_is_skipped_with_its_reason_and_the_good_ones_kept(client, env, name, data, status, words):
    images = env["config"].data_dir / "images"
    before = sorted(p.name for p in images.iterdir())
    good = env["files"]["good"][0]
    response = client.post(f"{API}/images", data={"group": "good", "tag": "bad-input"},
                           files=[("files", (good.name, good.read_bytes(), "image/png")),
                                  ("files", (name, data, "image/png"))])
    assert response.status_code == 201, response.text
    assert [item["name"] for item in response.json()["items"]] == [good.name]
    (skipped,) = response.json()["skipped"]
    assert skipped["name"] == name and words in skipped["reason"] and name not in skipped["reason"]
    assert client.get(f"{API}/images", params={"tag": "bad-input"}).json()["total"] == 1
    assert len(list(images.iterdir())) == len(before) + 1
    # the bad file alone: nothing added, one line naming it, with its status
    alone = client.post(f"{API}/images", data={"group": "good", "tag": "bad-input"},
                        files=[("files", (name, data, "image/png"))])
    assert alone.status_code == status
    assert error_of(alone) == f"nothing added: 1 skipped: {name}: {skipped['reason']}"
    client.delete(f"{API}/images", params={"tag": "bad-input"})
    assert sorted(p.name for p in images.iterdir()) == before


def test_duplicates_in_a_tag_are_skipped(client, env):
    first, second = env["files"]["good"][:2]
    sent = [("files", (first.name, first.read_bytes(), "image/png")),
            ("files", ("copy-in-request.png", first.read_bytes(), "image/png")),
            ("files", (second.name, second.read_bytes(), "image/png"))]
    response = client.post(f"{API}/images", data={"group": "good", "tag": "dups"}, files=sent)
    assert response.status_code == 201
    assert [item["name"] for item in response.json()["items"]] == [first.name, second.name]
    assert response.json()["skipped"] == [{"name": "copy-in-request.png",
                                           "reason": f"the same content as {first.name}, already in tag 'dups'"}]
    # the same file as a defective image of the tag: a label conflict, skipped too; another tag takes it
    again = client.post(f"{API}/images", data={"group": "bad", "tag": "dups"},
                        files=[("files", ("again.png", second.read_bytes(), "image/png"))])
    assert again.status_code == 400
    assert error_of(again) == f"nothing added: 1 skipped: again.png: the same content as {second.name}, already in tag 'dups'"
    other = client.post(f"{API}/images", data={"group": "good", "tag": "dups-2"},
                        files=[("files", (second.name, second.read_bytes(), "image/png"))])
    assert other.status_code == 201 and other.json()["skipped"] == []
    # masks are not compared: two images may share a mask's content
    mask = env["files"]["mask"][0].read_bytes()
    masks = client.post(f"{API}/images", data={"group": "mask", "tag": "dups"},
                        files=[("files", ("a_mask.png", mask, "image/png")), ("files", ("b_mask.png", mask, "image/png"))])
    assert masks.status_code == 201 and len(masks.json()["items"]) == 2
    for tag in ("dups", "dups-2"):
        client.delete(f"{API}/images", params={"tag": tag})


def test_request_over_the_limit_is_413(client):
    payload = b"x" * 2_100_000
    response = client.post(f"{API}/images", data={"group": "good"},
                           files=[("files", ("a.png", payload, "image/png"))])
    assert response.status_code == 413 and "over the limit" in error_of(response)


def test_unsafe_file_names_are_labels_only(client, env):
    good, other = env["files"]["good"][:2]
    response = client.post(f"{API}/images", data={"group": "good", "tag": "names"},
                           files=[("files", ("../../etc/passwd.png", good.read_bytes(), "image/png")),
                                  ("files", ("C:\\temp\\..\\x.png", other.read_bytes(), "image/png"))])
    assert [item["name"] for item in response.json()["items"]] == ["passwd.png", "x.png"]
    assert (env["config"].data_dir / "images").is_dir() and not (env["config"].data_dir.parent / "etc").exists()
    client.delete(f"{API}/images", params={"tag": "names"})


def test_validation_errors_are_one_line(client):
    response = client.post(f"{API}/images", data={"group": "great"},
                           files=[("files", ("a.png", b"x", "image/png"))])
    assert response.status_code == 422 and error_of(response).startswith("group:")
    response = client.get(f"{API}/images", params={"limit": 0})
    assert response.status_code == 422 and "limit: Input should be greater than or equal to 1" == error_of(response)
    assert "ids must be between" in error_of(client.delete(f"{API}/images", params={"ids": str(2**70)}))
    assert client.get(f"{API}/images/abc").status_code == 422
    assert "ids must be" in error_of(client.delete(f"{API}/images", params={"ids": "1,x"}))


def test_server_side_paths_stay_inside_the_allowed_roots(client, env):
    base = env["base"]
    inside = base / "import" / "line1" / "day2"
    inside.mkdir(parents=True)
    for path in env["files"]["good"][:3]:
        (inside / path.name).write_bytes(path.read_bytes())
    (inside / "notes.txt").write_text("not an image")
    response = client.post(f"{API}/images/paths", json={"paths": [str(base / "import" / "line1")], "group": "good",
                                                        "tag": "mounted"})
    assert response.status_code == 201 and len(response.json()["items"]) == 3
    outside = env["files"]["good"][0]
    assert "outside the allowed folders" in error_of(
        client.post(f"{API}/images/paths", json={"paths": [str(outside)], "group": "good"}))
    dotted = str(base / "import" / ".." / "parts" / "train" / "good" / outside.name)  # tests/test_serve_paths.py
    assert "outside the allowed folders" in error_of(client.post(f"{API}/images/paths", json={"paths": [dotted],
                                                                                                "group": "good"}))
    link = base / "import" / "escape.png"
    os.symlink(outside, link)
    assert "outside the allowed folders" in error_of(
        client.post(f"{API}/images/paths", json={"paths": [str(link)], "group": "good"}))
    assert "no such file" in error_of(
        client.post(f"{API}/images/paths", json={"paths": [str(base / "import" / "nope.png")], "group": "good"}))
    assert error_of(client.post(f"{API}/images/paths", json={"paths": [str(inside / "notes.txt")], "group": "good"})) \
        == "nothing added: 1 skipped: notes.txt: not a readable image (PNG, JPEG, BMP or TIFF)"
    (inside / "broken.png").write_bytes(b"not a png")  # in a folder: skipped, the rest registered
    response = client.post(f"{API}/images/paths", json={"paths": [str(inside)], "group": "good", "tag": "mounted-2"})
    assert response.status_code == 201 and len(response.json()["items"]) == 3
    assert [s["name"] for s in response.json()["skipped"]] == ["broken.png"]
    client.delete(f"{API}/images", params={"tag": "mounted-2"})
    client.delete(f"{API}/images", params={"tag": "mounted"})


def test_job_errors_come_before_any_work(client, env):
    upload(client, "good", env["files"]["good"][:1], tag="lonely")
    cases = [
        ({"model_tag": "x", "tag": "lonely"}, 400, "has 1 good image(s); training needs at least 2"),
        ({"model_tag": "x", "tag": "lonely", "parameters": {"model.colour": 3}}, 400, "model.colour"),
        ({"model_tag": "x", "tag": "lonely", "parameters": {"dataset.image_size": "big"}}, 400, "image_size"),
        ({"model_tag": "x", "tag": "lonely", "parameters": {"dataset.root": "/"}}, 400, "set by the service"),
        ({"model_tag": "x", "tag": "lonely", "model": "nosuch"}, 400, "nosuch"),
        ({"model_tag": "x", "tag": "lonely", "image_ids": [1]}, 400, "exactly one of tag and image_ids"),
        ({"model_tag": "x", "image_ids": [999999, 999998]}, 404, "no image with id 999998 (and 1 more)"),
        ({"model_tag": "x", "tag": "lonely", "parameters": {"model.backbone_weights": "/etc/passwd"}}, 400,
         "outside the allowed folders"),
        ({"model_tag": "x", "tag": "lonely", "parameters": {"dataset.valid_area_mask": "/etc/hosts"}}, 400,
         "outside the allowed folders"),
        ({"model_tag": "", "tag": "lonely"}, 422, "model_tag"),
    ]
    jobs_before = client.get(f"{API}/jobs").json()["total"]
    for body, status, words in cases:
        response = client.post(f"{API}/jobs", json=body)
        assert response.status_code == status, (body, response.text)
        assert words in error_of(response), (body, response.text)
    assert client.get(f"{API}/jobs").json()["total"] == jobs_before
    client.delete(f"{API}/images", params={"tag": "lonely"})


def test_train_cancel_and_failed_job(client, env):
    upload_dataset(client, env["files"], tag="jobs")
    # a job whose weights file is not a weights file fails with the CLI's one line
    weights = env["base"] / "import" / "weights.pth"
    weights.write_bytes(b"not a checkpoint")
    failed = client.post(f"{API}/jobs", json={"model_tag": "broken", "tag": "jobs", "parameters": {
        **FAST_PARAMETERS, "model.backbone_weights": str(weights)}}).json()
    # queued behind it (one worker), then cancelled before it starts
    queued = client.post(f"{API}/jobs", json={"model_tag": "never", "tag": "jobs",
                                              "parameters": FAST_PARAMETERS}).json()
    assert queued["status"] == "queued"
    cancelled = client.post(f"{API}/jobs/{queued['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"]
    done = wait_job(client, failed["id"])
    assert done["status"] == "failed" and done["model_id"] is None
    assert "weights.pth" in done["error"] and "\n" not in done["error"]
    assert "already" in error_of(client.post(f"{API}/jobs/{queued['id']}/cancel"))
    assert client.get(f"{API}/jobs", params={"status": "cancelled"}).json()["items"][0]["id"] == queued["id"]
    # the tags of finished jobs without a model are free again
    assert client.get(f"{API}/models/never").status_code == 404


def test_serve_refuses_an_open_bind_without_a_token(tmp_path, database_url):
    env = {k: v for k, v in os.environ.items() if k != "HAMACHO_TOKEN"}
    run = subprocess.run([sys.executable, "-m", "hamacho", "serve", "--host", "0.0.0.0", "--data-dir",
                          str(tmp_path / "d"), *serve_arguments(database_url)],
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "give a token" in run.stderr
    assert not (tmp_path / "d").exists()


def test_token_is_required_when_set(tmp_path, database_url):
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=service_database_url(database_url),
                           token="s3cret")
    with TestClient(create_app(config, start_jobs=False)) as client:
        assert client.get(f"{API}/health").status_code == 200
        assert client.get(f"{API}/auth").json() == {"required": True}
        for method, path in (("get", "/images"), ("get", "/models"), ("post", "/jobs"), ("get", "/version"),
                             ("get", "/results"), ("post", "/models/x/predict")):
            response = getattr(client, method)(f"{API}{path}")
            assert response.status_code == 401, path
            assert "token" in error_of(response)
        assert client.get(f"{API}/images", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(f"{API}/images", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        client.cookies.set("hamacho_token", "s3cret")
        assert client.get(f"{API}/images").status_code == 200
        assert client.get("/").status_code == 200  # the UI itself loads, and then asks for the token


def test_cancel_a_running_job(client, env, monkeypatch, tmp_path):
    upload_dataset(client, env["files"], tag="cancel-me")
    marker = tmp_path / "paused"
    # the worker stops at its first feature-extraction step until it is told to stop (no race)
    for key, value in pause_env("feature extraction", marker).items():
        monkeypatch.setenv(key, value)
    job = client.post(f"{API}/jobs", json={"model_tag": "stopped", "tag": "cancel-me",
                                           "parameters": FAST_PARAMETERS}).json()
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline, client.get(f"{API}/jobs/{job['id']}").json()
        time.sleep(0.2)
    running = client.get(f"{API}/jobs/{job['id']}").json()
    assert running["status"] == "running" and running["phase"] == "feature extraction"
    assert 0 < running["percent"] < 100
    assert client.post(f"{API}/jobs/{job['id']}/cancel").json()["cancel_requested"] is True
    done = wait_job(client, job["id"])
    assert done["status"] == "cancelled" and "Interrupted during feature extraction" in done["error"]
    assert client.get(f"{API}/models/stopped").status_code == 404
    assert not (env["config"].data_dir / "jobs" / str(job["id"])).exists()


def test_weight_files_in_the_allowed_folders_are_listed(client, env):
    root = env["base"] / "import"
    for relative in ("weights/resnet18-f37072fd.pth", "weights/old.pt", ".hidden/x.pth", "models/model.pt",
                     "weights/notes.txt"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"0" * 10)
    listed = client.get(f"{API}/weights").json()
    assert listed["roots"] == [str(root.resolve())]
    mine = [item for item in listed["items"] if "/weights/" in item["path"] or "/.hidden/" in item["path"]
            or item["name"] == "model.pt"]  # other tests of the module put files of their own there
    assert [(item["name"], item["bytes"]) for item in mine] == [("old.pt", 10), ("resnet18-f37072fd.pth", 10)]
    assert mine[1]["path"] == str((root / "weights" / "resnet18-f37072fd.pth").resolve())
