"""Tiled against plain memory: peak RSS of `hamacho train` and `hamacho inference` on 2448x2048 frames.

Builds a seeded set from MVTec bottle in MVTec layout: images upscaled (bicubic) to ``--width`` x
``--height`` (2448x2048), defective copies carrying 1-2 synthetic small defects with masks
(:func:`benchmarks.highres.paste_defect`). Then, for each model, two configurations are trained and
run for inference, each command in a child process of its own (the CLI, as a user runs it, defaults
included: report and report pictures):

- plain: ``dataset.image_size=256``;
- tiled: ``dataset.tiling: {tile_size: 256, stride: 256, resize: 1024}``, 16 tiles of the same 256 px
  model per frame;
- tiled_every_patch (only when named in ``--configs``): tiled, PatchCore with ``model.patch_sample=1``.

Peak RSS is the child's ``ru_maxrss`` (``os.wait4``). PatchCore runs with ``model.coreset_ratio=0.01``
(fit time; the tiled run keeps ``patch_sample: null``, 6 tiles' worth of patches per image).

    python benchmarks/tiled_memory.py --out /tmp/tiled_memory

Prints a Markdown table (plain and tiled peak RSS per model and command, their ratio) and writes
``tiled_memory.json`` to ``--out``. ``--train 150`` fits on 150 frames instead of 60; ``--train-only`` skips
the inference runs; ``--data DIR`` builds (or reuses) the set there rather than in ``--out``, so that several
``--out`` folders (before and after a change, e.g. ``PYTHONPATH=<copy of the old package>``) share one set.

``--masked 15 60 120`` measures instead ``hamacho inference`` on labelled sets of that many masked frames
(bottle's good test images, up to 20, and defective copies of training images), with the models trained on the
default set; ``--exact`` runs it with exact pixel metrics whatever the number of pixels (the code before
:mod:`hamacho.post.streamed`), for a before/after comparison. Writes ``tiled_memory_masked.json``.
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
    # not run by default: PatchCore keeping every tile's patches (patch_sample 1)
    "tiled_every_patch": ["dataset.tiling.tile_size=256", "dataset.tiling.stride=256", "dataset.tiling.resize=1024",
                          "model.patch_sample=1"],
}
DEFAULT_CONFIGS = ["plain", "tiled"]
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


def hamacho_command(exact: bool = False) -> list[str]:
    """The CLI as a child runs it; ``exact``: with no pixel budget (pixel metrics kept exact at any size)."""
    if not exact:
        return [sys.executable, "-m", "hamacho"]
    code = ("import sys; import hamacho.post.streamed as s; s.EXACT_PIXELS = 1 << 62; "
            "from hamacho.cli import main; sys.argv[0] = 'hamacho'; main()")
    return [sys.executable, "-c", code]


def measure_masked(out: Path, model: str, config: str, frames: int, seed: int, size: tuple[int, int],
                   exact: bool) -> dict:
    """``hamacho inference`` of an already trained configuration on ``frames`` masked frames."""
    good = min(20, frames // 2)
    data = build_dataset(out / "masked", size, 0, good, frames - good, seed)
    model_path = next((out / "results" / f"{model}_{config}" / model).glob("*/model.pt"))
    infer = [*hamacho_command(exact), "inference", "--model-path", str(model_path), "--image-path", str(data),
             "--save-path", str(out / "masked_results" / f"{model}_{config}_{frames}_{exact}"), "--quiet"]
    mb, seconds = run_child(infer)
    return {"model": model, "config": config, "frames": frames, "exact": exact, "inference_mb": mb,
            "inference_s": seconds}


def masked_table(rows: list[dict]) -> str:
    """Peak RSS of inference on masked frames, plain against tiled, exact (before) and as shipped."""
    lines = ["| model | masked frames | plain MiB | tiled MiB | ratio | tiled, exact metrics MiB | ratio |",
             "|---|---|---|---|---|---|---|"]
    by_key = {(r["model"], r["config"], r["frames"], r["exact"]): r["inference_mb"] for r in rows}
    for model, frames in dict.fromkeys((r["model"], r["frames"]) for r in rows):
        plain, tiled = by_key.get((model, "plain", frames, False)), by_key.get((model, "tiled", frames, False))
        before = by_key.get((model, "tiled", frames, True))
        if plain is None or tiled is None:
            continue
        old = f"{before:.0f} | {before / plain:.2f}x" if before else "- | -"
        lines.append(f"| {model} | {frames} | {plain:.0f} | {tiled:.0f} | {tiled / plain:.2f}x | {old} |")
    return "\n".join(lines)


def measure(data: Path, out: Path, model: str, config: str, weights: str, infer: bool = True) -> dict:
    """Train then (``infer``) infer one configuration, each in a child process; their peak RSS and times."""
    results = out / "results" / f"{model}_{config}"
    hamacho = [sys.executable, "-m", "hamacho"]
    train = [*hamacho, "train", "--model", model, "--dataset-root", str(data), "--backbone", "mobilenet_v2",
             "--backbone-weights", weights, f"project.result_path={results}", *CONFIGS[config],
             *MODEL_OVERRIDES[model]]
    train_mb, train_s = run_child(train)
    model_path = results / model / data.name / "model.pt"
    infer_mb = infer_s = None
    if infer:
        command = [*hamacho, "inference", "--model-path", str(model_path), "--image-path", str(data),
                   "--save-path", str(results / "inference"), "--quiet"]
        infer_mb, infer_s = run_child(command)
    metrics = json.loads((results / model / data.name / "metrics.json").read_text())["metrics"]
    train_images = len(list((data / "train" / "good").glob("*.png")))
    return {"model": model, "config": config, "train_images": train_images, "train_mb": train_mb,
            "train_s": train_s, "inference_mb": infer_mb, "inference_s": infer_s,
            "image_AUROC": metrics.get("image_AUROC"), "pixel_AUROC": metrics.get("pixel_AUROC")}


def table(rows: list[dict]) -> str:
    """Plain against tiled peak RSS per model and command, as Markdown."""
    lines = ["| model | command | plain 256 MiB | tiled 256 of 1024 MiB | ratio | plain s | tiled s |",
             "|---|---|---|---|---|---|---|"]
    by_key = {(r["model"], r["config"]): r for r in rows}  # the last row of each
    for model in dict.fromkeys(r["model"] for r in rows):
        plain, tiled = by_key.get((model, "plain")), by_key.get((model, "tiled"))
        if plain is None or tiled is None:
            continue
        for command in ("train", "inference"):
            a, b = plain[f"{command}_mb"], tiled[f"{command}_mb"]
            if a is None or b is None:
                continue
            lines.append(f"| {model} | {command} | {a:.0f} | {b:.0f} | {b / a:.2f}x | "
                         f"{plain[f'{command}_s']:.0f} | {tiled[f'{command}_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    """Build the set, measure every model and configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", default=str(WEIGHTS), help="mobilenet_v2 ImageNet state dict")
    parser.add_argument("--models", nargs="+", default=["padim", "patchcore"], choices=list(MODEL_OVERRIDES))
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS))
    parser.add_argument("--width", type=int, default=2448)
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--train", type=int, default=60, help="training images (of bottle's 209)")
    parser.add_argument("--good", type=int, default=15, help="good test images")
    parser.add_argument("--defective", type=int, default=15, help="defective test images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="where the set is built (default: --out)")
    parser.add_argument("--train-only", action="store_true", help="measure hamacho train only")
    parser.add_argument("--masked", type=int, nargs="*", default=[], help="masked frame counts (inference only)")
    parser.add_argument("--exact", action="store_true", help="with --masked: also with exact pixel metrics")
    args = parser.parse_args()
    if not Path(args.weights).is_file() or not BOTTLE.is_dir():
        sys.exit(f"needs {BOTTLE} and the mobilenet_v2 weights ({args.weights})")
    if args.masked:
        rows = []
        for frames in args.masked:
            for model in args.models:
                for config in args.configs:
                    for exact in (False, True) if args.exact and config == "tiled" else (False,):
                        rows.append(measure_masked(args.out, model, config, frames, args.seed,
                                                   (args.width, args.height), exact))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        (args.out / "tiled_memory_masked.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(masked_table(rows))
        return
    data = build_dataset(args.data or args.out, (args.width, args.height), args.train, args.good, args.defective,
                         args.seed)
    rows = []
    for model in args.models:
        for config in args.configs:
            rows.append(measure(data, args.out, model, config, args.weights, not args.train_only))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    saved = args.out / "tiled_memory.json"
    kept = json.loads(saved.read_text()) if saved.is_file() else []
    done = {(r["model"], r["config"], r.get("train_images")) for r in rows}
    rows = [r for r in kept if (r["model"], r["config"], r.get("train_images")) not in done] + rows
    saved.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
