"""Small defects on high-resolution images: plain 256 px and 512 px against tiling (docs/benchmark.md).

Builds a seeded high-resolution set from MVTec bottle: images upscaled to ``--side`` (2048) px, and on
defective copies 1-2 synthetic defects of 20-60 px (ellipses and short strokes, darker or lighter than
the glass around them by 25-50 grey levels, soft edges, with their masks) pasted onto the bottle. Then, for each
configuration, one child process trains Hamacho through ``run_training`` (fit, calibration, test; no
report or pictures) and scores the test images with the Predictor. Every configuration is evaluated on
the same grid (``--eval-side`` px, maps and masks area-averaged from the original resolution), so the
pixel metrics compare what each one finds, not the grid it works on.

Peak RSS is the child's own (``ru_maxrss``) at the end of the training run, before the evaluation.

    python benchmarks/highres.py --out /tmp/highres --weights ../shared/data/weights/mobilenet_v2-imagenet.pth

Prints a Markdown table and writes ``highres.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec" / "bottle"
WEIGHTS = ROOT.parent / "shared" / "data" / "weights" / "mobilenet_v2-imagenet.pth"
CONFIGS = {
    "plain 256": ["dataset.image_size=256"],
    "plain 512": ["dataset.image_size=512"],
    "tiles 256 of 1024": ["dataset.tiling.tile_size=256", "dataset.tiling.stride=192", "dataset.tiling.resize=1024"],
    # PatchCore with every training patch of the 25 tiles (its default keeps 6 / 25 of them)
    "tiles 256 of 1024, every patch": ["dataset.tiling.tile_size=256", "dataset.tiling.stride=192",
                                       "dataset.tiling.resize=1024", "model.patch_sample=1"],
}


def paste_defect(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """One 20-60 px defect (ellipse or stroke), soft-edged, darker or lighter than where it lands, in place."""
    side = image.shape[0]
    size = int(rng.integers(20, 61)) * side // 2048
    angle = rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(0.05, 0.33) * side  # on the bottle (a disc about 0.4 of the side around the centre)
    cx, cy = int(side / 2 + radius * np.cos(angle)), int(side / 2 + radius * np.sin(angle))
    shape = np.zeros(image.shape[:2], dtype=np.uint8)
    if rng.random() < 0.5:
        axes = (max(3, size // 2), max(3, int(size * rng.uniform(0.3, 0.5))))
        cv2.ellipse(shape, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    else:
        dx, dy = (size / 2 * np.array([np.cos(rng.uniform(0, np.pi)), np.sin(rng.uniform(0, np.pi))])).astype(int)
        cv2.line(shape, (cx - dx, cy - dy), (cx + dx, cy + dy), 255, max(3, size // 8))
    soft = cv2.GaussianBlur(shape.astype(np.float32) / 255.0, (0, 0), max(1.0, size / 12))[:, :, None]
    local = float(image[max(0, cy - size) : cy + size, max(0, cx - size) : cx + size].mean())
    shift = rng.uniform(25, 50) * (-1 if local > 110 or rng.random() < 0.5 else 1)
    noise = rng.normal(0, 6, image.shape[:2])[:, :, None]
    blended = image.astype(np.float32) + soft * (shift + noise)
    image[:] = np.clip(blended, 0, 255).astype(np.uint8)
    mask[shape > 0] = 255


def build_dataset(out: Path, side: int | tuple[int, int], n_train: int, n_good: int, n_defect: int,
                  seed: int) -> Path:
    """The high-resolution set in MVTec layout under ``out/bottle_hr`` (reused when already built).

    ``side``: square frames of that side, or (width, height) frames (e.g. a 2448x2048 camera's).
    """
    width, height = (side, side) if isinstance(side, int) else side
    name = str(side) if isinstance(side, int) else f"{width}x{height}"
    root = out / f"bottle_hr_{name}_{n_train}_{n_good}_{n_defect}_{seed}"
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    train = sorted((BOTTLE / "train" / "good").glob("*.png"))
    order = rng.permutation(len(train))
    fit, spare = [train[i] for i in order[:n_train]], [train[i] for i in order[n_train : n_train + n_defect]]
    good = sorted((BOTTLE / "test" / "good").glob("*.png"))[:n_good]

    def upscaled(path: Path) -> np.ndarray:
        return cv2.resize(cv2.imread(str(path)), (width, height), interpolation=cv2.INTER_CUBIC)

    def write(path: Path, image: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])

    for i, path in enumerate(fit):
        write(root / "train" / "good" / f"{i:03d}.png", upscaled(path))
    for i, path in enumerate(good):
        write(root / "test" / "good" / f"{i:03d}.png", upscaled(path))
    for i, path in enumerate(spare):
        image, mask = upscaled(path), np.zeros((height, width), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            paste_defect(image, mask, rng)
        write(root / "test" / "small" / f"{i:03d}.png", image)
        write(root / "ground_truth" / "small" / f"{i:03d}_mask.png", mask)
    (root / "done").write_text("ok\n")
    return root


def shrink(values: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(values.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)


def run_one(name: str, data: Path, out: Path, model: str, weights: str, eval_side: int, seed: int,
            store_mb: int | None = None) -> dict:
    """Train and test one configuration in this process, then evaluate it on the common grid."""
    from hamacho.config import build_config
    from hamacho.data.decoding import read_mask
    from hamacho.data.discovery import Sample
    from hamacho.data.geometry import to_original
    from hamacho.post.metrics import aupro, image_metrics, pixel_metrics
    from hamacho.predictor import Predictor
    from hamacho.train import run_training

    extra = ["model.coreset_ratio=0.01"] if model == "patchcore" else []
    if model == "patchcore" and store_mb is not None:  # coreset on a 64-d projection, embeddings spill to disk
        extra += ["model.coreset_projection_dim=64", f"model.memory_budget_mb={store_mb}"]
    settings = build_config(model, None, {
        "dataset.root": str(data), "model.backbone": "mobilenet_v2", "model.backbone_weights": weights,
        "project.result_path": str(out / "results" / f"{name.replace(' ', '_')}_{store_mb}"), "project.seed": seed,
        "report.enabled": False, "visualization.report_images": False}, [*CONFIGS[name], *extra])
    result = run_training(settings, log=lambda _: None)
    timings = dict(result.timings)
    predictor = Predictor.load(result.model_path, device="cpu")
    samples = []
    for path in sorted((data / "test").rglob("*.png")):
        mask = data / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        samples.append(Sample(path, path.stem, int(path.parent.name != "good"), path.parent.name,
                              mask if mask.is_file() else None))
    maps, masks, scores = [], [], []
    for scored in predictor.score_samples(samples):  # raw maps: the order of every pixel counts
        for row, index in enumerate(scored.batch.indices.tolist()):
            sample = samples[index]
            full = to_original(scored.raw_maps[row], scored.batch.placements[row])
            maps.append(shrink(full, eval_side))
            truth = read_mask(sample.mask_path) if sample.mask_path else np.zeros(full.shape, bool)
            masks.append(shrink(truth, eval_side) >= 0.5)
            scores.append(float(scored.raw_scores[row]))
    labels = np.array([s.label for s in samples])
    stacked_maps, stacked_masks = np.stack(maps), np.stack(masks)
    pixel = pixel_metrics(stacked_maps, stacked_masks, np.zeros(stacked_masks.shape, bool))
    image = image_metrics(np.array(scores), labels, np.zeros(labels.shape, bool))
    return {"config": name + ("" if store_mb is None else f", store {store_mb} MB"), "model": model, "image_AUROC": image["image_AUROC"], "pixel_AUROC": pixel["pixel_AUROC"],
            "pixel_AUPRO": pixel["pixel_AUPRO"], "pixel_AUPRO_5": aupro(stacked_maps, stacked_masks, fpr_limit=0.05), "fit_seconds": timings["fit_seconds"],
            "test_seconds": timings["test_seconds"], "peak_rss_mb": timings["peak_rss_mb"],
            "images_fitted": result.summary.images_fitted, "frame": result.summary.frame_size,
            "input": result.summary.input_size, "train_metrics": result.metrics}


def table(rows: list[dict]) -> str:
    lines = [("| model | configuration | input / frame | pixel AUROC | AUPRO | AUPRO to FPR 5 % | image AUROC | "
              "fit s | test s | peak RSS MiB |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        frame = "x".join(str(v) for v in r["input"]) + (
            "" if r["input"] == r["frame"] else " of " + "x".join(str(v) for v in r["frame"]))
        lines.append(f"| {r['model']} | {r['config']} | {frame} | {r['pixel_AUROC']:.4f} | {r['pixel_AUPRO']:.4f} | "
                     f"{r.get('pixel_AUPRO_5', float('nan')):.4f} | {r['image_AUROC']:.4f} | {r['fit_seconds']:.1f} | {r['test_seconds']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", default=str(WEIGHTS), help="mobilenet_v2 ImageNet state dict")
    parser.add_argument("--models", nargs="+", default=["padim"], choices=("padim", "patchcore"))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--train", type=int, default=40, help="training images (of bottle's 209)")
    parser.add_argument("--good", type=int, default=20, help="good test images")
    parser.add_argument("--defective", type=int, default=20, help="defective test images")
    parser.add_argument("--eval-side", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store-mb", type=int, help="PatchCore: model.memory_budget_mb, with a 64-d coreset "
                        "projection (training embeddings beyond it go to a temporary file)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not Path(args.weights).is_file() or not BOTTLE.is_dir():
        sys.exit(f"needs {BOTTLE} and the mobilenet_v2 weights ({args.weights})")
    data = build_dataset(args.out, args.side, args.train, args.good, args.defective, args.seed)
    if args.child:
        print(json.dumps(run_one(args.child, data, args.out, args.model, args.weights, args.eval_side, args.seed,
                                 args.store_mb)))
        return
    rows = []
    for model in args.models:
        for name in args.configs:
            command = [sys.executable, __file__, "--out", str(args.out), "--weights", args.weights, "--side",
                       str(args.side), "--train", str(args.train), "--good", str(args.good), "--defective",
                       str(args.defective), "--eval-side", str(args.eval_side), "--seed", str(args.seed),
                       "--child", name, "--model", model]
            command += [] if args.store_mb is None else ["--store-mb", str(args.store_mb)]
            done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
            if done.returncode != 0:
                sys.exit(f"{model} {name} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{model} {name}: {rows[-1]}", file=sys.stderr, flush=True)
    previous = args.out / "highres.json"
    kept = json.loads(previous.read_text()) if previous.is_file() else []
    done = {(r["model"], r["config"]) for r in rows}
    rows = [r for r in kept if (r["model"], r["config"]) not in done] + rows  # runs of other models stay
    previous.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
