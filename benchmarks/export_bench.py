"""Exported models against the PyTorch path: parity of every score and map, throughput, memory, start-up.

    python benchmarks/run.py --make-weights /tmp/w/resnet18.pth --backbone resnet18 --seed 0
    python benchmarks/export_bench.py --dataset ../shared/data/mvtec/bottle --backbone-weights /tmp/w/resnet18.pth

For each model (PaDiM and PatchCore on resnet18 by default, seed 0): train once with ``hamacho train``,
export to ONNX and OpenVINO (and TorchScript), then, each in a fresh process:

* parity: every test image through the Predictor on each runtime; the largest differences of normalized
  image scores and maps to the PyTorch path, and whether every OK/NG decision is the same;
* throughput and memory: ``hamacho inference`` over the test folder (83 images for bottle, no pictures,
  no report): images/s of the scoring pass and the process's peak RSS;
* start-up: wall time of ``hamacho inference`` on one image, from process start to exit (median of 3).

Targets: an exported runtime at least 1.5x the PyTorch path's throughput for PaDiM resnet18,
and the exported path's peak RSS at most 40 % of the PyTorch path's. This process never imports torch,
so each child's peak RSS is its own. Prints a Markdown table and writes ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RUNTIMES = ("torch", "onnx", "openvino", "torchscript")


def sh(command: list[str], log: Path) -> str:
    """Run a command (progress bars off), keep its output in ``log``, stop with its tail on failure."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    log.write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout


def side(mode: str, *args: str, log: Path) -> dict[str, Any]:
    out = sh([sys.executable, str(BENCH_DIR / "inference_side.py"), mode, *args], log)
    return json.loads(out.strip().splitlines()[-1])


def prepare(args: argparse.Namespace, model: str, work: Path) -> dict[str, Path]:
    """Train (unless a model file is there already) and export; the model file and export folders."""
    model_path = work / "results" / model / Path(args.dataset).name / "model.pt"
    if not model_path.exists():
        sh([sys.executable, "-m", "hamacho", "train", "--model", model, "--dataset-root", args.dataset,
            "--backbone", args.backbone, "--backbone-weights", args.backbone_weights, "--seed", str(args.seed),
            "--image-size", str(args.image_size), "--result-path", str(work / "results"), "--quiet", "--no-report"],
           work / f"{model}-train.log")
    paths = {"torch": model_path}
    variants = [(runtime, "fp32") for runtime in args.runtimes]
    variants += [(runtime, "fp16") for runtime in args.fp16 if runtime in args.runtimes]
    variants += [("openvino", "bf16")] if args.bf16 and "openvino" in args.runtimes else []
    for runtime, precision in variants:
        key = runtime if precision == "fp32" else f"{runtime}-{precision}"
        folder = model_path.parent / f"export-{key}"
        sh([sys.executable, "-m", "hamacho", "export", "--model-path", str(model_path), "--format", runtime,
            "--output", str(folder), "--precision", precision], work / f"{model}-export-{key}.log")
        paths[key] = folder
    return paths


def parity(paths: dict[str, Path], images: str, work: Path, model: str) -> dict[str, dict[str, float]]:
    """Largest differences of each exported runtime to the PyTorch path on every test image."""
    dumps = {}
    for runtime, path in paths.items():
        target = work / f"{model}-{runtime}-parity.npz"
        side("parity", str(path), images, str(target), log=work / f"{model}-{runtime}-parity.log")
        dumps[runtime] = np.load(target)
    ref = dumps["torch"]
    out = {}
    for runtime in [r for r in dumps if r != "torch"]:
        got = dumps[runtime]
        assert list(got["names"]) == list(ref["names"])
        out[runtime] = {
            "images": int(ref["scores"].size),
            "score_max_abs": float(np.abs(got["scores"] - ref["scores"]).max()),
            "map_max_abs": float(np.abs(got["maps"] - ref["maps"]).max()),
            "raw_score_max_rel": float((np.abs(got["raw_scores"] - ref["raw_scores"]) / np.abs(ref["raw_scores"])).max()),
            "decisions_differing": int(((got["scores"] >= 0.5) != (ref["scores"] >= 0.5)).sum()),
        }
    return out


def performance(paths: dict[str, Path], images: str, one_image: str, work: Path, model: str,
                repeats: int, startup_runs: int) -> dict[str, dict[str, Any]]:
    """Throughput, peak RSS and single-image start-up of ``hamacho inference`` per runtime."""
    out = {}
    for runtime, path in paths.items():
        runs = [side("run", str(path), images, str(work / f"{model}-{runtime}-out"),
                     log=work / f"{model}-{runtime}-run.log") for _ in range(repeats)]
        best = max(runs, key=lambda r: r["images_per_second"])
        starts = []
        for _ in range(startup_runs):
            begin = time.perf_counter()
            sh([sys.executable, "-m", "hamacho", "inference", "--model-path", str(path), "--image-path", one_image,
                "--save-path", str(work / f"{model}-{runtime}-one"), "--quiet", "--no-report", "--no-images"],
               work / f"{model}-{runtime}-one.log")
            starts.append(time.perf_counter() - begin)
        out[runtime] = {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                        "single_image_seconds": statistics.median(starts)}
    return out


def table(results: dict[str, Any]) -> str:
    lines = []
    for model, result in results.items():
        torch_run = result["performance"]["torch"]
        lines += [f"#### {model} ({result['backbone']}, {result['image_size']} px)", "",
                  ("| runtime | images/s | x torch | peak RSS MiB | x torch | 1-image run s | max \u0394 score | "
                   "max \u0394 map | decisions differing |"), "|---|---|---|---|---|---|---|---|---|"]
        for runtime in result["performance"]:
            perf = result["performance"][runtime]
            par = result["parity"].get(runtime)
            cells = [runtime, f"{perf['images_per_second']:.1f}",
                     f"{perf['images_per_second'] / torch_run['images_per_second']:.2f}",
                     f"{perf['peak_rss_mb']:.0f}", f"{perf['peak_rss_mb'] / torch_run['peak_rss_mb']:.2f}",
                     f"{perf['single_image_seconds']:.2f}"]
            cells += ([f"{par['score_max_abs']:.1e}", f"{par['map_max_abs']:.1e}",
                       f"{par['decisions_differing']} of {par['images']}"] if par else ["-", "-", "-"])
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="category folder in MVTec AD layout")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--backbone-weights", default="none", help="state-dict file, or none (seeded random init)")
    p.add_argument("--models", nargs="+", default=["padim", "patchcore"])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="inference runs per runtime (best throughput) [2]")
    p.add_argument("--startup-runs", type=int, default=3, help="single-image runs per runtime (median) [3]")
    p.add_argument("--runtimes", nargs="+", default=list(RUNTIMES[1:]), choices=RUNTIMES[1:],
                   help="exported runtimes compared with torch [onnx openvino torchscript]")
    p.add_argument("--fp16", nargs="*", default=[], choices=["onnx", "openvino"],
                   help="also export these runtimes with --precision fp16 and measure them")
    p.add_argument("--bf16", action="store_true", help="also export for OpenVINO with --precision bf16")
    p.add_argument("--output-dir", default=str(BENCH_DIR / "out" / "export"))
    p.add_argument("--fresh", action="store_true", help="train again even when a model file is there")
    args = p.parse_args(argv)
    work = Path(args.output_dir).resolve()
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    images = str(Path(args.dataset) / "test")
    one_image = str(min((Path(args.dataset) / "test").rglob("*.png")))
    results = {}
    for model in args.models:
        print(f"[export-bench] {model}: train and export", file=sys.stderr)
        paths = prepare(args, model, work)
        print(f"[export-bench] {model}: parity", file=sys.stderr)
        par = parity(paths, images, work, model)
        print(f"[export-bench] {model}: throughput, memory, start-up", file=sys.stderr)
        perf = performance(paths, images, one_image, work, model, args.repeats, args.startup_runs)
        results[model] = {"backbone": args.backbone, "image_size": args.image_size, "parity": par,
                          "performance": perf}
    text = table(results)
    (work / "summary.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    (work / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
