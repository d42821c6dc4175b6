"""Helpers of the service tests: a service over a temporary data folder, tiny datasets, uploads, waits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tests.conftest import make_dataset

API = "/api/v1"
# Small and fast, like the CLI tests' FAST.
FAST_PARAMETERS = {"dataset.image_size": 64, "model.backbone": "resnet18", "model.backbone_weights": "none",
                   "report.enabled": True}
JOB_TIMEOUT = 300.0  # seconds; a busy 2-core machine is slow, a passing job is not


def dataset_files(root: Path) -> dict[str, list[Path]]:
    """The generated dataset's files per group (good: train and test good; bad; mask)."""
    make_dataset(root)
    return {"good": sorted((root / "train" / "good").glob("*.png")) + sorted((root / "test" / "good").glob("*.png")),
            "bad": sorted((root / "test" / "scratch").glob("*.png")),
            "mask": sorted((root / "ground_truth" / "scratch").glob("*.png"))}


def upload(client: Any, group: str, paths: list[Path], tag: str | None = "parts", **extra: Any) -> Any:
    """POST /images with the files."""
    data = {"group": group, **extra}
    if tag is not None:
        data["tag"] = tag
    return client.post(f"{API}/images", data=data,
                       files=[("files", (p.name, p.read_bytes(), "image/png")) for p in paths])


def upload_dataset(client: Any, files: dict[str, list[Path]], tag: str = "parts") -> dict[str, list[dict]]:
    """Upload every group; return the created images per group."""
    created = {}
    for group in ("good", "bad", "mask"):
        response = upload(client, group, files[group], tag)
        assert response.status_code == 201, response.text
        created[group] = response.json()["items"]
    return created


def wait_job(client: Any, job_id: int, timeout: float = JOB_TIMEOUT) -> dict:
    """Poll a job until it leaves queued/running (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"{API}/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} ({job['phase']}) after {timeout} s"
        time.sleep(0.3)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an array as PNG."""
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


def decode(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG bytes (unchanged channels)."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
