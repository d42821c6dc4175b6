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
    "fpr (good-image rule, target_fpr 0.01)": ThresholdSettings(method="fpr"),
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
    # anomalib's rule without defects on the same model: the highest held-out (validation) good score, NG
    # strictly above; the held-out images are the run's calibration images, scored in its test pass
    held = np.array([r.raw_score for r in result.rows if r.decision], dtype=np.float64)
    peer_fpr = float(flagged("anomalib", good_scores, held.max()).mean())
    peer_recall = float(flagged("anomalib", defect_scores, held.max()).mean())
    return {"model": model, "method": args.method, "rule": result.summary.thresholds.get("rule"), "folds": folds,
            "train_images": args.train_images,
            "seed": args.seed, "image_auroc": image_auroc(good_scores, defect_scores),
            "anomalib_rule": {"held_out": int(held.size), "fpr": peer_fpr, "recall": peer_recall,
                              "balanced_accuracy": (1 - peer_fpr + peer_recall) / 2},
            "good_images": result.summary.thresholds.get("good_images"),
            "expected_fpr_high": result.summary.thresholds.get("expected_fpr_high"), "fpr": fpr, "recall": recall,
            "balanced_accuracy": (1 - fpr + recall) / 2,
            "best_balanced_accuracy": best_balanced_accuracy(good_scores, defect_scores),
            "calibration_seconds": result.timings["calibration_seconds"], "fit_seconds": result.timings["fit_seconds"],
            "peak_rss_mb": result.timings["peak_rss_mb"],
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


def image_auroc(goods: np.ndarray, defects: np.ndarray) -> float:
    """Raw-score image AUROC (ties count half): how well the model separates, whatever the threshold."""
    above = (defects[:, None] > goods[None, :]).mean() + 0.5 * (defects[:, None] == goods[None, :]).mean()
    return float(above)


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


def run_line(run: dict) -> str:
    """One unseen run, as a progress line."""
    return (f"{run['model']} n={run['train_images'] or 'all'} seed={run['seed']} folds={run['folds']}: "
            f"AUROC {run['image_auroc']:.3f} FPR {run['fpr']:.3f} recall {run['recall']:.3f} "
            f"balanced {run['balanced_accuracy']:.3f} / best {run['best_balanced_accuracy']:.3f}; anomalib's rule "
            f"FPR {run['anomalib_rule']['fpr']:.3f} recall {run['anomalib_rule']['recall']:.3f}")


def unseen_table(runs: list[dict]) -> str:
    """Markdown: per model, calibration and train-image count, the mean over seeds (worst seed for the ratios)
    of the product's automatic threshold beside anomalib's highest-held-out-score rule on the same model."""
    header = ("| model | train images | calibration | seeds | image AUROC | good images | FPR on test/good | recall | "
              "synthetic recall (estimate) | balanced acc. | / best (worst seed) | anomalib's rule: FPR | recall | "
              "/ best (worst seed) | calibration s |")
    lines = [header, "|" + "---|" * 15]
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["method"], run["train_images"] or 0, run["folds"]), []).append(run)
    for (model, _method, size, folds), group in groups.items():
        def mean(key: str, rows: list[dict] = group) -> float:
            return float(np.mean([r[key] for r in rows]))
        ratio = [r["balanced_accuracy"] / r["best_balanced_accuracy"] for r in group]
        peer = [r["anomalib_rule"] for r in group]
        peer_ratio = [p["balanced_accuracy"] / r["best_balanced_accuracy"] for p, r in zip(peer, group)]
        synthetic = [r["synthetic_recall"] for r in group if r["synthetic_recall"] is not None]
        # PatchCore calibrates on held-out images whatever threshold.folds says: told by the counts
        calibration = ("held-out + out-of-fold" if folds and all(r["good_images"] > r["anomalib_rule"]["held_out"]
                                                                 for r in group) else "held-out only")
        lines.append(
            f"| {model} | {size or 'all'} | {calibration} | {len(group)} | "
            f"{mean('image_auroc'):.3f} | {mean('good_images'):.0f} | {mean('fpr'):.3f} | {mean('recall'):.3f} | "
            f"{np.mean(synthetic) if synthetic else float('nan'):.3f} | {mean('balanced_accuracy'):.3f} | "
            f"{np.mean(ratio):.2f} ({min(ratio):.2f}) | {np.mean([p['fpr'] for p in peer]):.3f} | "
            f"{np.mean([p['recall'] for p in peer]):.3f} | {np.mean(peer_ratio):.2f} ({min(peer_ratio):.2f}) | "
            f"{mean('calibration_seconds'):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="Category folder in MVTec AD layout.")
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
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="With --unseen: train-image counts to run (0: all) [--train-images].")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="With --unseen: seeds to run [--seed].")
    parser.add_argument("--small-defects", action="store_true",
                        help="Run on bottle (--dataset, or ../shared's) upscaled to 1024 px with benchmarks/highres.py's "
                             "small synthetic defects (169 train, 20 good and 40 defective test images; built once "
                             "under --out).")
    parser.add_argument("--peer", nargs="*", default=[], help="result.json of peer good-only runs, per model.")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.dataset and not args.small_defects:
        parser.error("give --dataset or --small-defects")
    if args.small_defects:  # bottle with highres.py's small synthetic defects (a hard set), built once
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import highres

        highres.BOTTLE = Path(args.dataset or highres.BOTTLE).resolve()  # --dataset: the bottle to start from
        if not (highres.BOTTLE / "train" / "good").is_dir():
            parser.error(f"--small-defects needs MVTec bottle at {highres.BOTTLE} (give it as --dataset)")
        args.dataset = str(highres.build_dataset(Path(args.out), 1024, 169, 20, 40, seed=0))
    if args.unseen:
        runs = []
        for size in args.sizes or [args.train_images]:
            for seed in args.seeds or [args.seed]:
                for model in args.models:
                    for folds in args.folds:
                        run_args = argparse.Namespace(**{**vars(args), "train_images": size or None, "seed": seed,
                                                         "out": str(Path(args.out) / f"n{size}-s{seed}")})
                        runs.append(product_on_unseen(model, run_args, folds))
                        print(run_line(runs[-1]), file=sys.stderr, flush=True)
                        Path(args.out, "good_only_unseen.json").write_text(json.dumps(runs, indent=2))
        print(unseen_table(runs))
        return 0
    reports = [measure(model, args) for model in args.models]
    peers = dict(zip(args.models, [Path(p) for p in args.peer])) if args.peer else {}
    for report in reports:
        print(table(report, peers.get(report["model"])) + "\n")
    Path(args.out, "good_only.json").write_text(json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
