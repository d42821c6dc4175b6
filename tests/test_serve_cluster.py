"""Plant scale on one machine, with real processes on loopback: API replicas (``hamacho serve --workers 0``) and
training workers (``hamacho worker``) sharing one database and one data folder.

The acceptance test of docs/service.md "Scale out" runs on PostgreSQL; the worker's own stop and cancel paths
run on both databases. A worker is stopped at a chosen point with the pause seam (tests/seams), never after a
sleep: the run waits in its first feature-extraction step, having written a marker file, until it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from tests.conftest import pause_env
from tests.serve_support import (
    API,
    FAST_PARAMETERS,
    JOB_TIMEOUT,
    dataset_files,
    free_port,
    upload_dataset,
    wait_for,
    wait_healthy,
    wait_job,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9 of process groups: Linux")
# seconds: a killed worker's job is queued again this long after its last heartbeat (renewed every third of it
# by the worker's loop and by the training process: one of them is late on a busy machine, not both).
LEASE = "10"


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HAMACHO_TOKEN", "HAMACHO_PAUSE_AT")}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


def launch(args: list[str], log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """A hamacho process in its own process group (so that kill -9 takes its children too: a machine lost)."""
    with open(log, "ab") as output:
        return subprocess.Popen([sys.executable, "-m", "hamacho", *args], env=environment(extra_env),
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def replica(database_url: str, data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    return launch(["serve", "--port", str(port), "--data-dir", str(data_dir), "--database-url", database_url,
                   "--workers", "0"], log)


def worker(database_url: str, data_dir: Path, log: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    return launch(["worker", "--database-url", database_url, "--data-dir", str(data_dir), "--device", "cpu",
                   "--lease-seconds", LEASE], log, extra_env)


def kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def running_on(client: httpx.Client, pid: int) -> list[dict]:
    jobs = client.get(f"{API}/jobs", params={"status": "running"}).json()["items"]
    return [job for job in jobs if job["worker"] and f":{pid}:" in job["worker"]]


def test_two_replicas_two_workers_one_postgresql(tmp_path, postgresql_url):
    files = dataset_files(tmp_path / "parts")
    data_dir, logs = tmp_path / "data", tmp_path
    port_a, port_b = free_port(), free_port()
    # both replicas start at the same moment on an empty database: one migrates, both come up
    processes = {"a": replica(postgresql_url, data_dir, port_a, logs / "a.log"),
                 "b": replica(postgresql_url, data_dir, port_b, logs / "b.log")}
    try:
        wait_healthy(processes["a"], port_a, logs / "a.log")
        wait_healthy(processes["b"], port_b, logs / "b.log")
        marker = tmp_path / "paused"
        processes["w1"] = worker(postgresql_url, data_dir, logs / "w1.log", pause_env("feature extraction", marker))
        processes["w2"] = worker(postgresql_url, data_dir, logs / "w2.log")
        with httpx.Client(base_url=f"http://127.0.0.1:{port_a}", timeout=60) as a, \
                httpx.Client(base_url=f"http://127.0.0.1:{port_b}", timeout=60) as b:
            upload_dataset(a, files)  # images through A, jobs through B
            queued = [b.post(f"{API}/jobs", json={"model_tag": f"m{i}", "tag": "parts",
                                                  "parameters": FAST_PARAMETERS}) for i in range(4)]
            assert [r.status_code for r in queued] == [202] * 4, [r.text for r in queued]
            ids = [r.json()["id"] for r in queued]
            # worker 1 holds a job, paused inside it; worker 2 runs another meanwhile
            wait_for(marker.exists, JOB_TIMEOUT, "worker 1 to pause in its job")
            (killed,) = running_on(b, processes["w1"].pid)
            assert killed["attempt"] == 1
            # replica A restarted (kill -9 and start again) while worker 2 runs a job: its start-up touches
            # only expired leases, so that job runs on as its first attempt
            other = running_on(b, processes["w2"].pid)
            kill_group(processes["a"])
            processes["a"] = replica(postgresql_url, data_dir, port_a, logs / "a.log")
            wait_healthy(processes["a"], port_a, logs / "a.log")
            # the machine of worker 1 is lost: the worker and its training process, kill -9
            kill_group(processes["w1"])
            processes["w3"] = worker(postgresql_url, data_dir, logs / "w3.log")  # a machine joins
            done = [wait_job(a, job_id, timeout=JOB_TIMEOUT + float(LEASE)) for job_id in ids]
            assert [job["status"] for job in done] == ["succeeded"] * 4, done
            attempts = {job["id"]: job["attempt"] for job in done}
            assert attempts == {job_id: 2 if job_id == killed["id"] else 1 for job_id in ids}
            for job in other:
                assert attempts[job["id"]] == 1
            models = b.get(f"{API}/models").json()["items"]
            assert sorted(m["tag"] for m in models) == ["m0", "m1", "m2", "m3"]  # one model per job
            assert sorted(job["model_id"] for job in done) == sorted(m["id"] for m in models)
            assert len(list((data_dir / "models").iterdir())) == 4
            # the same image scored on both replicas: the same numbers
            image = files["bad"][0]
            scored = [client.post(f"{API}/models/m0/predict", files=[("files", (image.name, image.read_bytes(),
                                                                                 "image/png"))]).json()["items"][0]
                      for client in (a, b)]
            assert scored[0]["error"] is None
            assert (scored[0]["score"], scored[0]["decision"]) == (scored[1]["score"], scored[1]["decision"])
            assert scored[0]["raw_score"] == scored[1]["raw_score"]
            # a model loaded through B is kept by every replica: A loads it at its next sync
            assert b.post(f"{API}/models/m1/load").status_code == 200
            id_a, id_b = (client.get(f"{API}/health").json()["replica"] for client in (a, b))

            def holders(tag: str) -> list[list[str]]:
                return [item["replicas"] for item in a.get(f"{API}/loaded").json()["items"] if item["tag"] == tag]

            wait_for(lambda: holders("m1") == [sorted([id_a, id_b])], 60, "replica A to load the kept model")
            in_b = b.get(f"{API}/health").json()["models_loaded"]
            # deleted through A: B answers 404 at once, and frees its memory at its next sync
            assert a.delete(f"{API}/models/m1").status_code == 200
            gone = b.post(f"{API}/models/m1/predict", files=[("files", (image.name, image.read_bytes(), "image/png"))])
            assert gone.status_code == 404 and gone.json() == {"error": "no model with id or tag 'm1'"}
            assert b.get(f"{API}/models/m1").status_code == 404 and holders("m1") == []
            wait_for(lambda: b.get(f"{API}/health").json()["models_loaded"] == in_b - 1, 60,
                     "replica B to free the deleted model's memory")
        lines = (logs / "w3.log").read_text() + (logs / "w2.log").read_text()
        assert f"job {killed['id']} attempt 2: running padim -> model " in lines
        assert f"job {killed['id']} attempt 2: succeeded" in lines
    finally:
        for process in processes.values():
            kill_group(process)


def test_worker_stops_cleanly_and_cancel_reaches_it(tmp_path, postgresql_url):
    """SIGTERM puts the worker's job back in the queue (the attempt does not count); a cancel given to the API
    stops a job running in another process. On PostgreSQL, the database of workers on other machines (the queue's
    SQL is tested on both databases in test_serve_job_lease.py)."""
    database_url = postgresql_url
    files = dataset_files(tmp_path / "parts")
    data_dir, port = tmp_path / "data", free_port()
    api = replica(database_url, data_dir, port, tmp_path / "api.log")
    marker = tmp_path / "paused"
    processes = {"api": api}
    try:
        wait_healthy(api, port, tmp_path / "api.log")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            upload_dataset(client, files)
            first = client.post(f"{API}/jobs", json={"model_tag": "cancelled", "tag": "parts",
                                                     "parameters": FAST_PARAMETERS}).json()
            second = client.post(f"{API}/jobs", json={"model_tag": "later", "tag": "parts",
                                                      "parameters": FAST_PARAMETERS}).json()
            assert client.get(f"{API}/jobs/{first['id']}").json()["status"] == "queued"  # no worker yet
            pause = pause_env("feature extraction", marker)
            processes["w"] = worker(database_url, data_dir, tmp_path / "w.log", pause)
            wait_for(marker.exists, JOB_TIMEOUT, "the worker to pause in the first job")
            assert client.post(f"{API}/jobs/{first['id']}/cancel").status_code == 200
            ended = wait_job(client, first["id"])
            assert ended["status"] == "cancelled" and "no model was saved" in ended["error"]
            # the worker goes on with the next job; SIGTERM there gives it back
            marker.unlink()
            wait_for(marker.exists, JOB_TIMEOUT, "the worker to pause in the second job")
            processes["w"].send_signal(signal.SIGTERM)
            assert processes["w"].wait(timeout=60) == 0
            log = (tmp_path / "w.log").read_text()
            assert "worker stopped (SIGTERM)" in log and "Traceback" not in log
            back = client.get(f"{API}/jobs/{second['id']}").json()
            assert back["status"] == "queued" and back["attempt"] == 0 and back["worker"] is None
            # another worker takes it to the end
            processes["w2"] = worker(database_url, data_dir, tmp_path / "w2.log")
            assert wait_job(client, second["id"])["status"] == "succeeded"
            assert [m["tag"] for m in client.get(f"{API}/models").json()["items"]] == ["later"]
    finally:
        for process in processes.values():
            kill_group(process)
