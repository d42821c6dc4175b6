"""Image-size sweep: train at several sizes with several backbones and plot the metrics against the size.

    python benchmarks/run.py --make-weights /tmp/w/resnet18.pth --backbone resnet18 --seed 0
    python benchmarks/sweep.py --dataset ../shared/data/mvtec/bottle \
        --backbone resnet18=/tmp/w/resnet18.pth --backbone mobilenet_v2=../shared/data/weights/mobilenet_v2-imagenet.pth

Every (model, backbone, size) is one ``hamacho train`` in its own process (no pictures, no report);
its metrics.json gives image AUROC, pixel AUROC and the test pass's wall time. Writes ``sweep.json``,
``sweep.md`` (a table) and ``sweep.png``: one panel per figure, one line per (model, backbone).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
FIGURES = (("image_AUROC", "image AUROC"), ("pixel_AUROC", "pixel AUROC"), ("test_seconds", "test wall s"))


def train(dataset: str, model: str, backbone: str, weights: str, size: int, seed: int, out: Path) -> dict[str, Any]:
    """One training run; its metrics and timings."""
    command = [sys.executable, "-m", "hamacho", "train", "--model", model, "--dataset-root", dataset, "--backbone",
               backbone, "--backbone-weights", weights, "--image-size", str(size), "--seed", str(seed),
               "--result-path", str(out), "--quiet", "--no-report", "visualization.report_images=false"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"},
                            check=False)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    summary = json.loads((out / model / Path(dataset).name / "metrics.json").read_text())
    return {**summary["metrics"], **summary["timings"]}


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """One panel per figure against the image size, one line per (model, backbone)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FIGURES), figsize=(5 * len(FIGURES), 4), constrained_layout=True)
    series = sorted({(r["model"], r["backbone"], r["weights_label"]) for r in rows})
    for ax, (key, label) in zip(axes, FIGURES, strict=True):
        for model, backbone, weights in series:
            points = sorted((r["image_size"], r[key]) for r in rows
                            if (r["model"], r["backbone"], r["weights_label"]) == (model, backbone, weights))
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                    linestyle="-" if model == "padim" else "--", label=f"{model} {backbone}-{weights}")
        ax.set_xlabel("image size (px)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--backbone", action="append", required=True, metavar="NAME=WEIGHTS",
                   help="backbone and its weights (a state-dict file or none); repeatable")
    p.add_argument("--models", nargs="+", default=["padim", "patchcore"])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 192, 256, 320])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=str(BENCH_DIR / "out" / "sweep"))
    args = p.parse_args(argv)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in args.backbone:
        backbone, _, weights = item.partition("=")
        label = "none" if weights in ("", "none") else ("imagenet" if "imagenet" in Path(weights).name else "file")
        for model in args.models:
            for size in args.sizes:
                print(f"[sweep] {model} {backbone} ({label}) {size} px", file=sys.stderr)
                figures = train(args.dataset, model, backbone, weights or "none", size, args.seed,
                                out / "work" / f"{backbone}-{size}")
                rows.append({"model": model, "backbone": backbone, "weights_label": label, "image_size": size,
                             **{k: figures.get(k) for k in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO",
                                                            "test_seconds", "fit_seconds", "peak_rss_mb")}})
    (out / "sweep.json").write_text(json.dumps(rows, indent=2))
    lines = ["| model | backbone | size | image AUROC | pixel AUROC | AUPRO | fit s | test s | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['backbone']}-{r['weights_label']} | {r['image_size']} | {r['image_AUROC']:.4f} | "
              f"{r['pixel_AUROC']:.4f} | {r['pixel_AUPRO']:.4f} | {r['fit_seconds']:.1f} | {r['test_seconds']:.1f} | "
              f"{r['peak_rss_mb']:.0f} |" for r in rows]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "sweep.png", f"{Path(args.dataset).name}: metrics and test time against image size")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
