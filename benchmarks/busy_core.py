"""How much of its idle speed each entry point keeps when another process keeps one core busy.

A line PC is never idle (camera acquisition, PLC links, a viewer). Every figure is measured twice: on an
idle machine, then beside a process that spins on one core; the share kept is idle time / busy time (a
fair share on 2 cores: 0.5x). Rows:

* the library's ``Predictor`` on decoded bottle images, per model (PaDiM, PatchCore) and runtime (torch,
  ONNX Runtime, OpenVINO), best of 3 passes; torch also with ``OMP_WAIT_POLICY=ACTIVE`` (OpenMP threads
  spinning while they wait, PyTorch's default before Hamacho asked for passive waiting: the cause);
* ``hamacho train`` (PaDiM, the training images below) and ``hamacho inference`` (``--no-pictures``) as a
  user runs them, whole-command wall time, best of 2;
* ``hamacho serve``: median latency of one client's single-image predictions.

    python benchmarks/busy_core.py                # mobilenet_v2 ImageNet weights when the file is there
    python benchmarks/busy_core.py --only predictor
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.serve_load import Server, call

BOTTLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec" / "bottle"
WEIGHTS = BOTTLE.parents[1] / "weights" / "mobilenet_v2-imagenet.pth"
CHILD = r"""
import json, sys, time
from pathlib import Path
from hamacho.data.decoding import read_image
from hamacho.predictor import Predictor
from hamacho.resources import peak_rss_mb
predictor = Predictor.load(sys.argv[1], device="cpu")
images = [read_image(p) for p in sorted(Path(sys.argv[2]).rglob("*.png"))[: int(sys.argv[3])]]
predictor.predict(images[:4])
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    predictor.predict(images)
    best = min(best, (time.perf_counter() - start) / len(images))
print(json.dumps([best * 1000, peak_rss_mb()]))
"""


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """A process spinning on one core while the ``with`` block runs."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it take its core
        yield
    finally:
        process.kill()
        process.wait()


def idle_and_busy(measure: Callable[[], float]) -> tuple[float, float]:
    """``measure()`` on the idle machine, then beside a busy core."""
    idle = measure()
    with busy_core():
        busy = measure()
    return idle, busy


def hamacho(*args: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds of one ``hamacho`` command (which must succeed)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hamacho", *args], capture_output=True, text=True, env=env,
                          check=False)
    if done.returncode:
        raise SystemExit(f"hamacho {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - start


PEAK_RSS: dict[Path, float] = {}  # each model's Predictor process's peak RSS (MiB), from its last run


def predictor_ms(model: Path, images: Path, count: int, policy: str | None = None) -> float:
    """Best ms/image of the Predictor in a child process (``policy``: an OMP_WAIT_POLICY to force)."""
    env = dict(os.environ)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", CHILD, str(model), str(images), str(count)], env=env,
                          capture_output=True, text=True, check=True)
    ms, PEAK_RSS[model] = json.loads(done.stdout.strip().splitlines()[-1])
    return float(ms)


def service_ms(work: Path, model: Path, images: list[Path]) -> float:
    """Median latency (ms) of one client's single-image predictions against ``hamacho serve``."""
    server = Server(work / f"serve-{time.monotonic_ns()}", model.parent, threads=None)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=300) as client:
            call(client, "POST", "/models/import-path", json={"path": str(model), "tag": "busy"})
            call(client, "POST", "/models/busy/load")
            times = []
            for number, path in enumerate(images * 2):
                start = time.perf_counter()
                call(client, "POST", "/models/busy/predict", files=[("files", (path.name, path.read_bytes()))],
                     data={"save": "false"})
                if number >= 2:  # the first two warm the server up
                    times.append((time.perf_counter() - start) * 1000)
    finally:
        server.stop()
    return statistics.median(times)


def train(work: Path, model: str, dataset: Path, backbone: list[str]) -> tuple[Path, float]:
    """Train ``model`` on ``dataset``; its model file and the wall seconds."""
    out = work / f"{model}-{time.monotonic_ns()}"
    seconds = hamacho("train", "--model", model, "--dataset-root", str(dataset), *backbone, "--no-report",
                      "--quiet", "--result-path", str(out))
    return next(out.rglob("model.pt")), seconds


def row(label: str, unit: str, idle: float, busy: float, rss: float | None = None) -> None:
    """One table row: idle, busy, the share of the idle speed kept (and the peak RSS of a Predictor row)."""
    memory = f"{rss:,.0f}" if rss is not None else ""
    print(f"| {label} | {idle:.1f} {unit} | {busy:.1f} {unit} | {idle / busy:.2f}x | {memory} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-images", type=int, default=30, help="good bottle images to train on")
    parser.add_argument("--images", type=int, default=16, help="test images scored per pass")
    parser.add_argument("--only", default="predictor,cli,service", help="comma-separated: predictor, cli, service")
    parser.add_argument("--runtimes", default="torch,onnx,openvino")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    backbone = (["--backbone", "mobilenet_v2", "--backbone-weights", str(WEIGHTS)] if WEIGHTS.is_file()
                else ["--backbone", "resnet18", "--backbone-weights", "none"])
    print(f"{os.cpu_count()} cores; backbone {backbone[1]}; {args.train_images} training images, {args.images} "
          "test images; one core kept busy by `python -c 'while True: pass'`\n")
    print("| entry point | idle | one core busy | idle speed kept | Predictor peak RSS MiB |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="hamacho-busy-") as tmp:
        work = Path(tmp)
        dataset = work / "data"
        (dataset / "good").mkdir(parents=True)
        for path in sorted((BOTTLE / "train" / "good").glob("*.png"))[: args.train_images]:
            (dataset / "good" / path.name).symlink_to(path)
        tests = sorted((BOTTLE / "test").rglob("*.png"))[:: max(1, 83 // args.images)][: args.images]
        (work / "test").mkdir()
        for number, path in enumerate(tests):
            (work / "test" / f"{number:03d}_{path.name}").symlink_to(path)
        models = {name: train(work, name, dataset, backbone)[0] for name in ("padim", "patchcore")}
        if "predictor" in parts:
            for name, model in models.items():
                for runtime in args.runtimes.split(","):
                    target = model
                    if runtime != "torch":
                        target = model.parent / f"export-{runtime}"
                        hamacho("export", "--model-path", str(model), "--format", runtime, "--output", str(target))
                    idle, busy = idle_and_busy(lambda t=target: predictor_ms(t, work / "test", args.images))
                    row(f"Predictor, {name}, {runtime}", "ms/image", idle, busy, PEAK_RSS[target])
                idle, busy = idle_and_busy(lambda m=model: predictor_ms(m, work / "test", args.images, "ACTIVE"))
                row(f"Predictor, {name}, torch, OMP_WAIT_POLICY=ACTIVE (spinning)", "ms/image", idle, busy)
        if "cli" in parts:
            idle, busy = idle_and_busy(lambda: min(train(work, "padim", dataset, backbone)[1] for _ in range(2)))
            row(f"hamacho train, padim, {args.train_images} images", "s", idle, busy)
            for name, model in models.items():
                command = ("inference", "--model-path", str(model), "--image-path", str(work / "test"), "--no-pictures",
                           "--quiet", "--save-path")
                idle, busy = idle_and_busy(
                    lambda c=command: min(hamacho(*c, str(work / f"inf-{time.monotonic_ns()}")) for _ in range(2)))
                row(f"hamacho inference, {name}, {args.images} images", "s", idle, busy)
        if "service" in parts:
            for name, model in models.items():
                idle, busy = idle_and_busy(lambda m=model: service_ms(work, m, tests))
                row(f"hamacho serve, {name}, one client", "ms/request", idle, busy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
