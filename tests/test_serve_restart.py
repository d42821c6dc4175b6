"""kill -9 of a real server during a training job and an upload: the restarted server is consistent, and the job
its worker gave back runs again (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from tests.conftest import FAST, pause_env
from tests.serve_support import (
    API,
    FAST_PARAMETERS,
    dataset_files,
    free_port,
    start_service,
    upload_dataset,
    wait_for,
    wait_job,
)


def start_server(data_dir: Path, port: int, database_url: str, extra_env: dict[str, str] | None = None
                 ) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if k != "HAMACHO_TOKEN"}, **(extra_env or {})}
    return start_service([sys.executable, "-m", "hamacho", "serve", "--port", str(port), "--data-dir", str(data_dir),
                          "--database-url", database_url, "--allow-path", str(data_dir.parent / "import")], port,
                         data_dir.parent / "serve.log", env)


def worker_pids(data_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "hamacho.serve.worker" in command and str(data_dir) in command:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 and /proc: Linux")
def test_kill_during_training_and_upload_then_restart(tmp_path, cli):
    """On SQLite, the one-machine default (a replica and a worker killed with -9 and started again on
    PostgreSQL: tests/test_serve_cluster.py)."""
    from tests.databases import fresh_database

    with fresh_database("sqlite", tmp_path) as database_url:
        _kill_during_training_and_upload_then_restart(tmp_path, cli, database_url)


def _kill_during_training_and_upload_then_restart(tmp_path, cli, database_url):
    files = dataset_files(tmp_path / "parts")
    (tmp_path / "import").mkdir()
    trained = cli("train", "--dataset-root", str(tmp_path / "parts"), "--result-path", str(tmp_path / "import"),
                  *FAST)
    assert trained.exit_code == 0, trained.err
    data_dir = tmp_path / "data"
    marker = tmp_path / "paused"
    port = free_port()
    server = start_server(data_dir, port, database_url, pause_env("feature extraction", marker))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            created = upload_dataset(client, files)
            model = client.post(f"{API}/models/import-path", json={
                "path": str(tmp_path / "import" / "padim" / "parts"), "tag": "kept"})
            assert model.status_code == 201, model.text
            job = client.post(f"{API}/jobs", json={"model_tag": "lost", "tag": "parts",
                                                   "parameters": FAST_PARAMETERS}).json()
        wait_for(marker.exists, 180, "the training job to reach feature extraction")
        assert worker_pids(data_dir)
        # an upload in flight: headers and half of the body sent, then the server dies
        upload = socket.create_connection(("127.0.0.1", port))
        body = files["good"][0].read_bytes()
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"group\"\r\n\r\ngood\r\n--{boundary}\r\n"
                f"Content-Disposition: form-data; name=\"files\"; filename=\"half.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + body[: len(body) // 2]
        upload.sendall((f"POST {API}/images HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                        f"boundary={boundary}\r\nContent-Length: {len(head) + len(body)}\r\n\r\n").encode() + head)
        time.sleep(0.5)  # not a race: whatever the server got of it by now, the outcome must be consistent
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        upload.close()
        # Linux sent the training process SIGTERM with its server's death: it gave its job back
        wait_for(lambda: not worker_pids(data_dir), 60, "the worker to end with its server")
        # what a kill in the middle of writing leaves behind: old enough to be provably dead...
        hour_ago = time.time() - 3600
        for path in (data_dir / "images" / ".abc.png.x1y2.tmp", data_dir / "images" / f"{'0' * 32}.png"):
            path.write_bytes(body)
            os.utime(path, (hour_ago, hour_ago))
        (data_dir / "models" / "feedfacefeedfacefeedfacefeedface").mkdir()
        os.utime(data_dir / "models" / "feedfacefeedfacefeedfacefeedface", (hour_ago, hour_ago))
        # ...and a file another replica may be writing right now: young, so it stays
        young = data_dir / "images" / f"{'1' * 32}.png"
        young.write_bytes(body)

        server = start_server(data_dir, port, database_url)
        with httpx.Client(base_url=base, timeout=60) as client:
            listed = client.get(f"{API}/images", params={"limit": 1000}).json()
            assert sorted(i["id"] for i in listed["items"]) == sorted(i["id"] for g in created.values() for i in g)
            assert "half.png" not in {i["name"] for i in listed["items"]}
            stored = {p.name for p in (data_dir / "images").iterdir()}
            assert len(stored) == listed["total"] + 1 == 18 and young.name in stored
            assert not (data_dir / "models" / "feedfacefeedfacefeedfacefeedface").exists()
            # the job given back runs again here, as its first counted attempt, and lists its model once
            done = wait_job(client, job["id"])
            assert done["status"] == "succeeded", done
            assert done["attempt"] == 1 and done["worker"] is None
            assert sorted(m["tag"] for m in client.get(f"{API}/models").json()["items"]) == ["kept", "lost"]
            assert len(list((data_dir / "models").iterdir())) == 2
            assert not (data_dir / "jobs").exists() or not list((data_dir / "jobs").iterdir())
            # and it works: the kept model predicts
            response = client.post(f"{API}/models/kept/predict", files=[
                ("files", (files["bad"][0].name, files["bad"][0].read_bytes(), "image/png"))])
            assert response.status_code == 200 and response.json()["items"][0]["error"] is None
            assert response.json()["items"][0]["decision"] == "NG"  # the generated defect is obvious
    finally:
        server.kill()
        server.wait(timeout=30)
        for pid in worker_pids(data_dir):
            os.kill(pid, signal.SIGKILL)
