"""An inference-only install of the service, for real: a fresh venv with ``hamacho[serve,onnx]``, no PyTorch.

What a line PC does: ``pip install "hamacho[serve,onnx]"``, then ``hamacho serve`` and an imported ONNX
export. This script

1. trains a PaDiM (``--backbone``, ``--image-size``; random-init weights by default) with this Python
   (which has PyTorch) on ``--dataset`` (MVTec bottle when it is there, else generated images) and
   exports it to ONNX, unless ``--export`` names an export folder already;
2. creates a venv (``python -m venv``) and pip-installs this checkout into it with ``.[serve,onnx]`` only,
   and checks that ``import torch`` fails there and that ``hamacho`` is the venv's own copy;
3. starts that venv's ``hamacho serve`` on a free loopback port (a fresh data folder, the export's parent
   as ``--allow-path``), imports the export (``POST /api/v1/models/import-path``) and predicts one image,
   then ``--predictions`` more, one after the other (one upload each, ``save=false``);
4. prints the figures: install size (the venv's site-packages, with and without pip itself; the largest
   distributions), install time, time to first prediction (from the server's start: start-up, import,
   model load, first prediction) and the prediction latency (median, p90), and the server's RSS.

Run:  python benchmarks/inference_only_install.py [--dataset DIR | --export DIR] [--predictions 30] [--keep]
Needs network access (or a pip cache / wheel mirror) for the venv's packages; a few minutes on 2 cores.
Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BOTTLE = REPO.parent / "shared" / "data" / "mvtec" / "bottle"
API = "/api/v1"
START_TIMEOUT = 120.0
MiB = 1024 * 1024
# Printed by the venv's Python: MiB per installed distribution, largest first.
SIZES = """
import importlib.metadata as md, json, os
sizes = {}
for dist in md.distributions():
    total = 0
    for f in dist.files or []:
        p = f.locate()
        if os.path.isfile(p):
            total += os.path.getsize(p)
    sizes[dist.metadata["Name"]] = total / 2**20
print(json.dumps(sorted(sizes.items(), key=lambda kv: -kv[1])))
"""


def run(command: list[str], log: Path, cwd: Path | None = None) -> str:
    """Run a command, keep its output in ``log``, stop with its tail on failure; its stdout."""
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def folder_mib(path: Path) -> float:
    """Apparent size of the files under ``path`` (links not followed), MiB."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / MiB


def generated_dataset(root: Path, size: int = 256) -> Path:
    """An MVTec-style folder of textured good parts (20 train, 4 test) and 4 with a painted defect."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)

    def part() -> np.ndarray:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        gray = 120 + 60 * np.cos(np.hypot(yy - 0.5, xx - 0.5) * 12 + rng.uniform(-0.2, 0.2)) + 20 * xx
        gray = np.clip(gray + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
        return np.stack([gray, (gray * 0.9).astype(np.uint8), (gray * 0.8).astype(np.uint8)], axis=2)

    for sub, count in (("train/good", 20), ("test/good", 4), ("test/paint", 4)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = part()
            if sub == "test/paint":
                x, y = (int(v) for v in rng.integers(size // 8, size // 2, 2))
                cv2.rectangle(image, (x, y), (x + size // 5, y + size // 10), (250, 30, 200), -1)
            cv2.imwrite(str(root / sub / f"{i:03d}.png"), image)
    return root


def make_export(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """Train and export to ONNX with this Python; ``(export folder, a defective image to predict)``."""
    if args.dataset:
        dataset = Path(args.dataset)
    else:
        dataset = BOTTLE if BOTTLE.is_dir() else generated_dataset(work / "generated")
    results = work / "results"
    run([sys.executable, "-m", "hamacho", "train", "--dataset-root", str(dataset), "--model", "padim",
         "--backbone", args.backbone, "--backbone-weights", args.backbone_weights, "--image-size",
         str(args.image_size), "--result-path", str(results), "--quiet", "--no-report"], work / "train.log")
    model = next(results.rglob("model.pt"))
    export = work / "import" / "export-onnx"
    run([sys.executable, "-m", "hamacho", "export", "--model-path", str(model), "--format", "onnx",
         "--output", str(export)], work / "export.log")
    return export, _defective_image(dataset)


def _defective_image(dataset: Path) -> Path:
    test = dataset / "test"
    return next(p for p in sorted(test.rglob("*.png")) if p.parent.name != "good")


def install(work: Path) -> dict[str, Any]:
    """A venv with this checkout's ``.[serve,onnx]``: paths, sizes and timings (stops if torch imports)."""
    venv = work / "venv"
    start = time.perf_counter()
    run([sys.executable, "-m", "venv", str(venv)], work / "venv.log")
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    work / "site.log").strip())
    bare = folder_mib(site)
    venv_seconds = time.perf_counter() - start
    start = time.perf_counter()
    run([str(python), "-m", "pip", "install", "--no-input", f"{REPO}[serve,onnx]"], work / "pip.log",
        cwd=work)
    pip_seconds = time.perf_counter() - start
    probe = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, cwd=work,
                           check=False)
    if probe.returncode == 0 or "No module named 'torch'" not in probe.stderr:
        raise SystemExit(f"torch is importable in the inference-only venv:\n{probe.stderr[-2000:]}")
    where = run([str(python), "-c", "import hamacho; print(hamacho.__file__)"], work / "where.log", cwd=work)
    if not Path(where.strip()).resolve().is_relative_to(venv.resolve()):
        raise SystemExit(f"the venv imports hamacho from outside it: {where.strip()}")
    sizes = json.loads(run([str(python), "-c", SIZES], work / "sizes.log", cwd=work))
    return {"python": python, "hamacho": venv / "bin" / "hamacho", "site_mib": folder_mib(site),
            "bare_mib": bare, "venv_seconds": venv_seconds, "pip_seconds": pip_seconds, "largest": sizes[:6],
            "torch_error": probe.stderr.strip().splitlines()[-1]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_healthy(server: subprocess.Popen, base: str, log: Path) -> None:
    """Poll ``/health`` until the server answers (stops if it exits or takes over :data:`START_TIMEOUT`)."""
    import httpx

    deadline = time.perf_counter() + START_TIMEOUT
    while True:
        if server.poll() is not None:
            raise SystemExit(f"hamacho serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}{API}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.perf_counter() > deadline:
            raise SystemExit("hamacho serve did not answer /health")
        time.sleep(0.05)


def serve_and_predict(installed: dict[str, Any], export: Path, image: Path, work: Path,
                      predictions: int) -> dict[str, Any]:
    """Start the venv's ``hamacho serve``, import the export, predict; timings from the server's start."""
    import httpx

    port, log = free_port(), work / "serve.log"
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HAMACHO_TOKEN")}
    files = [("files", (image.name, image.read_bytes(), "image/png"))]
    with open(log, "wb") as out:
        start = time.perf_counter()
        server = subprocess.Popen([str(installed["hamacho"]), "serve", "--port", str(port), "--data-dir",
                                   str(work / "data"), "--allow-path", str(export.parent)],
                                  cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_healthy(server, base, log)
            up = time.perf_counter() - start
            with httpx.Client(base_url=base, timeout=300) as client:
                imported = client.post(f"{API}/models/import-path", json={"path": str(export), "tag": "line"})
                if imported.status_code != 201:
                    raise SystemExit(f"import failed: {imported.status_code} {imported.text}")
                after_import = time.perf_counter() - start
                latencies = []
                for _ in range(predictions + 1):  # the first one loads the model
                    begin = time.perf_counter()
                    response = client.post(f"{API}/models/line/predict", files=files)
                    latencies.append(time.perf_counter() - begin)
                    if response.status_code != 200:
                        raise SystemExit(f"prediction failed: {response.status_code} {response.text}")
                    if len(latencies) == 1:
                        first_at, item = time.perf_counter() - start, response.json()["items"][0]
                job = client.post(f"{API}/jobs", json={"model_tag": "x", "image_ids": [1, 2]})
            return {"up": up, "imported": after_import, "first": first_at, "latencies": latencies[1:],
                    "decision": item["decision"], "score": item["score"], "rss_mib": rss_mib(server.pid),
                    "job_refused": f"{job.status_code} {job.json().get('error')}"}
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)


def report(installed: dict[str, Any], served: dict[str, Any], export: Path, image: Path) -> str:
    """The figures as Markdown."""
    lat = sorted(served["latencies"])
    median, p90 = statistics.median(lat) * 1000, lat[min(len(lat) - 1, round(0.9 * (len(lat) - 1)))] * 1000
    site, beyond = installed["site_mib"], installed["site_mib"] - installed["bare_mib"]
    rows = [
        ("install size (site-packages)", f"{site:.0f} MiB ({beyond:.0f} MiB beyond the bare venv's pip)"),
        ("largest distributions (MiB)", ", ".join(f"{name} {mib:.0f}" for name, mib in installed["largest"])),
        ("venv creation / pip install",
         f"{installed['venv_seconds']:.1f} s / {installed['pip_seconds']:.1f} s"),
        ("server start to /health", f"{served['up']:.2f} s"),
        ("server start to model imported", f"{served['imported']:.2f} s"),
        ("time to first prediction (from server start)",
         f"{served['first']:.2f} s ({served['decision']}, score {served['score']:.3f})"),
        (f"prediction latency, median / p90 / min ({len(lat)} sequential)",
         f"{median:.0f} / {p90:.0f} / {lat[0] * 1000:.0f} ms"),
        ("server RSS after the predictions", f"{served['rss_mib']:.0f} MiB"),
    ]
    lines = ["#### Inference-only install: hamacho[serve,onnx] in a fresh venv, no PyTorch", "",
             f"- export: {export} ({folder_mib(export):.1f} MiB); image: {image.parent.name}/{image.name}",
             f"- `import torch` in the venv: {installed['torch_error']}",
             f"- a training job there: {served['job_refused']}", "", "| figure | value |", "|---|---|"]
    return "\n".join(lines + [f"| {figure} | {value} |" for figure, value in rows])


def main() -> None:
    """Parse the options, build the install, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="MVTec-style category [../shared/data/mvtec/bottle or generated]")
    parser.add_argument("--export", help="an ONNX export folder to serve (skips training and export)")
    parser.add_argument("--image", help="the image to predict [a defective test image of the dataset]")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--backbone-weights", default="none")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--predictions", type=int, default=30, help="sequential predictions after the first")
    parser.add_argument("--work", help="working folder [a temporary one]")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (venv, logs)")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="hamacho-inference-only-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.export:
            export = Path(args.export).resolve()
            image = Path(args.image) if args.image else _defective_image(Path(args.dataset or BOTTLE))
        else:
            export, image = make_export(args, work)
            image = Path(args.image) if args.image else image
        installed = install(work)
        served = serve_and_predict(installed, export, image, work, args.predictions)
        print(report(installed, served, export, image))
    finally:
        if args.keep:
            print(f"kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
