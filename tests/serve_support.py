"""Helpers of the service tests: a service over a temporary data folder, tiny datasets, uploads, waits."""

from __future__ import annotations

import os
import socket
import subprocess
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
START_TIMEOUT = 120.0  # seconds for a started service to answer /health on a busy machine


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(args: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a service process (its output to ``log``) and return once it answers /health on ``port``.

    Args:
        args: The command, e.g. ``[sys.executable, "-m", "hamacho", "serve", "--port", str(port), ...]``.
        port: The port it listens on (127.0.0.1).
        log: File for its stdout and stderr, shown when it does not start.
        env: Its environment (default: this process's, without HAMACHO_TOKEN).

    Raises:
        AssertionError: When it exits or does not answer within :data:`START_TIMEOUT`.
    """
    env = env if env is not None else {k: v for k, v in os.environ.items() if k != "HAMACHO_TOKEN"}
    with open(log, "ab") as output:
        process = subprocess.Popen(args, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=output,
                                   stderr=subprocess.STDOUT)
    try:
        wait_healthy(process, port, log)
    except AssertionError:
        stop_service(process)
        raise
    return process


def wait_healthy(process: subprocess.Popen, port: int, log: Path) -> None:
    """Return once a started service answers /health on ``port``.

    Raises:
        AssertionError: When it exits or does not answer within :data:`START_TIMEOUT` (with its log's end).
    """
    import httpx

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the service did not answer within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)  # polling for the start, not a wait for a result


def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Return once ``condition()`` is true; fail after ``timeout`` seconds naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def stop_service(process: subprocess.Popen) -> None:
    """Terminate a service process (kill it after 30 s) and reap it."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


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
