"""A service job on good images only (the usual first job) trains like ``hamacho train`` on good/ alone."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig
from tests.databases import service_database_url
from tests.serve_support import API, FAST_PARAMETERS, dataset_files, wait_job


def test_a_job_of_good_images_only_trains_and_its_model_predicts(tmp_path, database_url):
    files = dataset_files(tmp_path / "parts")
    mounted = tmp_path / "import" / "line1"
    mounted.mkdir(parents=True)
    unseen = files["good"][-1]  # kept out of training: predicted below
    for path in files["good"][:-1]:
        shutil.copy(path, mounted / f"{path.parent.parent.name}-{path.name}")
    config = ServiceConfig(data_dir=tmp_path / "data", database_url=service_database_url(database_url),
                           allowed_roots=[tmp_path / "import"])
    with TestClient(create_app(config)) as client:
        registered = client.post(f"{API}/images/paths", json={"paths": [str(mounted)], "group": "good",
                                                              "tag": "first"})
        assert registered.status_code == 201, registered.text
        assert len(registered.json()["items"]) == 10
        job = client.post(f"{API}/jobs", json={"model_tag": "first-model", "tag": "first",
                                               "parameters": FAST_PARAMETERS})
        assert job.status_code == 202, job.text
        done = wait_job(client, job.json()["id"])
        assert done["status"] == "succeeded", done
        assert done["error"] is None and done["images"] == {"good": 10, "bad": 0, "mask": 0}
        model = client.get(f"{API}/models/first-model").json()
        # no defective images: auto weighs the good calibration images against synthetic defects (balanced),
        # between the good-image rule at 1 % and 10 % false alarms; no metrics without defective images
        image, thresholds = model["thresholds"]["image"], model["thresholds"]
        assert (thresholds["method"], thresholds["rule"]) == ("auto", "balanced")
        assert image["raw"] > 0 and image["source"].startswith("balanced: the cut with the best balanced accuracy "
                                                               "between the scores of 10 good image(s) and 6 synthetic")
        alarms = thresholds["false_alarms"]  # the expected false-alarm rate at that threshold, with its range
        assert alarms["good_images"] == model["dataset"]["images_calibrated"] and alarms["target_fpr"] == 0.01
        assert alarms["expected_fpr_low"] < alarms["expected_fpr"] < alarms["expected_fpr_high"]
        assert 0.01 <= alarms["expected_fpr"] <= 0.1 + 1e-9  # never beyond threshold.max_fpr
        # 8 fitted, 2 held out; the 8 also scored out of fold: all 10 calibrate
        assert model["dataset"]["images_fitted"] == 8 and model["dataset"]["images_calibrated"] == 10
        assert model["dataset"]["counts"]["test"] == {"good": 2}
        assert model["metrics"]["image_AUROC"] is None
        # recall estimated on synthetic defects pasted on the 2 held-out good images (3 kinds each)
        synthetic = model["synthetic_recall"]
        assert (synthetic["images"], synthetic["defects"]) == (2, 6) and 0 <= synthetic["flagged"] <= 1
        assert synthetic["flagged"] == pytest.approx(sum(synthetic["by_kind"].values()) / 3)
        assert client.get(model["report_url"]).status_code == 200
        # the same model folder imported from the server's disk keeps its card's findings (metrics.json's)
        stored = [folder for folder in (config.data_dir / "models").iterdir() if folder.is_dir()]
        assert len(stored) == 1 and (stored[0] / "metrics.json").is_file()
        shutil.copytree(stored[0], tmp_path / "import" / "copy")
        copy = client.post(f"{API}/models/import-path", json={"path": str(tmp_path / "import" / "copy"),
                                                               "tag": "copied"})
        assert copy.status_code == 201, copy.text
        assert copy.json()["synthetic_recall"] == synthetic
        assert copy.json()["thresholds"]["false_alarms"] == alarms
        response = client.post(f"{API}/models/first-model/predict", files=[
            ("files", (p.name, p.read_bytes(), "image/png")) for p in (files["bad"][0], unseen)])
        assert response.status_code == 200, response.text
        defective, good = response.json()["items"]
        assert defective["decision"] == "NG" and good["decision"] == "OK"
        assert defective["raw_score"] > image["raw"] > good["raw_score"]
        assert not (config.data_dir / "jobs" / str(done["id"])).exists()
