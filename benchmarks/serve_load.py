"""Load benchmark of ``hamacho serve``: concurrent single-image predictions against a loaded PaDiM model.

What it does (figures and how to read them in docs/service.md, "Performance"):

1. Trains a PaDiM resnet18 model at 256 px on MVTec bottle (random-init backbone: the forward costs the
   same as with ImageNet weights, and training takes about a minute) or reuses ``--model-path``.
2. Measures in this process the model's own batch-1 time, ``Predictor.predict([array])`` on decoded
   arrays, with the server's PyTorch threads and with one thread, and the PNG decode (``cv2.imdecode``):
   medians over ``--repeats`` runs after a warm-up. Also times, one by one, the steps the predict route
   adds per image (validation decode, second decode, PNG encodes and writes, clean-up).
3. Starts ``hamacho serve`` as a subprocess on a free port with a fresh data folder, imports the model
   (``POST /api/v1/models/import-path``, the model's folder given with ``--allow-path``) and loads it.
4. Runs one client sending ``--sequential`` requests one after the other (the latency of a lone request),
   a short concurrent warm-up, then ``--clients`` concurrent clients (threads, one httpx client each)
   sending ``--requests`` single-image predictions in all (``POST /api/v1/models/{tag}/predict``,
   ``save=false``) while a thread samples the server's RSS (``VmRSS``) every 0.2 s.
5. Prints latency percentiles, throughput, failures, server CPU per request, the RSS trace summary and
   the target check: p50 <= 1.5 x (forward + decode), with the faster of the two forward figures; no
   failed request; RSS flat (last quarter of the run within 5 % of the first).

With more clients than cores the requests queue: by Little's law the number in the system (``clients``)
equals throughput x mean latency, so p50 ~ clients / throughput however fast one request is. On a
2-core machine the 8-client p50 therefore measures queueing (both p50s are checked and printed).

Several replicas (docs/service.md, "Scale out"): ``--replicas N`` starts N ``hamacho serve`` processes on one
data folder (and so one SQLite database, or with ``--database-url`` a fresh PostgreSQL database per setup, as
replicas on several machines share) and the clients send their
requests round-robin over the replicas' ports (no proxy). ``--compare-replicas`` runs the same client load
against 1 replica and then 2 (each setup on a fresh data folder; no in-process timing) and prints, per setup,
the latencies, throughput, failures, server CPU and each replica's RSS (peak, last-quarter mean). Replicas
get ``--workers 0`` (API-only) when ``hamacho serve --help`` offers it, else ``--workers 1`` (said in the output).
On one machine the replicas share its cores: a second replica adds failover, not throughput.

Run:  nice -n 5 python benchmarks/serve_load.py [--model-path model.pt] [--clients 8] [--requests 200]
      [--torch-threads 1] [--replicas 2 | --compare-replicas]
Needs the serve extra and httpx; about 2.5 to 4 minutes on 2 cores (a minute less with --model-path).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = REPO.parent / "shared" / "data" / "mvtec" / "bottle"
API = "/api/v1"
TAG = "bench"
TARGET_FACTOR = 1.5
RSS_PERIOD = 0.2


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between ranks."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float | None:
    """Resident set size of a process (MiB), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def train_model(dataset: Path, folder: Path) -> Path:
    """Train PaDiM resnet18 at 256 px (random-init backbone) into ``folder``; the model file."""
    command = [sys.executable, "-m", "hamacho", "train", "--model", "padim", "--dataset-root", str(dataset),
               "--backbone", "resnet18", "--backbone-weights", "none", "--image-size", "256", "--no-report",
               "--quiet", "--result-path", str(folder)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    found = sorted(folder.rglob("model.pt"))
    if not found:
        raise SystemExit(f"training wrote no model.pt under {folder}")
    print(f"trained in {time.perf_counter() - start:.0f} s: {found[0]}")
    return found[0]


def test_images(dataset: Path) -> list[tuple[str, bytes]]:
    """The dataset's test images as (name, file bytes)."""
    paths = sorted((dataset / "test").rglob("*.png"))
    if not paths:
        raise SystemExit(f"no test images under {dataset / 'test'}")
    return [(f"{p.parent.name}_{p.name}", p.read_bytes()) for p in paths]


def _png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def _median_ms(run: Any, items: list[Any]) -> float:
    times = []
    for item in items:
        start = time.perf_counter()
        run(item)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def in_process(model_path: Path, images: list[tuple[str, bytes]], repeats: int,
               threads: int | None) -> dict[str, Any]:
    """Median batch-1 ``Predictor.predict`` time (with the server's torch threads, and with 1) and
    ``cv2.imdecode`` time (ms), after a warm-up; and the service's own per-image work beside the model."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as hamacho serve sets it (hamacho/serve/server.py)
    import torch

    from hamacho import Predictor
    from hamacho.files import atomic_write_bytes, atomic_write_text
    from hamacho.serve.storage import check_image, remove_tree

    if threads:
        torch.set_num_threads(threads)
    server_threads = torch.get_num_threads()
    predictor = Predictor.load(model_path)
    chosen = [images[i % len(images)][1] for i in range(repeats)]
    decode = _median_ms(lambda data: cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), chosen)
    arrays = [check_image(data, "x", 50_000_000).rgb() for data in chosen]
    forward: dict[int, float] = {}
    for count in dict.fromkeys((server_threads, 1)):
        torch.set_num_threads(count)
        for array in arrays[:3]:
            predictor.predict([array])
        forward[count] = _median_ms(lambda array: predictor.predict([array]), arrays)
    torch.set_num_threads(server_threads)

    # What routes/predict.py does per image besides the forward (same functions, run here one by one).
    sample = predictor.predict([arrays[0]])[0]
    folder = Path(tempfile.mkdtemp(prefix="hamacho-serve-load-files-"))
    few = chosen[:10]
    names = iter(range(len(few)))

    def write(data: bytes) -> None:
        target = folder / str(next(names))
        atomic_write_bytes(target / "image.png", data)
        atomic_write_bytes(target / "map.png", _png(np.round(sample.anomaly_map * 255).astype(np.uint8)))
        atomic_write_bytes(target / "mask.png", _png(sample.mask.astype(np.uint8) * 255))
        atomic_write_text(target / "prediction.json", "{}")

    checked = [check_image(data, "x", 50_000_000) for data in few]
    steps = {
        "check_image (header + the one full decode, on a worker thread)":
            _median_ms(lambda data: check_image(data, "x", 50_000_000), few),
        "CheckedImage.rgb (colour conversion of that decode)": _median_ms(lambda c: c.rgb(), checked),
        "map.png + mask.png encode and 4 atomic writes": _median_ms(write, few),
        "remove_tree of an old unsaved prediction (after the response)":
            _median_ms(remove_tree, sorted(folder.iterdir())),
    }
    remove_tree(folder)
    height, width = arrays[0].shape[:2]
    return {"forward_ms": forward[server_threads], "forward_1_ms": forward[1], "threads": server_threads,
            "decode_ms": decode, "width": width, "height": height, "steps": steps}


class Server:
    """``hamacho serve`` in a subprocess over a fresh data folder (stopped with SIGINT, then SIGKILL)."""

    def __init__(self, data_dir: Path, allow: Path, threads: int | None, workers: int | None = None,
                 log_name: str = "serve.log", database_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir.parent / log_name, "wb")  # noqa: SIM115 (closed in stop)
        command = [sys.executable, "-m", "hamacho", "serve", "--port", str(self.port), "--data-dir", str(data_dir),
                   "--allow-path", str(allow)]
        if workers is not None:
            command += ["--workers", str(workers)]
        if database_url:
            command += ["--database-url", database_url]
        env = {k: v for k, v in os.environ.items() if k != "HAMACHO_TOKEN"}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"hamacho serve exited with {self.process.returncode} (see {self.log.name})")
            try:
                if httpx.get(f"{self.url}{API}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"hamacho serve did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """An API call that must succeed; its JSON."""
    response = client.request(method, f"{API}{path}", **kwargs)
    if response.status_code >= 300:
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json()


def run_clients(url: str | list[str], images: list[tuple[str, bytes]], clients: int, requests: int,
                offset: int = 0) -> dict[str, Any]:
    """``requests`` single-image predictions from ``clients`` threads; latencies (ms), failures, wall time.

    With several URLs (replicas), request number i goes to replica i mod N (round robin); each client thread
    keeps one connection per replica. ``per_replica`` counts the answered requests of each.
    """
    urls = [url] if isinstance(url, str) else list(url)
    lock = threading.Lock()
    counter = iter(range(requests))
    latencies: list[float] = []
    failures: list[str] = []
    per_replica = [0] * len(urls)

    def client_loop() -> None:
        connections = [httpx.Client(base_url=u, timeout=300) for u in urls]
        try:
            while True:
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                replica = number % len(urls)
                client = connections[replica]
                name, data = images[(offset + number) % len(images)]
                start = time.perf_counter()
                try:
                    response = client.post(f"{API}/models/{TAG}/predict", files=[("files", (name, data, "image/png"))],
                                           data={"save": "false"})
                    ok = response.status_code == 200 and response.json()["items"][0]["error"] is None
                    problem = "" if ok else f"{response.status_code} {response.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if problem:
                        failures.append(problem)
                    else:
                        latencies.append(elapsed)
                        per_replica[replica] += 1
        finally:
            for connection in connections:
                connection.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "failures": failures, "wall": time.perf_counter() - start,
            "per_replica": per_replica}


class RssSampler(threading.Thread):
    """Samples a process's RSS every :data:`RSS_PERIOD` seconds until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.halt.is_set():
            value = rss_mib(self.pid)
            if value is not None:
                self.samples.append((time.monotonic() - start, value))
            self.halt.wait(RSS_PERIOD)

    def summary(self) -> dict[str, float]:
        times = np.array([t for t, _ in self.samples])
        values = np.array([v for _, v in self.samples])
        quarter = max(1, len(values) // 4)
        slope = float(np.polyfit(times, values, 1)[0]) * 60 if len(values) > 2 else 0.0
        return {"n": len(values), "start": float(values[0]), "end": float(values[-1]), "max": float(values.max()),
                "first_q": float(values[:quarter].mean()), "last_q": float(values[-quarter:].mean()),
                "slope_mib_min": slope}


def latency_line(label: str, result: dict[str, Any], requests: int) -> str:
    lat = result["latencies"]
    if not lat:
        return f"{label}: 0/{requests} ok, failed {len(result['failures'])}"
    throughput = len(lat) / result["wall"] if result["wall"] else 0.0
    return (f"{label}: {len(lat)}/{requests} ok, p50 {percentile(lat, 50):.0f} ms, p95 {percentile(lat, 95):.0f} ms, "
            f"max {max(lat):.0f} ms, throughput {throughput:.2f} img/s, failed {len(result['failures'])}")


def api_only_workers() -> tuple[int | None, str]:
    """The ``--workers`` value replicas get: 0 (API-only) when ``hamacho serve --help`` offers it, else 1; and a
    note saying which."""
    shown = subprocess.run([sys.executable, "-m", "hamacho", "serve", "--help"], capture_output=True, text=True,
                           check=False, env={**os.environ, "COLUMNS": "200"}).stdout
    option = re.search(r"--workers\b(.*?)(?=\n\s*-|\Z)", shown, re.DOTALL)
    if option and re.search(r"(?<![\d.])0<=x", option.group(1)):
        return 0, "replicas run with --workers 0 (API-only: no training worker in their process)"
    return 1, ("replicas run with --workers 1: this hamacho serve has no --workers 0 (API-only), so each replica "
               "also has an idle training worker")


class FreshDatabase:
    """An empty PostgreSQL database for one setup (a data folder is bound to its database: docs/service.md),
    created through ``admin_url`` (a role that may create databases) and dropped afterwards."""

    def __init__(self, admin_url: str, name: str) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.name = f"hamacho_load_{name}_{os.getpid()}".lower()
        self.engine = create_engine(self.admin, isolation_level="AUTOCOMMIT")
        with self.engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = self.admin.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.engine.dispose()


def measure_setup(work: Path, model_path: Path, images: list[tuple[str, bytes]], args: argparse.Namespace,
                  replicas: int, workers: int | None, name: str = "data") -> dict[str, Any]:
    """Start ``replicas`` servers on one fresh data folder, import and load the model, run the client load.

    Replicas start one after the other (each ready before the next starts); the first imports the model, every
    one loads it. Warm-ups are scaled by the replica count so that each replica gets what one alone would.
    """
    allow = model_path.parent if model_path.is_file() else model_path
    servers: list[Server] = []
    database = FreshDatabase(args.database_url, name) if args.database_url else None
    try:
        for number in range(replicas):
            log_name = "serve.log" if name == "data" and replicas == 1 else f"serve-{name}-{number + 1}.log"
            servers.append(Server(work / name, allow, args.torch_threads, workers, log_name,
                                  database.url if database else None))
            servers[-1].wait_ready()
        with httpx.Client(base_url=servers[0].url, timeout=300) as client:
            call(client, "POST", "/models/import-path", json={"path": str(model_path), "tag": TAG})
        for server in servers:
            with httpx.Client(base_url=server.url, timeout=300) as client:
                call(client, "POST", f"/models/{TAG}/load")
        urls = [server.url for server in servers]
        rss_loaded = [rss_mib(server.pid) or 0.0 for server in servers]
        warm = run_clients(urls, images, 1, 3 * replicas)
        sequential = run_clients(urls, images, 1, args.sequential, offset=3)
        # Concurrent warm-up: each request thread of each server allocates its working memory once.
        warm_concurrent = run_clients(urls, images, args.clients, 2 * args.clients * replicas)
        rss_warm = [rss_mib(server.pid) or 0.0 for server in servers]
        samplers = [RssSampler(server.pid) for server in servers]
        cpu_before = [cpu_seconds(server.pid) for server in servers]
        for sampler in samplers:
            sampler.start()
        concurrent = run_clients(urls, images, args.clients, args.requests, offset=3 + args.sequential)
        for sampler in samplers:
            sampler.halt.set()
        for sampler in samplers:
            sampler.join()
        cpu = [cpu_seconds(server.pid) - before for server, before in zip(servers, cpu_before)]
        load_after = os.getloadavg()
    finally:
        for server in servers:
            server.stop()
        if database:
            database.drop()
    return {"replicas": replicas, "workers": workers, "warm": warm, "sequential": sequential,
            "warm_concurrent": warm_concurrent, "concurrent": concurrent, "rss_loaded": rss_loaded,
            "rss_warm": rss_warm, "rss": [sampler.summary() for sampler in samplers], "cpu": cpu,
            "load_after": load_after}


def all_failures(setup: dict[str, Any]) -> list[str]:
    return [f for key in ("warm", "sequential", "warm_concurrent", "concurrent") for f in setup[key]["failures"]]


def rss_line(label: str, rss: dict[str, float], loaded: float, warm: float, warm_requests: int) -> str:
    return (f"{label}: {loaded:.0f} MiB with the model loaded, {warm:.0f} MiB after a {warm_requests}-request "
            f"concurrent warm-up; during the run ({rss['n']} samples every {RSS_PERIOD} s) start {rss['start']:.0f}, "
            f"end {rss['end']:.0f}, max {rss['max']:.0f} MiB; first quarter mean {rss['first_q']:.0f}, last quarter mean "
            f"{rss['last_q']:.0f} MiB (growth {rss['last_q'] - rss['first_q']:+.1f} MiB, slope "
            f"{rss['slope_mib_min']:+.1f} MiB/min)")


def compare_replicas(args: argparse.Namespace, total_start: float) -> None:
    """The same client load against 1 replica, then 2 on one data folder; one block per setup and a table."""
    work = Path(tempfile.mkdtemp(prefix="hamacho-serve-load-"))
    workers, note = api_only_workers()
    setups: list[dict[str, Any]] = []
    try:
        model_path = args.model_path.resolve() if args.model_path else train_model(args.dataset_root, work / "train")
        images = test_images(args.dataset_root)
        print(f"model: {model_path}")
        print(f"{note}; torch threads per replica: "
              f"{args.torch_threads or 'PyTorch default (one per core)'}; each setup on a fresh data folder "
              f"({'a fresh PostgreSQL database' if args.database_url else 'one SQLite database'} shared by its "
              "replicas); requests round-robin over the replicas' ports")
        for replicas in (1, 2):
            setups.append(measure_setup(work, model_path, images, args, replicas, workers, f"data-{replicas}"))
            print(f"  {replicas} replica(s) measured; load average now "
                  + " ".join(f"{v:.2f}" for v in setups[-1]["load_after"]))
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = []
    for setup in setups:
        replicas, concurrent = setup["replicas"], setup["concurrent"]
        lat = concurrent["latencies"]
        throughput = len(lat) / concurrent["wall"] if concurrent["wall"] else 0.0
        cpu = sum(setup["cpu"])
        print(f"--- {replicas} replica(s), --workers {workers}")
        print("  " + latency_line(f"1 client, {args.sequential} sequential requests", setup["sequential"],
                                  args.sequential))
        print("  " + latency_line(f"{args.clients} clients, {args.requests} requests", concurrent, args.requests))
        print(f"  answered per replica: {concurrent['per_replica']}; failed in all runs (warm-ups included): "
              f"{len(all_failures(setup))}")
        for problem in all_failures(setup)[:5]:
            print(f"    failure: {problem}")
        print(f"  server CPU per request: {cpu / max(1, len(lat)) * 1000:.0f} ms ({cpu:.1f} CPU-s in "
              f"{concurrent['wall']:.1f} s = {cpu / concurrent['wall']:.2f} cores busy, replicas together)")
        for number, rss in enumerate(setup["rss"]):
            print("  " + rss_line(f"replica {number + 1} RSS", rss, setup["rss_loaded"][number],
                                  setup["rss_warm"][number], 2 * args.clients))
        rows.append((replicas, percentile(setup["sequential"]["latencies"], 50) if setup["sequential"]["latencies"]
                     else math.nan, percentile(lat, 50) if lat else math.nan, percentile(lat, 95) if lat else math.nan,
                     throughput, len(concurrent["failures"]), cpu / max(1, len(lat)) * 1000, cpu / concurrent["wall"],
                     " / ".join(f"{r['max']:.0f}, {r['last_q']:.0f}" for r in setup["rss"])))
    print(f"\n{args.clients} clients, {args.requests} requests, {os.cpu_count()} CPUs, --workers {workers}:\n")
    print("| replicas | 1 client p50 | p50 | p95 | throughput | failed | server CPU / request | cores busy | "
          "RSS per replica: peak, last-quarter mean (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for replicas, seq, p50, p95, throughput, failed, cpu_ms, cores, rss in rows:
        print(f"| {replicas} | {seq:.0f} ms | {p50:.0f} ms | {p95:.0f} ms | {throughput:.1f} img/s | {failed} | "
              f"{cpu_ms:.0f} ms | {cores:.2f} | {rss} |")
    print(f"\nwhole benchmark {time.perf_counter() - total_start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", type=Path, help="reuse this model.pt (or export folder) instead of training")
    parser.add_argument("--dataset-root", type=Path, default=DEFAULT_DATASET, help="MVTec category [%(default)s]")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients [%(default)s]")
    parser.add_argument("--requests", type=int, default=200, help="predictions in the concurrent run [%(default)s]")
    parser.add_argument("--sequential", type=int, default=30, help="predictions of the 1-client run [%(default)s]")
    parser.add_argument("--repeats", type=int, default=30, help="in-process timing runs [%(default)s]")
    parser.add_argument("--torch-threads", type=int, help="PyTorch intra-op threads of the server (OMP_NUM_THREADS) "
                        "and of the in-process forward [PyTorch's default: one per core]")
    parser.add_argument("--replicas", type=int, default=1, help="hamacho serve processes on one data folder, "
                        "requests round-robin over them [%(default)s]")
    parser.add_argument("--compare-replicas", action="store_true", help="the same load against 1 replica, then 2 "
                        "(no in-process timing); a table of both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (model, data, serve.log)")
    parser.add_argument("--database-url", help="a PostgreSQL URL whose role may create databases: each setup gets "
                        "a fresh database there (as replicas on several machines would share) [SQLite in the data "
                        "folder]")
    args = parser.parse_args()
    if args.replicas < 1:
        parser.error("--replicas: 1 or more")
    if args.compare_replicas and args.replicas != 1:
        parser.error("--compare-replicas runs 1 and 2 replicas itself: leave out --replicas")

    total_start = time.perf_counter()
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average before the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.compare_replicas:
        compare_replicas(args, total_start)
        return
    work = Path(tempfile.mkdtemp(prefix="hamacho-serve-load-"))
    replicas = args.replicas
    # One replica runs as hamacho serve's default (as before); several are API-only when the CLI offers it.
    workers, note = api_only_workers() if replicas > 1 else (None, "")
    try:
        model_path = args.model_path.resolve() if args.model_path else train_model(args.dataset_root, work / "train")
        images = test_images(args.dataset_root)
        own = in_process(model_path, images, args.repeats, args.torch_threads)
        # The model's own time is its faster configuration: PyTorch's default threads spin-wait in
        # OpenMP barriers when the cores are shared, which can make a lone 2-thread forward far slower.
        forward = min(own["forward_ms"], own["forward_1_ms"])
        budget = forward + own["decode_ms"]
        print(f"model: {model_path}")
        print(f"in-process, batch 1, {own['width']}x{own['height']} PNG, median of {args.repeats} after a warm-up: "
              f"forward (Predictor.predict) {own['forward_ms']:.0f} ms with {own['threads']} torch thread(s) as the "
              f"server, {own['forward_1_ms']:.0f} ms with 1; decode (cv2.imdecode) {own['decode_ms']:.1f} ms")
        print(f"  target p50 <= {TARGET_FACTOR} x (fastest forward {forward:.0f} + decode {own['decode_ms']:.0f}) = "
              f"{TARGET_FACTOR * budget:.0f} ms")
        print("  service work per image beside the model (routes/predict.py steps, median ms): "
              + ", ".join(f"{name} {ms:.1f}" for name, ms in own["steps"].items()))
        if replicas > 1:
            print(f"{replicas} replicas on one data folder ({'PostgreSQL' if args.database_url else 'one SQLite database'}), requests round-robin over their "
                  f"ports; {note}")
        setup = measure_setup(work, model_path, images, args, replicas, workers)
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    sequential, concurrent = setup["sequential"], setup["concurrent"]
    lat = concurrent["latencies"]
    throughput = len(lat) / concurrent["wall"]
    seq_p50 = percentile(sequential["latencies"], 50)
    conc_p50 = percentile(lat, 50)
    failures = all_failures(setup)
    failed = len(failures)
    cpu_used = sum(setup["cpu"])
    load_after = setup["load_after"]
    print(latency_line(f"1 client, {args.sequential} sequential requests", sequential, args.sequential))
    print(latency_line(f"{args.clients} clients, {args.requests} requests", concurrent, args.requests))
    if replicas > 1:
        print(f"answered per replica in the concurrent run: {concurrent['per_replica']}")
    for problem in failures[:5]:
        print(f"  failure: {problem}")
    print(f"service overhead of a lone request: 1-client p50 - forward - decode = {seq_p50 - budget:+.0f} ms "
          f"(against the server's own thread setting: {seq_p50 - own['forward_ms'] - own['decode_ms']:+.0f} ms)")
    print(f"server CPU per request in the concurrent run: {cpu_used / max(1, len(lat)) * 1000:.0f} ms "
          f"({cpu_used:.1f} CPU-s in {concurrent['wall']:.1f} s = {cpu_used / concurrent['wall']:.2f} cores busy"
          f"{', replicas together' if replicas > 1 else ''})")
    print(f"Little's law: p50 ~ clients / throughput = {args.clients} / {throughput:.2f} img/s = "
          f"{args.clients / throughput * 1000:.0f} ms (measured {conc_p50:.0f} ms): {args.clients} clients on "
          f"{os.cpu_count()} cores wait in a queue, so the concurrent p50 is set by throughput, not by one request")
    for number, rss in enumerate(setup["rss"]):
        label = "server RSS" if replicas == 1 else f"replica {number + 1} RSS"
        print(rss_line(label, rss, setup["rss_loaded"][number], setup["rss_warm"][number], 2 * args.clients))
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
          f"whole benchmark {time.perf_counter() - total_start:.0f} s")
    limit = TARGET_FACTOR * budget
    checks = [
        (f"p50 1 client {seq_p50:.0f} ms <= {limit:.0f} ms ({TARGET_FACTOR} x (forward + decode))", seq_p50 <= limit),
        (f"p50 {args.clients} clients {conc_p50:.0f} ms <= {limit:.0f} ms (queue-bound: Little's law above)",
         conc_p50 <= limit),
        (f"failed requests {failed} == 0", failed == 0),
    ]
    for number, rss in enumerate(setup["rss"]):
        allowed = max(20.0, 0.05 * rss["first_q"])
        which = "" if replicas == 1 else f" (replica {number + 1})"
        text = (f"RSS flat{which}: last - first quarter {rss['last_q'] - rss['first_q']:+.1f} MiB within "
                f"+-{allowed:.0f} MiB")
        checks.append((text, abs(rss["last_q"] - rss["first_q"]) <= allowed))
    print("target check:")
    for text, passed in checks:
        print(f"  {'PASS' if passed else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
