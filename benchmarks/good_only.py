"""Training from good images only: the false-positive rate and defect recall of each threshold method.

Trains Hamacho as a user would with no defective image (a CSV file list: train/good held out by
``dataset.split``, test/good as calibration images too), scores the category's defects with the
Predictor, then applies every threshold method (the product's own :func:`hamacho.post.threshold.calibrate`)
and anomalib's rule without defects (its F1AdaptiveThreshold falls back to the highest good validation
score, NG when strictly above) to the same raw scores. Three ways of choosing the calibration images:

* ``as specified``: held-out train images + test/good calibrate; FPR on test/good is in-sample;
* ``held-out only``: held-out train images calibrate; test/good is unseen, as new good parts are;
* ``resampled``: the good images not fitted (held-out + test/good) are split at random in halves
  ``--repeats`` times; one half calibrates, the FPR is counted on the other (mean and range).

Recall is always on every defective image (none is seen). Usage::

    python benchmarks/good_only.py --dataset ../shared/data/mvtec/bottle --backbone mobilenet_v2 \\
        --weights ../shared/data/weights/mobilenet_v2-imagenet.pth --out /tmp/good_only

Prints a Markdown table per model and writes ``good_only.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from hamacho.config import build_config
from hamacho.data.discovery import list_images
from hamacho.post.threshold import calibrate
from hamacho.predictor import Predictor
from hamacho.settings import ThresholdSettings
from hamacho.train import run_training

METHODS: dict[str, ThresholdSettings | str] = {
    "auto (good-image rule, target_fpr 0.01)": ThresholdSettings(),
    "fpr, target_fpr 0.05": ThresholdSettings(method="fpr", target_fpr=0.05),
    "previous auto: max(mean + 3 std, highest + 1%)": "previous",
    "sigma 3": ThresholdSettings(method="sigma", sigma=3.0),
    "sigma 6 (original Hamacho's no-bad mode)": ThresholdSettings(method="sigma", sigma=6.0),
    "percentile 99": ThresholdSettings(method="percentile", percentile=99.0),
    "percentile 100 (highest good, NG at or above)": ThresholdSettings(method="percentile", percentile=100.0),
    "anomalib's fallback (highest good, NG strictly above)": "anomalib",
}


def threshold_for(rule: ThresholdSettings | str, goods: np.ndarray) -> float:
    """Raw threshold from good calibration scores; anomalib's rule is the highest one."""
    if rule == "anomalib":
        return float(goods.max())
    if rule == "previous":  # the rule auto used before the good-image rule
        std = float(goods.std(ddof=1)) if goods.size > 1 else 0.0
        return max(float(goods.mean()) + 3 * std, float(goods.max()) * 1.01)
    return calibrate(goods, np.zeros(goods.size, dtype=np.int64), None, None, rule).image_threshold


def flagged(rule: ThresholdSettings | str, scores: np.ndarray, threshold: float) -> np.ndarray:
    """NG decisions: Hamacho's at or above the threshold, anomalib's strictly above."""
    return scores > threshold if rule == "anomalib" else scores >= threshold


def product_on_unseen(model: str, args: argparse.Namespace, folds: int) -> dict:
    """The product as a user runs it with train/good only (test/good unseen): its own threshold (held-out
    images, plus out-of-fold scores of the fitted ones unless ``folds`` is 0), FPR on test/good, recall."""
    dataset = Path(args.dataset).resolve()
    out = Path(args.out) / f"{model}-unseen-folds{folds}"
    out.mkdir(parents=True, exist_ok=True)
    write_file_list(dataset, out / "goods.csv", args.train_images, args.seed, with_test_good=False)
    settings = build_config(model, options={
        "dataset.file_list": str(out / "goods.csv"), "dataset.split": args.split, "dataset.name": "good_only",
        "model.backbone": args.backbone, "model.backbone_weights": args.weights, "project.seed": args.seed,
        "project.result_path": str(out / "results"), "report.enabled": False,
        "visualization.report_images": False, "threshold.folds": folds, "threshold.method": args.method})
    result = run_training(settings, log=lambda _line: None)
    predictor = Predictor.load(result.model_path)
    goods = list_images(dataset / "test" / "good")
    defects = sorted(p for folder in (dataset / "test").iterdir() if folder.is_dir() and folder.name != "good"
                     for p in list_images(folder))
    good_scores = np.array([p.raw_score for p in predictor.predict(goods)])
    defect_scores = np.array([p.raw_score for p in predictor.predict(defects)])
    t = result.calibration["image_threshold"]
    fpr, recall = float((good_scores >= t).mean()), float((defect_scores >= t).mean())
    return {"model": model, "method": args.method, "folds": folds,
            "good_images": result.summary.thresholds.get("good_images"),
            "expected_fpr_high": result.summary.thresholds.get("expected_fpr_high"), "fpr": fpr, "recall": recall,
            "balanced_accuracy": (1 - fpr + recall) / 2,
            "best_balanced_accuracy": best_balanced_accuracy(good_scores, defect_scores),
            "calibration_seconds": result.timings["calibration_seconds"], "peak_rss_mb": result.timings["peak_rss_mb"],
            # the product's estimate of recall from synthetic defects on its held-out good images, beside the
            # recall measured on the category's real defects
            "synthetic_recall": (result.summary.synthetic_recall or {}).get("flagged"),
            "synthetic_by_kind": (result.summary.synthetic_recall or {}).get("by_kind")}


def write_file_list(dataset: Path, path: Path, train_images: int | None, seed: int,
                    with_test_good: bool = True) -> None:
    """train/good (a seeded sample of ``train_images``, or all) without a split (held out by dataset.split),
    test/good in the test split, no defects."""
    goods = list_images(dataset / "train" / "good")
    if train_images is not None and train_images < len(goods):
        goods = sorted(np.random.default_rng(seed).choice(goods, train_images, replace=False).tolist())
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows([str(p), "good", ""] for p in goods)
        if with_test_good:
            writer.writerows([str(p), "good", "test"] for p in list_images(dataset / "test" / "good"))


def measure(model: str, args: argparse.Namespace) -> dict:
    """Train good-only, score the defects, evaluate every method in the three calibration setups."""
    dataset = Path(args.dataset).resolve()
    out = Path(args.out) / model
    out.mkdir(parents=True, exist_ok=True)
    write_file_list(dataset, out / "goods.csv", args.train_images, args.seed)
    settings = build_config(model, options={
        "dataset.file_list": str(out / "goods.csv"), "dataset.split": args.split, "dataset.name": "good_only",
        "model.backbone": args.backbone, "model.backbone_weights": args.weights, "project.seed": args.seed,
        "project.result_path": str(out / "results"), "report.enabled": False,
        "visualization.report_images": False})
    result = run_training(settings, log=lambda _line: None)
    held, test_good = [], []
    for row in result.rows:
        (test_good if "/test/good/" in Path(row.file).as_posix() else held).append(row.raw_score)
    held, test_good = np.array(held, dtype=np.float64), np.array(test_good, dtype=np.float64)
    defects = sorted(p for folder in (dataset / "test").iterdir() if folder.is_dir() and folder.name != "good"
                     for p in list_images(folder))
    predictor = Predictor.load(result.model_path)
    defect_scores = np.array([p.raw_score for p in predictor.predict(defects)], dtype=np.float64)

    rng = np.random.default_rng(args.seed)
    pool = np.concatenate([held, test_good])
    halves = [rng.permutation(pool.size) for _ in range(args.repeats)]
    rows = {}
    for label, rule in METHODS.items():
        entry = {}
        for setup, calibration, unseen in (("as specified", pool, test_good), ("held-out only", held, test_good)):
            t = threshold_for(rule, calibration)
            fpr, recall = float(flagged(rule, unseen, t).mean()), float(flagged(rule, defect_scores, t).mean())
            entry[setup] = {"threshold": t, "fpr": fpr, "recall": recall, "balanced_accuracy": (1 - fpr + recall) / 2}
        fprs, recalls = [], []
        for order in halves:
            calibration, unseen = pool[order[: pool.size // 2]], pool[order[pool.size // 2:]]
            t = threshold_for(rule, calibration)
            fprs.append(float(flagged(rule, unseen, t).mean()))
            recalls.append(float(flagged(rule, defect_scores, t).mean()))
        entry["resampled"] = {"fpr": float(np.mean(fprs)), "fpr_max": float(np.max(fprs)),
                              "recall": float(np.mean(recalls)), "recall_min": float(np.min(recalls))}
        rows[label] = entry
    return {"model": model, "best_balanced_accuracy": best_balanced_accuracy(test_good, defect_scores),
            "images": {"fitted": result.summary.images_fitted,
                                       "held_out": int(held.size), "test_good": int(test_good.size),
                                       "defects": int(defect_scores.size)},
            "product_threshold": result.calibration["image_threshold"], "methods": rows,
            "scores": {"held_out": held.tolist(), "test_good": test_good.tolist(), "defects": defect_scores.tolist()}}


def best_balanced_accuracy(goods: np.ndarray, defects: np.ndarray) -> float:
    """The best balanced accuracy any single threshold reaches on these scores (NG at or above)."""
    cuts = np.unique(np.concatenate([goods, defects]))
    return max(float(((goods < t).mean() + (defects >= t).mean()) / 2) for t in cuts)


def anomalib_row(path: Path) -> str | None:
    """The peer's own good-only run (benchmarks/peer_anomalib.py with good_only), as a table row."""
    if not path.is_file():
        return None
    peer = json.loads(path.read_text())["good_only"]
    return (f"| anomalib 2.7 itself (its own fit, {peer['validation_images']} train images validate) | – | – | "
            f"{peer['fpr_test_good']:.3f} | {peer['recall']:.3f} | "
            f"{(1 - peer['fpr_test_good'] + peer['recall']) / 2:.3f} | – | – |")


def table(report: dict, peer: Path | None) -> str:
    """Markdown: one row per method, FPR on test/good and recall on defects in each setup."""
    counts = report["images"]
    lines = [(f"### {report['model']} ({counts['fitted']} fitted, {counts['held_out']} held out, "
              f"{counts['test_good']} test/good, {counts['defects']} defects; best single threshold's balanced "
              f"accuracy on test/good and defects: {report['best_balanced_accuracy']:.3f})"), "",
             ("| method | as specified: FPR (in-sample) | recall | held-out only: FPR on test/good | recall | "
              "balanced accuracy | resampled: FPR on unseen half (max) | recall (min) |"),
             "|---|---|---|---|---|---|---|---|"]
    for label, entry in report["methods"].items():
        a, b, c = entry["as specified"], entry["held-out only"], entry["resampled"]
        lines.append(f"| {label} | {a['fpr']:.3f} | {a['recall']:.3f} | {b['fpr']:.3f} | {b['recall']:.3f} | "
                     f"{b['balanced_accuracy']:.3f} | {c['fpr']:.3f} ({c['fpr_max']:.3f}) | "
                     f"{c['recall']:.3f} ({c['recall_min']:.3f}) |")
    peer_line = anomalib_row(peer) if peer else None
    if peer_line:
        lines.append(peer_line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="Category folder in MVTec AD layout.")
    parser.add_argument("--models", nargs="+", default=["padim", "patchcore"])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--weights", required=True, help="Backbone weights file (or none).")
    parser.add_argument("--split", type=float, default=0.2, help="Share of train/good held out [0.2].")
    parser.add_argument("--repeats", type=int, default=200, help="Random halvings for the resampled FPR [200].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unseen", action="store_true",
                        help="Only the product as a user runs it (test/good unseen), with and without out-of-fold "
                             "calibration.")
    parser.add_argument("--folds", type=int, nargs="+", default=[5, 0],
                        help="With --unseen: threshold.folds values to run [5 0] (0: held-out images only).")
    parser.add_argument("--method", default="auto", choices=("auto", "fpr", "balanced"),
                        help="With --unseen: threshold.method of the product's run [auto].")
    parser.add_argument("--train-images", type=int, default=None,
                        help="Train on a seeded sample of this many train/good images [all].")
    parser.add_argument("--peer", nargs="*", default=[], help="result.json of peer good-only runs, per model.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.unseen:
        runs = [product_on_unseen(model, args, folds) for model in args.models for folds in args.folds]
        print("| model | method | calibration | good images | FPR on test/good | recall | synthetic recall (estimate) | "
              "balanced acc. | best | calibration s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for run in runs:
            how = "held-out + out-of-fold" if run["folds"] else "held-out only"
            synthetic = "n/a" if run["synthetic_recall"] is None else f"{run['synthetic_recall']:.3f}"
            print(f"| {run['model']} | {run['method']} | {how} | {run['good_images']} | {run['fpr']:.3f} | {run['recall']:.3f} | "
                  f"{synthetic} | {run['balanced_accuracy']:.3f} | {run['best_balanced_accuracy']:.3f} | "
                  f"{run['calibration_seconds']:.1f} |")
        Path(args.out, "good_only_unseen.json").write_text(json.dumps(runs, indent=2))
        return 0
    reports = [measure(model, args) for model in args.models]
    peers = dict(zip(args.models, [Path(p) for p in args.peer])) if args.peer else {}
    for report in reports:
        print(table(report, peers.get(report["model"])) + "\n")
    Path(args.out, "good_only.json").write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
