"""An inference-only install (``hamacho[serve,onnx]``, no PyTorch) imports exported models and predicts.

The service runs in a subprocess whose imports of torch, torchvision, lightning, torchmetrics and
pytorch_lightning find nothing (as where they are not installed), over real HTTP on 127.0.0.1. The ONNX
export it serves is made here beforehand, with PyTorch.
"""

from __future__ import annotations

import io
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("onnxruntime")
import httpx

from hamacho.config import build_config
from hamacho.extras import training_unavailable
from hamacho.predictor import Predictor
from tests.conftest import make_dataset
from tests.float_bounds import file_tolerance
from tests.serve_support import API, free_port, start_service, stop_service

START_TIMEOUT = 120.0
BLOCKED = ("torch", "torchvision", "lightning", "torchmetrics", "pytorch_lightning")
# Run in the subprocess: PathFinder (where site-packages are searched) finds none of BLOCKED, so
# `import torch` raises ModuleNotFoundError and importlib.util.find_spec("torch") is None, as without them.
BOOTSTRAP = """
import importlib.machinery, sys

BLOCKED = {blocked!r}


class WithoutTorch(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return super().find_spec(name, path, target)


assert not [name for name in sys.modules if name.partition(".")[0] in BLOCKED]
sys.meta_path[:] = [WithoutTorch if f is importlib.machinery.PathFinder else f for f in sys.meta_path]

import uvicorn

from hamacho.serve.app import create_app
from hamacho.serve.service_config import ServiceConfig

data_dir, root, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = create_app(ServiceConfig(data_dir=data_dir, allowed_roots=[root]))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """A tiny PaDiM (resnet18, 64 px) trained here; its model.pt, ONNX export and a probe image in import/."""
    from hamacho.export import export_model
    from hamacho.train import run_training

    base = tmp_path_factory.mktemp("inference-only")
    parts = make_dataset(base / "parts", n_train=8, n_good=2, n_defect=2)
    settings = build_config("padim", options={"dataset.root": str(parts), "dataset.image_size": 64,
                                              "model.backbone": "resnet18", "model.backbone_weights": "none",
                                              "project.result_path": str(base / "results"),
                                              "report.enabled": False})
    model_path = run_training(settings, log=lambda _m: None).model_path
    (base / "import").mkdir()
    folder = export_model(model_path, "onnx", base / "import" / "onnx", log=lambda _m: None).folder
    shutil.copy(model_path, base / "import" / "model.pt")
    shutil.copy(parts / "test" / "scratch" / "000.png", base / "import" / "probe.png")
    return {"base": base, "export": folder, "model": base / "import" / "model.pt",
            "probe": base / "import" / "probe.png",
            "bad": parts / "test" / "scratch" / "000.png", "good": parts / "test" / "good" / "000.png"}


@pytest.fixture
def server(exported, tmp_path) -> Iterator[str]:
    """The service without PyTorch, in a subprocess; yields its base URL."""
    port = free_port()
    process = start_service([sys.executable, "-c", BOOTSTRAP.format(blocked=BLOCKED), str(tmp_path / "data"),
                             str(exported["base"] / "import"), str(port)], port, tmp_path / "serve.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_service(process)


def upload(path: Path) -> list:
    return [("files", (path.name, path.read_bytes(), "image/png"))]


def test_without_pytorch_exports_import_and_predict_and_jobs_are_refused(exported, server):
    folder = exported["export"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        for path in folder.iterdir():
            handle.write(path, f"export-onnx/{path.name}")
    reference = Predictor.load(folder, device="cpu").predict([str(exported["bad"]), str(exported["good"])])
    with httpx.Client(base_url=server, timeout=120) as client:
        # training: refused at once, in one line, with nothing queued
        response = client.post(f"{API}/jobs", json={"model_tag": "never", "image_ids": [1, 2]})
        assert response.status_code == 422
        assert response.json() == {"error": "training needs PyTorch, which is not installed here: pip "
                                            "install 'hamacho[train]'; exported models (ONNX, OpenVINO) can "
                                            "be imported and used for predictions"}
        assert client.get(f"{API}/jobs").json()["total"] == 0
        options = client.get(f"{API}/options")  # the UI's forms: models and settings, training marked unavailable
        assert options.status_code == 200 and "padim" in {m["name"] for m in options.json()["models"]}
        assert options.json()["training"] == {"available": False, "reason": response.json()["error"]}
        # exports: imported as a zip and by server-side path, loaded, and predicting
        zipped = client.post(f"{API}/models/import", data={"tag": "line-a"},
                             files=[("file", ("export.zip", archive.getvalue(), "application/zip"))])
        assert zipped.status_code == 201, zipped.text
        assert zipped.json()["format"] == "onnx" and zipped.json()["model"] == "padim"
        by_path = client.post(f"{API}/models/import-path", json={"path": str(folder), "tag": "line-b"})
        assert by_path.status_code == 201, by_path.text
        loaded = client.post(f"{API}/models/line-b/load")
        assert loaded.status_code == 200 and loaded.json()["items"][0]["tag"] == "line-b"
        for tag in ("line-a", "line-b"):
            response = client.post(f"{API}/models/{tag}/predict",
                                   files=upload(exported["bad"]) + upload(exported["good"]))
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            assert [item["decision"] for item in items] == [ref.decision for ref in reference] == ["NG", "OK"]
            for item, ref in zip(items, reference, strict=True):  # same batch, other process: float_bounds.py
                tol = file_tolerance(exported["model"], ref.raw_score)
                assert item["raw_score"] == pytest.approx(ref.raw_score, rel=tol.raw_rtol)
            assert client.get(items[0]["heatmap_url"]).status_code == 200
        by_server_path = client.post(f"{API}/models/line-a/predict", data={"paths": str(exported["probe"])})
        assert by_server_path.status_code == 200, by_server_path.text
        item = by_server_path.json()["items"][0]
        tol = file_tolerance(exported["model"], reference[0].raw_score)  # a batch of one, not of two
        assert item["raw_score"] == pytest.approx(reference[0].raw_score, rel=tol.raw_rtol)
        # a model.pt needs PyTorch: refused in one line, and nothing is listed
        response = client.post(f"{API}/models/import", data={"tag": "torch-file"},
                               files=[("file", ("model.pt", exported["model"].read_bytes(),
                                                "application/octet-stream"))])
        assert response.status_code == 400
        assert "needs PyTorch, which is not installed here" in response.json()["error"]
        assert "\n" not in response.json()["error"]
        assert [m["tag"] for m in client.get(f"{API}/models").json()["items"]] == ["line-b", "line-a"]


def test_this_install_can_train():
    assert training_unavailable() is None
