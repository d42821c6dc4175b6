"""PatchCore fit time against the number of good training images: chunked coreset against one greedy pass.

bottle has 209 good training images, all alike, which hides how the coreset's cost grows. This script
makes a larger, more varied set from them (seeded random zoom, rotation, shift, flip and colour changes,
256 px), trains PatchCore (mobilenet_v2 ImageNet weights when the file is there, else resnet18 with
random weights) on 50 to 1,000 of its images with every default, and reads the fit time from
metrics.json (feature extraction plus the coreset). The exact single greedy pass
(``model.coreset_chunk=0``) runs up to ``--exact-up-to`` images: its time grows with their square.

    python benchmarks/patchcore_fit.py --plot docs/images/patchcore_fit_time.png
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BOTTLE = SHARED / "mvtec" / "bottle"
WEIGHTS = SHARED / "weights" / "mobilenet_v2-imagenet.pth"
SPLIT = 0.2  # the folder layout's default share of good images held out for calibration


def varied_images(out: Path, count: int, seed: int = 0) -> None:
    """``count`` 256 px variations of bottle's good images in ``out``."""
    rng = random.Random(seed)
    sources = sorted((BOTTLE / "train" / "good").glob("*.png")) + sorted((BOTTLE / "test" / "good").glob("*.png"))
    frames = [cv2.resize(cv2.imread(str(p)), (512, 512), interpolation=cv2.INTER_AREA) for p in sources]
    out.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        frame = frames[rng.randrange(len(frames))]
        centre = (256 + rng.uniform(-120, 120), 256 + rng.uniform(-120, 120))
        warp = cv2.getRotationMatrix2D(centre, rng.uniform(0, 360), rng.uniform(1.0, 3.0))
        image = cv2.warpAffine(frame, warp, (512, 512), borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(0, 180)) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 3) + 30, 0, 255)
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        cv2.imwrite(str(out / f"{number:05d}.png"), cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA))


def fit(images: list[Path], work: Path, chunk: int | None, backbone: list[str]) -> dict[str, float]:
    """Train PatchCore on ``images`` (folder layout, default split); its fitted image count and timings."""
    root = work / f"set-{len(images)}"
    if not root.exists():
        (root / "good").mkdir(parents=True)
        for path in images:
            (root / "good" / path.name).symlink_to(path)
    out = work / f"run-{len(images)}-{chunk}"
    extra = [] if chunk is None else [f"model.coreset_chunk={chunk}"]
    subprocess.run([sys.executable, "-m", "hamacho", "train", "--model", "patchcore", "--dataset-root", str(root),
                    *backbone, "--no-report", "--quiet", "--result-path", str(out), "threshold.synthetic_images=0",
                    *extra], check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads(next(out.rglob("metrics.json")).read_text())
    timings = metrics["timings"]
    return {"images": metrics["images_fitted"], "fit": timings["fit_seconds"],
            "coreset": timings["model_fit_seconds"], "rss": timings["peak_rss_mb"]}


def plot(rows: list[tuple[str, dict[str, float]]], path: Path) -> None:
    """Fit seconds against images fitted, one line per coreset setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label in dict.fromkeys(label for label, _ in rows):
        points = sorted((r["images"], r["fit"]) for name, r in rows if name == label)
        axes.plot(*zip(*points), marker="o", label=label)
    axes.set_xlabel("good images fitted")
    axes.set_ylabel("fit seconds (features + coreset)")
    axes.set_title("PatchCore fit time, mobilenet_v2, 256 px, 2 CPU cores")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50,100,200,400,610,1000", help="good images fitted, comma-separated")
    parser.add_argument("--exact-up-to", type=int, default=200, help="largest size also fitted with one greedy pass")
    parser.add_argument("--plot", type=Path, help="write the fit-time plot (PNG) here")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    backbone = (["--backbone", "mobilenet_v2", "--backbone-weights", str(WEIGHTS)] if WEIGHTS.is_file()
                else ["--backbone", "resnet18", "--backbone-weights", "none"])
    rows: list[tuple[str, dict[str, float]]] = []
    print(f"backbone {backbone[1]}, 256 px, every default (coreset_ratio 0.1)\n")
    print("| coreset | images fitted | fit s | of which coreset s | s per image | peak RSS MiB |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="hamacho-fit-") as tmp:
        work = Path(tmp)
        varied_images(work / "varied", math.ceil(max(sizes) / (1 - SPLIT)) + 1)
        pool = sorted((work / "varied").glob("*.png"))
        for size in sizes:
            images = pool[: math.ceil(size / (1 - SPLIT))]
            settings = [("chunks of 32,768 patches (default)", None)]
            if size <= args.exact_up_to:
                settings.append(("one greedy pass (coreset_chunk=0)", 0))
            for label, chunk in settings:
                result = fit(images, work, chunk, backbone)
                rows.append((label, result))
                print(f"| {label} | {result['images']} | {result['fit']:.1f} | {result['coreset']:.1f} | "
                      f"{result['fit'] / result['images']:.3f} | {result['rss']:.0f} |", flush=True)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
