"""The service's models, predictions and results: trained by a real worker process, served from SQLite."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hamacho.predictor import Predictor
from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig
from tests.databases import service_database_url
from tests.float_bounds import file_tolerance
from tests.serve_support import (
    API,
    FAST_PARAMETERS,
    dataset_files,
    decode,
    png_bytes,
    upload_dataset,
    wait_job,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, module_database_url):
    """A service with one model ('m1', PaDiM) trained by a job on the generated dataset."""
    base = tmp_path_factory.mktemp("serve-models")
    files = dataset_files(base / "parts")
    (base / "import").mkdir()
    config = ServiceConfig(data_dir=base / "data", database_url=service_database_url(module_database_url),
                           allowed_roots=[base / "import"], max_loaded=2, sync_seconds=3600)  # syncs: none
    with TestClient(create_app(config)) as client:
        images = upload_dataset(client, files)
        job = client.post(f"{API}/jobs", json={"model_tag": "m1", "model": "padim", "tag": "parts",
                                               "parameters": FAST_PARAMETERS})
        assert job.status_code == 202, job.text
        done = wait_job(client, job.json()["id"])
        assert done["status"] == "succeeded", done
        yield {"client": client, "files": files, "base": base, "config": config, "job": done, "images": images}


@pytest.fixture
def client(trained):
    return trained["client"]


def model_path(trained, ref: str = "m1") -> Path:
    service = trained["client"].app.state.service
    from hamacho.serve.service import find_model

    with service.factory() as session:
        row = find_model(session, ref)
    return service.path(row.folder) / row.entry


def predict(client, ref, paths, **form):
    return client.post(f"{API}/models/{ref}/predict", data={k: str(v).lower() if isinstance(v, bool) else str(v)
                                                            for k, v in form.items()},
                       files=[("files", (p.name, p.read_bytes(), "image/png")) for p in paths])


def test_job_progress_and_model_details(client, trained):
    job = trained["job"]
    assert job["percent"] == 100.0 and job["images"] == {"good": 11, "bad": 3, "mask": 3}
    model = client.get(f"{API}/models/{job['model_id']}").json()
    assert model == client.get(f"{API}/models/m1").json()  # by id or by tag
    assert model["model"] == "padim" and model["display_name"] == "PaDiM" and model["source"] == "trained"
    assert model["image_size"] == 64 and model["backbone"] == "resnet18" and model["job_id"] == job["id"]
    assert set(model["metrics"]) >= {"image_AUROC", "pixel_AUROC", "pixel_AUPRO"}
    assert model["thresholds"]["image"]["normalized"] == 0.5 and model["thresholds"]["image"]["raw"] > 0
    assert model["thresholds"]["method"] == "auto" and "F1" in model["thresholds"]["image"]["source"]
    # the service holds 30 % of the labelled images out of the threshold, and the card gives their metrics
    held = model["held_out"]
    assert held["images"] == held["good"] + held["defective"] and held["good"] >= 1 and held["defective"] >= 1
    # few defective images: auto bounds the F1 cut by the good-image rule, and the fitted images, scored out of
    # fold, calibrate too: every image either calibrates or is held out
    assert model["thresholds"]["rule"] == "f1-bounded"
    assert model["thresholds"]["false_alarms"]["good_images"] >= model["dataset"]["images_fitted"]
    assert model["dataset"]["images_calibrated"] + held["images"] == 11 + 3
    assert "held-out image(s)" in held["warning"]  # a handful: the card says they mean little
    assert model["dataset_tag"] == "parts" and job["tag"] == "parts" and model["comparison"] is None
    assert model["config"]["model"]["backbone_weights"] == "none"
    assert job["result"] == {"metrics": model["metrics"], "thresholds": model["thresholds"],
                             "report_url": model["report_url"]}
    report = client.get(model["report_url"])
    assert report.status_code == 200 and "<html" in report.text.lower()
    assert client.get(f"{API}/models/m1/report").text == report.text
    assert model["pictures"] and all(client.get(url).status_code == 200 for url in model["pictures"])
    assert client.get(f"{API}/models/m1/files/../model.pt").status_code in (400, 404)
    assert client.get(f"{API}/models/m1/files/model.pt").status_code == 404
    # the duplicate tag is refused before any work
    response = client.post(f"{API}/jobs", json={"model_tag": "m1", "tag": "parts"})
    assert response.status_code == 409 and "already used by a model" in response.json()["error"]


def test_predict_matches_the_predictor_and_thresholds(client, trained):
    files = trained["files"]
    images = [files["bad"][0], files["good"][-1]]
    response = predict(client, "m1", images)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    reference = Predictor.load(model_path(trained), device="cpu").predict([str(p) for p in images])
    for item, ref, path in zip(items, reference, images):
        assert item["name"] == path.name and item["error"] is None and item["result_id"] is None
        assert item["raw_score"] == ref.raw_score and item["score"] == ref.score  # one batch of two both ways
        assert item["decision"] == ("NG" if item["score"] >= 0.5 else "OK") == ref.decision
        heatmap = decode(client.get(item["heatmap_url"]).content)
        segmentation = decode(client.get(item["segmentation_url"]).content)
        anomaly = decode(client.get(item["map_url"]).content)
        assert heatmap.shape == segmentation.shape == (96, 96, 3) and anomaly.shape == (96, 96)
        assert np.abs(anomaly / 255.0 - ref.anomaly_map).max() <= 0.5 / 255 + 1e-6
        assert client.get(item["image_url"]).content == path.read_bytes()
    model = client.get(f"{API}/models/m1").json()
    assert items[0]["image_threshold"] == {"normalized": 0.5, "raw": pytest.approx(model["thresholds"]["image"]["raw"])}
    # other cuts: the raw value moves with the normalized one, decisions follow the scores
    strict = predict(client, "m1", images, image_threshold=0.0, pixel_threshold=1.0).json()["items"]
    assert all(item["decision"] == "NG" for item in strict)
    assert strict[0]["image_threshold"]["raw"] < items[0]["image_threshold"]["raw"]
    assert decode(client.get(strict[0]["map_url"]).content).shape == (96, 96)
    for bad in ({"image_threshold": 1.5}, {"pixel_threshold": -0.1}):
        response = predict(client, "m1", images[:1], **bad)
        assert response.status_code == 400 and "between 0 and 1" in response.json()["error"]


def test_non_square_cropped_model_through_the_service(client, trained):
    job = client.post(f"{API}/jobs", json={"model_tag": "wide", "tag": "parts", "parameters": {
        **FAST_PARAMETERS, "dataset.image_size": [64, 96], "dataset.crop": [16, 0, 96, 96], "report.enabled": False}})
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    model = client.get(f"{API}/models/wide").json()
    assert model["image_size"] == [64, 96] and model["report_url"] is None
    assert client.get(f"{API}/models").json()["items"][0]["image_size"] == [64, 96]
    item = predict(client, "wide", trained["files"]["bad"][:1], pixel_threshold=0.0).json()["items"][0]
    assert item["error"] is None and item["decision"] == ("NG" if item["score"] >= 0.5 else "OK")
    anomaly = decode(client.get(item["map_url"]).content)
    assert anomaly.shape == (96, 96) and not anomaly[:, :16].any()  # outside the crop: not inspected, map 0
    heatmap = decode(client.get(item["heatmap_url"]).content).astype(int)
    outside, inside = heatmap[:, :16], heatmap[:, 16:]
    # drawn as not inspected (grey hatching) outside the crop only
    def hatched(part):
        return float((part == 120).all(axis=2).mean())

    assert hatched(outside) > 0.1 and hatched(inside) < 0.01
    segmentation = decode(client.get(item["segmentation_url"]).content)
    assert segmentation.shape == (96, 96, 3)


def test_predict_errors(client, trained):
    good = trained["files"]["good"][0]
    assert predict(client, "nosuch", [good]).status_code == 404
    response = client.post(f"{API}/models/m1/predict", data={"save": "true"})
    assert response.status_code == 400 and "send images" in response.json()["error"]
    response = client.post(f"{API}/models/m1/predict", files=[("files", ("x.png", b"junk", "image/png"))])
    assert response.status_code == 400
    assert response.json()["error"] == "nothing scored: 1 skipped: x.png: not a readable image (PNG, JPEG, BMP or TIFF)"
    # in a drop with good files: those are scored, the bad one listed with its reason, nothing saved for it
    response = client.post(f"{API}/models/m1/predict", data={"save": "true"},
                           files=[("files", ("x.png", b"junk", "image/png")),
                                  ("files", (good.name, good.read_bytes(), "image/png"))])
    assert response.status_code == 200, response.text
    assert [item["name"] for item in response.json()["items"]] == [good.name]
    assert response.json()["skipped"] == [{"name": "x.png", "reason": "not a readable image (PNG, JPEG, BMP or TIFF)"}]
    client.delete(f"{API}/results/{response.json()['items'][0]['result_id']}")
    response = client.post(f"{API}/models/m1/predict", data={"paths": "/etc/hostname"})
    assert response.status_code == 400 and "outside the allowed folders" in response.json()["error"]
    assert client.get(f"{API}/predictions/{'0' * 32}/heatmap.png").status_code == 404
    assert client.get(f"{API}/predictions/..%2F..%2Fhamacho.db/image").status_code == 404


def test_saved_results_list_show_delete(client, trained):
    files = trained["files"]
    source = trained["base"] / "import" / "line"
    source.mkdir()
    (source / "probe.png").write_bytes(files["bad"][1].read_bytes())
    saved = client.post(f"{API}/models/m1/predict", data={"save": "true", "paths": str(source / "probe.png")},
                        files=[("files", (files["good"][0].name, files["good"][0].read_bytes(), "image/png"))])
    assert saved.status_code == 200, saved.text
    items = saved.json()["items"]
    assert [i["name"] for i in items] == [files["good"][0].name, "probe.png"]
    assert all(i["result_id"] is not None for i in items)
    listed = client.get(f"{API}/results", params={"model": "m1"}).json()
    assert listed["total"] == 2 and [r["result_id"] for r in listed["items"]] == [i["result_id"] for i in items][::-1]
    one = client.get(f"{API}/results/{items[1]['result_id']}").json()
    assert one["score"] == items[1]["score"] and one["heatmap_url"] == items[1]["heatmap_url"]
    assert client.delete(f"{API}/results/{items[1]['result_id']}").json() == {"deleted": 1}
    assert client.get(items[1]["heatmap_url"]).status_code == 404
    assert client.get(f"{API}/results/{items[1]['result_id']}").status_code == 404
    assert client.get(f"{API}/results", params={"model": "m1"}).json()["total"] == 1


def test_download_import_and_lru(client, trained):
    download = client.get(f"{API}/models/m1/download")
    assert download.status_code == 200 and download.content[:2] == b"PK"  # model.pt is a torch zip
    response = client.post(f"{API}/models/import", data={"tag": "copy"},
                           files=[("file", ("m1.pt", download.content, "application/octet-stream"))])
    assert response.status_code == 201, response.text
    copy = response.json()
    assert copy["source"] == "imported" and copy["format"] == "model.pt" and copy["model"] == "padim"
    assert copy["thresholds"]["image"]["raw"] == pytest.approx(
        client.get(f"{API}/models/m1").json()["thresholds"]["image"]["raw"])
    probe = trained["files"]["bad"][2]
    first = predict(client, "m1", [probe]).json()["items"][0]
    assert predict(client, "copy", [probe]).json()["items"][0]["score"] == first["score"]
    # an export folder, zipped, is imported and scores the same (ONNX Runtime)
    pytest.importorskip("onnxruntime")
    from hamacho.export import export_model

    folder = trained["base"] / "import" / "onnx"
    export_model(model_path(trained), "onnx", folder, log=lambda _m: None)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        for path in folder.iterdir():
            handle.write(path, f"export-onnx/{path.name}")
    response = client.post(f"{API}/models/import", data={"tag": "onnx"},
                           files=[("file", ("export.zip", archive.getvalue(), "application/zip"))])
    assert response.status_code == 201, response.text
    assert response.json()["format"] == "onnx"
    tol = file_tolerance(model_path(trained), first["raw_score"])  # other kernels: tests/float_bounds.py
    assert predict(client, "onnx", [probe]).json()["items"][0]["score"] == pytest.approx(first["score"],
                                                                                     abs=tol.score_atol)
    zipped = client.get(f"{API}/models/onnx/download")
    assert zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
    # server-side import of the same folder
    response = client.post(f"{API}/models/import-path", json={"path": str(folder), "tag": "onnx-path"})
    assert response.status_code == 201, response.text
    # at most two loaded: using a third unloads the least recently used
    client.post(f"{API}/models/m1/load")
    client.post(f"{API}/models/copy/load")
    loaded = client.post(f"{API}/models/onnx/load").json()
    assert [e["tag"] for e in loaded["items"]] == ["onnx", "copy"] and loaded["max_loaded"] == 2
    assert client.get(f"{API}/models/m1").json()["loaded"] is False
    predict(client, "m1", [probe])  # predicting loads it again
    assert [e["tag"] for e in client.get(f"{API}/loaded").json()["items"]] == ["m1", "onnx"]
    assert client.post(f"{API}/models/m1/unload").json()["items"][0]["tag"] == "onnx"
    assert "not loaded" in client.post(f"{API}/models/m1/unload").json()["error"]


def test_bad_imports_are_refused(client, trained):
    cases = [(b"", "empty"), (b"\x80\x04 not a model", "not a usable Hamacho model"),
             (_zip({"../evil/metadata.json": b"{}"}), "unsafe name"),
             (_zip({"notes.txt": b"hello"}), "no model.pt and no export folder")]
    for data, words in cases:
        response = client.post(f"{API}/models/import", data={"tag": "bad-import"},
                               files=[("file", ("x.bin", data, "application/octet-stream"))])
        assert response.status_code == 400 and words in response.json()["error"], response.text
    response = client.post(f"{API}/models/import", data={"tag": "m1"},
                           files=[("file", ("x.pt", b"abc", "application/octet-stream"))])
    assert response.status_code == 409 and "already used" in response.json()["error"]
    assert client.get(f"{API}/models/bad-import").status_code == 404
    service = client.app.state.service
    assert not list((service.config.data_dir / "tmp").iterdir())


def test_delete_model_refused_while_busy(client, trained):
    upload_copy = client.post(f"{API}/models/import", data={"tag": "doomed"}, files=[(
        "file", ("m.pt", client.get(f"{API}/models/m1/download").content, "application/octet-stream"))]).json()
    saved = predict(client, "doomed", trained["files"]["bad"][:1], save=True).json()["items"][0]
    service = client.app.state.service
    folder = model_path(trained, "doomed").parent
    assert folder.is_dir()
    with service.cache.using(upload_copy["id"], model_path(trained, "doomed")):
        response = client.delete(f"{API}/models/doomed")
        assert response.status_code == 409 and "in use" in response.json()["error"]
    assert client.delete(f"{API}/models/doomed").json() == {"deleted": 1}
    assert client.get(f"{API}/models/doomed").status_code == 404
    assert client.get(saved["heatmap_url"]).status_code == 404  # its results went with it
    assert not folder.exists()
    listed = {m["tag"] for m in client.get(f"{API}/models").json()["items"]}
    assert "doomed" not in listed and "m1" in listed


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return buffer.getvalue()


def test_unsaved_predictions_are_a_bounded_cache(client, trained, monkeypatch):
    service = client.app.state.service
    monkeypatch.setattr(service.config, "keep_unsaved", 2)
    probe = trained["files"]["good"][:1]
    urls = [predict(client, "m1", probe).json()["items"][0]["heatmap_url"] for _ in range(3)]
    assert client.get(urls[0]).status_code == 404  # the oldest unsaved prediction is gone
    assert all(client.get(url).status_code == 200 for url in urls[1:])
    saved = predict(client, "m1", probe, save=True).json()["items"][0]["heatmap_url"]
    predict(client, "m1", probe)
    predict(client, "m1", probe)
    assert client.get(saved).status_code == 200  # saved results are not part of the cache


def test_threshold_versions_are_saved_rolled_back_and_recorded(client, trained):
    probe = trained["files"]["bad"][0]
    listed = client.get(f"{API}/models/m1/thresholds").json()
    assert listed["current"] == 0 and [(v["version"], v["image"], v["pixel"]) for v in listed["items"]] == [
        (0, 0.5, 0.5)]
    before = predict(client, "m1", [probe]).json()["items"][0]
    assert before["threshold_version"] == 0 and before["image_threshold"]["normalized"] == 0.5
    try:
        saved = client.post(f"{API}/models/m1/thresholds", json={"image": 0.7, "pixel": 0.4, "by": "ana",
                                                                "note": "fewer false alarms on line 3"})
        assert saved.status_code == 201, saved.text
        assert saved.json()["version"] == 1 and saved.json()["created_by"] == "ana" and saved.json()["created_at"]
        card = client.get(f"{API}/models/m1").json()["thresholds"]
        assert card["version"] == 1 and card["image"]["normalized"] == 0.7 and card["pixel"]["normalized"] == 0.4
        # a prediction without cuts uses version 1 and says so; the raw cut is the card's
        now = predict(client, "m1", [probe], save=True).json()["items"][0]
        assert now["threshold_version"] == 1 and now["image_threshold"]["raw"] == pytest.approx(card["image"]["raw"])
        assert now["image_threshold"]["normalized"] == 0.7 and now["pixel_threshold"]["normalized"] == 0.4
        assert now["score"] == before["score"] and now["decision"] == ("NG" if now["score"] >= 0.7 else "OK")
        assert client.get(f"{API}/results/{now['result_id']}").json()["threshold_version"] == 1
        client.delete(f"{API}/results/{now['result_id']}")
        # cuts of the request's own: no version recorded
        own = predict(client, "m1", [probe], image_threshold=0.3).json()["items"][0]
        assert own["threshold_version"] is None and own["image_threshold"]["normalized"] == 0.3
        # a second version, then back to the first: every version is kept
        assert client.post(f"{API}/models/m1/thresholds", json={"image": 0.6, "pixel": 0.5}).json()["version"] == 2
        assert client.post(f"{API}/models/m1/thresholds/1/activate").json()["image"] == 0.7
        listed = client.get(f"{API}/models/m1/thresholds").json()
        assert listed["current"] == 1 and [v["version"] for v in listed["items"]] == [0, 1, 2]
        assert listed["items"][1]["note"] == "fewer false alarms on line 3" and listed["items"][2]["created_by"] is None
        missing = client.post(f"{API}/models/m1/thresholds/9/activate")
        assert missing.status_code == 404 and missing.json() == {"error": "model 'm1' has no threshold version 9"}
        bad = client.post(f"{API}/models/m1/thresholds", json={"image": 1.5, "pixel": 0.5})
        assert bad.status_code == 422 and bad.json()["error"].startswith("image:")
    finally:
        assert client.post(f"{API}/models/m1/thresholds/0/activate").status_code == 200  # the other tests' cuts
    assert predict(client, "m1", [probe]).json()["items"][0]["threshold_version"] == 0


def test_the_inspection_log_filters_sorts_exports_and_reviews(client, trained):
    import csv
    import datetime as dt

    files = trained["files"]
    sent = [files["bad"][0], files["bad"][1], files["good"][0]]
    names = ["cam1-bad-a.png", "cam1-bad-b.png", "cam2-good.png"]
    items = client.post(f"{API}/models/m1/predict", data={"save": "true", "image_threshold": "0.5"},
                        files=[("files", (n, p.read_bytes(), "image/png")) for n, p in zip(names, sent)]).json()["items"]
    mine = {item["result_id"]: item for item in items}
    assert len(mine) == 3

    def log(**params) -> list[dict]:
        listed = client.get(f"{API}/results", params={"model": "m1", "limit": 1000, **params})
        assert listed.status_code == 200, listed.text
        return [r for r in listed.json()["items"] if r["result_id"] in mine]

    try:
        by_decision = {d: {i for i, r in mine.items() if r["decision"] == d} for d in ("OK", "NG")}
        for decision, ids in by_decision.items():
            assert {r["result_id"] for r in log(decision=decision)} == ids
        scores = [r["score"] for r in log(sort="score")]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert [r["score"] for r in log(sort="-score")] == sorted(scores)
        # NG images past the top of the normalized scale (both 1.0) are still ranked, by their raw scores
        from sqlalchemy import update

        from hamacho.serve.db import ResultRow

        service = client.app.state.service
        *tied, top = sorted(mine, key=lambda i: mine[i]["raw_score"])  # the two lower raw scores tie at 1.0
        with service.factory() as session, session.begin():
            session.execute(update(ResultRow).where(ResultRow.id.in_(tied)).values(score=1.0))
            session.execute(update(ResultRow).where(ResultRow.id == top).values(score=0.5))
        assert [r["result_id"] for r in log(sort="score")] == [tied[1], tied[0], top]  # higher raw first
        assert [r["result_id"] for r in log(sort="-score")] == [top, tied[0], tied[1]]
        with service.factory() as session, session.begin():
            for result_id in mine:
                session.execute(update(ResultRow).where(ResultRow.id == result_id).values(score=mine[result_id]["score"]))
        assert [r["name"] for r in log(q="CAM2")] == ["cam2-good.png"]  # part of the name, any case
        assert {r["name"] for r in log(q="bad-")} == set(names[:2])
        today = dt.datetime.now(dt.timezone.utc).date()
        assert len(log(since=today.isoformat(), until=today.isoformat())) == 3
        assert log(until=(today - dt.timedelta(days=1)).isoformat()) == []
        for params, words in (({"since": "yesterday"}, "since: 'yesterday' is not a date (YYYY-MM-DD)"),
                              ({"decision": "BAD"}, "decision: 'BAD' is not OK or NG"),
                              ({"sort": "name"}, "sort: 'name' is not one of newest, oldest, score, -score")):
            refused = client.get(f"{API}/results", params=params)
            assert refused.status_code == 400 and refused.json() == {"error": words}
        # a review: an NG marked a false alarm, by whom, when and why; an OK cannot be a false alarm
        ng = max(mine, key=lambda i: mine[i]["score"])
        ok = min(mine, key=lambda i: mine[i]["score"])
        client.put(f"{API}/results/{ng}/review", json={"verdict": None})  # a clean start for the NG one
        assert mine[ng]["decision"] == "NG" and mine[ok]["decision"] == "OK", "the probes need one NG and one OK"
        marked = client.put(f"{API}/results/{ng}/review", json={"verdict": "false_alarm", "by": "ana", "note": "dust"})
        assert marked.status_code == 200, marked.text
        assert (marked.json()["verdict"], marked.json()["reviewed_by"], marked.json()["review_note"]) == (
            "false_alarm", "ana", "dust") and marked.json()["reviewed_at"]
        wrong = client.put(f"{API}/results/{ok}/review", json={"verdict": "false_alarm"})
        assert wrong.status_code == 400
        assert wrong.json() == {"error": f"result {ok} is OK: only an NG result can be a false alarm"}
        assert client.put(f"{API}/results/{ok}/review", json={"verdict": "missed_defect", "by": "ben"}).status_code == 200
        assert {r["result_id"] for r in log(verdict="any")} == {ng, ok}
        assert {r["result_id"] for r in log(verdict="none")} == set(mine) - {ng, ok}
        assert [r["result_id"] for r in log(verdict="false_alarm")] == [ng]
        assert client.get(f"{API}/results/{ng}").json()["verdict"] == "false_alarm"
        # the same log as CSV: every column, one row per result
        exported = client.get(f"{API}/results.csv", params={"model": "m1", "verdict": "any", "sort": "score"})
        assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
        rows = [row for row in csv.DictReader(io.StringIO(exported.text)) if int(row["result_id"]) in mine]
        assert [int(row["result_id"]) for row in rows] == [ng, ok]
        assert rows[0]["verdict"] == "false_alarm" and rows[0]["reviewed_by"] == "ana" and rows[0]["model_tag"] == "m1"
        assert float(rows[0]["score"]) == mine[ng]["score"] and rows[0]["decision"] == "NG"
        assert rows[0]["threshold_version"] == "0" and rows[0]["image_threshold"] == "0.5"  # 0.5, 0.5: version 0
        bad_export = client.get(f"{API}/results.csv", params={"verdict": "maybe"})
        assert bad_export.status_code == 400 and "verdict: 'maybe' is not one of" in bad_export.json()["error"]
        # cleared
        assert client.put(f"{API}/results/{ng}/review", json={"verdict": None}).json()["verdict"] is None
        # a result without a decision (its image could not be read) has nothing to review, and a verdict given
        # to one before that was refused is skipped when reviewed images go to a dataset
        with service.factory() as session, session.begin():
            session.execute(update(ResultRow).where(ResultRow.id == ok).values(decision=None))
        unscored = client.put(f"{API}/results/{ok}/review", json={"verdict": "correct"})
        assert unscored.status_code == 400 and unscored.json() == {"error": (
            f"result {ok} was not scored (its image could not be read): there is no decision to review")}
        with service.factory() as session, session.begin():
            session.execute(update(ResultRow).where(ResultRow.id == ok).values(verdict="correct"))
        refused = client.post(f"{API}/results/to-dataset", json={"tag": "parts", "result_ids": [ok],
                                                                 "verdicts": ["correct"]})
        assert refused.status_code == 400 and refused.json()["skipped"] == [
            {"name": mine[ok]["name"], "reason": f"result {ok} was not scored: no label to give it"}]
    finally:
        for result_id in mine:
            client.delete(f"{API}/results/{result_id}")


def _flipped(path: Path) -> bytes:
    """An image of the dataset, mirrored: new content (uploads skip content a tag already holds)."""
    return png_bytes(np.ascontiguousarray(decode(path.read_bytes())[:, ::-1]))


def _counts_at_cut(client, ref: str, names: list[str]) -> dict[str, int]:
    """False alarms and missed defects of a model on dataset images named as in splits.json (``good/<id>-...``),
    each scored through the Predictor at the model's trained cut."""
    predictor = Predictor.load(model_path({"client": client}, ref))
    counts = {"false_alarms": 0, "missed_defects": 0}
    for name in names:
        group, stem = name.split("/")
        image = decode(client.get(f"{API}/images/{int(stem.split('-')[0])}/file").content)
        flagged = predictor.predict([image[..., ::-1].copy()])[0].decision == "NG"
        counts["false_alarms" if group == "good" else "missed_defects"] += int(flagged == (group == "good"))
    return counts


def test_reviewed_results_go_to_the_dataset_and_a_retrain_is_compared_on_the_same_held_out_images(client, trained):
    import json

    files = trained["files"]
    sent = {"review-a.png": _flipped(files["good"][-1]), "review-b.png": _flipped(files["bad"][0])}
    items = client.post(f"{API}/models/m1/predict", data={"save": "true"},
                        files=[("files", (n, data, "image/png")) for n, data in sent.items()]).json()["items"]
    ids = [item["result_id"] for item in items]
    try:
        nothing = client.post(f"{API}/results/to-dataset", json={"tag": "parts", "result_ids": ids})
        assert nothing.status_code == 400
        assert nothing.json()["error"] == ("no saved result marked false alarm or missed defect: review results in "
                                           "the inspection log first")
        # whatever the model said, the reviewer corrects it: each NG is a false alarm, each OK a missed defect
        expected = {}
        for item in items:
            verdict = "false_alarm" if item["decision"] == "NG" else "missed_defect"
            expected[item["name"]] = "good" if verdict == "false_alarm" else "bad"
            reviewed = client.put(f"{API}/results/{item['result_id']}/review", json={"verdict": verdict, "by": "qa"})
            assert reviewed.status_code == 200, reviewed.text
        added = client.post(f"{API}/results/to-dataset", json={"tag": "parts", "model": "m1", "result_ids": ids})
        assert added.status_code == 201, added.text
        assert {(i["name"], i["group"], i["tag"]) for i in added.json()["items"]} == {
            (name, group, "parts") for name, group in expected.items()}
        again = client.post(f"{API}/results/to-dataset", json={"tag": "parts", "result_ids": ids})
        assert again.status_code == 400 and sorted(s["name"] for s in again.json()["skipped"]) == sorted(sent)
        assert all("already in tag 'parts'" in s["reason"] for s in again.json()["skipped"])
        # a retrain from the tag, compared with m1
        job = client.post(f"{API}/jobs", json={"model_tag": "m1-retrained", "tag": "parts", "compare_with": "m1",
                                               "parameters": FAST_PARAMETERS})
        assert job.status_code == 202, job.text
        assert job.json()["compare_with"] == client.get(f"{API}/models/m1").json()["id"]
        done = wait_job(client, job.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["images"] == {"good": 11 + list(expected.values()).count("good"),
                                  "bad": 3 + list(expected.values()).count("bad"), "mask": 3}
        new = client.get(f"{API}/models/m1-retrained").json()
        splits = {ref: json.loads((model_path(trained, ref).parent / "splits.json").read_text())
                  for ref in ("m1", "m1-retrained")}
        # held out by name: what m1 held out is held out of the retrained model too (its figures stay honest)
        assert set(splits["m1"]["held_out"]) <= set(splits["m1-retrained"]["held_out"])
        seen = set(splits["m1"]["fitted"]) | set(splits["m1"]["calibrated"])
        shared = [n for n in splits["m1-retrained"]["held_out"] if n not in seen]
        comparison = new["comparison"]
        assert comparison["earlier"] == "m1" and comparison["images"] == len(shared) > 0
        # more images, more held out: one m1 fitted or calibrated on is left out of the comparison, and said so
        left_out = len(splits["m1-retrained"]["held_out"]) > len(shared)
        assert comparison["note"] == ("held-out images m1 was trained or calibrated on are left out" if left_out
                                      else None)
        for side, ref in (("before", "m1"), ("after", "m1-retrained")):
            measured = comparison[side]
            assert measured["images"] == len(shared)
            assert measured["good"] == sum(n.startswith("good/") for n in shared)
            assert {k: measured[k] for k in ("false_alarms", "missed_defects")} == _counts_at_cut(client, ref, shared)
    finally:
        for result_id in ids:
            client.delete(f"{API}/results/{result_id}")
        client.delete(f"{API}/models/m1-retrained")


def test_imagenet_weights_the_server_cannot_get_are_refused_before_the_job_is_queued(client, trained, monkeypatch,
                                                                                      tmp_path):
    """Offline (the tests' HAMACHO_OFFLINE), with an empty torch hub cache: 400 at once, naming the choices; no
    job row. With torchvision's file in the cache, nothing is refused."""
    from hamacho.serve.weights_check import cached_weights, imagenet_problem

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    before = client.get(f"{API}/jobs").json()["total"]
    response = client.post(f"{API}/jobs", json={"model_tag": "needs-imagenet", "tag": "parts",
                                                "parameters": {"model.backbone": "resnet18"}})
    assert response.status_code == 400
    root = trained["base"] / "import"
    assert response.json() == {"error": (
        "ImageNet weights for resnet18 are not on this server and cannot be downloaded (this server is offline): "
        f"choose a weights file from the list (copy torchvision's resnet18-f37072fd.pth into {root}), or 'none' "
        "for random weights (tests only)")}
    assert client.get(f"{API}/jobs").json()["total"] == before
    cached = cached_weights("https://download.pytorch.org/models/resnet18-f37072fd.pth")
    assert cached == tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert imagenet_problem("resnet18", offline=True, roots=[root]) is None
