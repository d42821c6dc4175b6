"""Tiled against plain memory: peak RSS of `hamacho train` and `hamacho inference` on 2448x2048 frames.

Builds a seeded set from MVTec bottle in MVTec layout: images upscaled (bicubic) to ``--width`` x
``--height`` (2448x2048), defective copies carrying 1-2 synthetic small defects with masks
(:func:`benchmarks.highres.paste_defect`). Then, for each model, two configurations are trained and
run for inference, each command in a child process of its own (the CLI, as a user runs it, defaults
included: report and report pictures):

- plain: ``dataset.image_size=256``;
- tiled: ``dataset.tiling: {tile_size: 256, stride: 256, resize: 1024}``, 16 tiles of the same 256 px
  model per frame.

Peak RSS is the child's ``ru_maxrss`` (``os.wait4``). PatchCore runs with ``model.coreset_ratio=0.01``
(fit time; the tiled run keeps ``patch_sample: null``, 6 tiles' worth of patches per image).

    python benchmarks/tiled_memory.py --out /tmp/tiled_memory

Prints a Markdown table (plain and tiled peak RSS per model and command, their ratio) and writes
``tiled_memory.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.highres import BOTTLE, WEIGHTS, build_dataset

CONFIGS = {
    "plain": ["dataset.image_size=256"],
    "tiled": ["dataset.tiling.tile_size=256", "dataset.tiling.stride=256", "dataset.tiling.resize=1024"],
}
MODEL_OVERRIDES = {"padim": [], "patchcore": ["model.coreset_ratio=0.01"]}


def run_child(command: list[str]) -> tuple[float, float]:
    """Run one command; returns its peak RSS in MiB (``ru_maxrss`` of that child alone) and wall seconds.

    Raises:
        SystemExit: When the command fails (its output's tail is shown).
    """
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"failed ({child.returncode}): {' '.join(command)}\n{output[-3000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


def measure(data: Path, out: Path, model: str, config: str, weights: str) -> dict:
    """Train then infer one configuration, each in a child process; their peak RSS and times."""
    results = out / "results" / f"{model}_{config}"
    hamacho = [sys.executable, "-m", "hamacho"]
    train = [*hamacho, "train", "--model", model, "--dataset-root", str(data), "--backbone", "mobilenet_v2",
             "--backbone-weights", weights, f"project.result_path={results}", *CONFIGS[config],
             *MODEL_OVERRIDES[model]]
    train_mb, train_s = run_child(train)
    model_path = results / model / data.name / "model.pt"
    infer = [*hamacho, "inference", "--model-path", str(model_path), "--image-path", str(data),
             "--save-path", str(results / "inference"), "--quiet"]
    infer_mb, infer_s = run_child(infer)
    metrics = json.loads((results / model / data.name / "metrics.json").read_text())["metrics"]
    return {"model": model, "config": config, "train_mb": train_mb, "train_s": train_s, "inference_mb": infer_mb,
            "inference_s": infer_s, "image_AUROC": metrics.get("image_AUROC"),
            "pixel_AUROC": metrics.get("pixel_AUROC")}


def table(rows: list[dict]) -> str:
    """Plain against tiled peak RSS per model and command, as Markdown."""
    lines = ["| model | command | plain 256 MiB | tiled 256 of 1024 MiB | ratio | plain s | tiled s |",
             "|---|---|---|---|---|---|---|"]
    by_key = {(r["model"], r["config"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        plain, tiled = by_key.get((model, "plain")), by_key.get((model, "tiled"))
        if plain is None or tiled is None:
            continue
        for command in ("train", "inference"):
            a, b = plain[f"{command}_mb"], tiled[f"{command}_mb"]
            lines.append(f"| {model} | {command} | {a:.0f} | {b:.0f} | {b / a:.2f}x | "
                         f"{plain[f'{command}_s']:.0f} | {tiled[f'{command}_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    """Build the set, measure every model and configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", default=str(WEIGHTS), help="mobilenet_v2 ImageNet state dict")
    parser.add_argument("--models", nargs="+", default=["padim", "patchcore"], choices=list(MODEL_OVERRIDES))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--width", type=int, default=2448)
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--train", type=int, default=60, help="training images (of bottle's 209)")
    parser.add_argument("--good", type=int, default=15, help="good test images")
    parser.add_argument("--defective", type=int, default=15, help="defective test images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not Path(args.weights).is_file() or not BOTTLE.is_dir():
        sys.exit(f"needs {BOTTLE} and the mobilenet_v2 weights ({args.weights})")
    data = build_dataset(args.out, (args.width, args.height), args.train, args.good, args.defective, args.seed)
    rows = []
    for model in args.models:
        for config in args.configs:
            rows.append(measure(data, args.out, model, config, args.weights))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    saved = args.out / "tiled_memory.json"
    kept = json.loads(saved.read_text()) if saved.is_file() else []
    done = {(r["model"], r["config"]) for r in rows}
    rows = [r for r in kept if (r["model"], r["config"]) not in done] + rows
    saved.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
