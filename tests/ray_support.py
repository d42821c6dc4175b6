"""Helpers of the Ray engine's tests: Ray or a reason to skip, one tiny model, a real two-node cluster."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import make_dataset, require_component

HOW = "pip install -e '.[ray]' (the dev extra has it)"
NODE_TIMEOUT = 180.0  # seconds for a started node to join on a busy machine; a failure guard, not a wait


def require_ray() -> None:
    """Skip (under CI=true: fail) when Ray Data cannot be imported, saying how to install it."""
    try:
        import ray.data  # noqa: F401
    except ImportError as exc:
        require_component(False, f"Ray: {exc.name or 'ray'} is not installed; {HOW}")


_MODELS: dict[Path, tuple[Path, Path]] = {}


def tiny_model(folder: Path) -> tuple[Path, Path]:
    """A dataset (10 test images, masks) and a PaDiM model.pt trained on it (64 px, random resnet18,
    batches of 2), made once per ``folder``."""
    if folder not in _MODELS:
        from hamacho.config import build_config
        from hamacho.train import run_training

        root = make_dataset(folder / "parts", n_train=8, n_good=5, n_defect=5, size=64)
        settings = build_config("padim", options={
            "dataset.root": str(root), "dataset.image_size": 64, "dataset.batch_size": 2,
            "model.backbone": "resnet18", "model.backbone_weights": "none",
            "project.result_path": str(folder / "results"), "report.enabled": False})
        _MODELS[folder] = (root, run_training(settings, log=lambda _: None).model_path)
    return _MODELS[folder]


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_options() -> list[str]:
    """One CPU, no GPU, every port of the node chosen free (workers: any port), in the foreground."""
    names = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "metrics-export-port", "runtime-env-agent-port")
    ports = {name: free_port() for name in names}
    return ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--min-worker-port=0",
            "--max-worker-port=0", "--block", *(f"--{name}={port}" for name, port in ports.items())]


def _processes_of(roots: list[int], marker: str) -> set[int]:
    """The processes below ``roots`` (by parent id), and any whose command line names ``marker`` (Ray's
    workers name their session folder, inside the cluster's own temporary folder)."""
    parents: dict[int, int] = {}
    named: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                named.add(int(entry.name))
    found = set(roots)
    grew = True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found | named


@contextlib.contextmanager
def two_node_cluster() -> Iterator[tuple[str, str, dict[str, str]]]:
    """A Ray cluster of two one-CPU nodes on this machine (``ray start --head``, then ``ray start --address``,
    both on 127.0.0.1, non-default ports, a temporary folder of its own, token authentication with a token
    of its own); yields its address, its Ray Client address (``ray://``) and the environment that reaches it. Every process it started is ended
    by its id on exit (nothing else of Ray's on this machine is touched)."""
    temp = tempfile.mkdtemp(prefix="hmray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    start = [sys.executable, "-m", "ray.scripts.scripts", "start"]
    port, client_port = free_port(), free_port()
    started: list[subprocess.Popen] = []
    logs = [Path(temp) / "head.log", Path(temp) / "worker.log"]
    try:
        started.append(subprocess.Popen(
            [*start, "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}",
             f"--ray-client-server-port={client_port}", *_node_options()],
            env=env, stdout=logs[0].open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_port(port, started[0], logs[0])
        started.append(subprocess.Popen(
            [*start, f"--address=127.0.0.1:{port}", *_node_options()],
            env=env, stdout=logs[1].open("w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_nodes(f"127.0.0.1:{port}", 2, env, logs)
        yield f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", env
    finally:
        pids = _processes_of([p.pid for p in started], temp)
        for pid in sorted(pids):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for process in started:
            process.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + NODE_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ray start --head ended ({process.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.2)
    raise AssertionError(f"the head's port {port} did not open within {NODE_TIMEOUT:.0f} s")


def _wait_for_nodes(address: str, count: int, env: dict[str, str], logs: list[Path]) -> None:
    """Return once the cluster at ``address`` has ``count`` live nodes (asked from a separate driver)."""
    code = ("import time, ray\n"
            f"ray.init(address={address!r}, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {NODE_TIMEOUT}\n"
            f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=NODE_TIMEOUT + 60, check=False)
    if result.stdout.strip().splitlines()[-1:] != [str(count)]:
        logs_text = "\n".join(log.read_text()[-1500:] for log in logs if log.is_file())
        raise AssertionError(f"the cluster did not reach {count} nodes:\n{result.stderr[-2000:]}\n{logs_text}")
