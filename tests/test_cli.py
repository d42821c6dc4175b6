"""End-to-end: `hamacho train` then `hamacho inference`, through the command line."""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import FAST, make_dataset
from tests.float_bounds import file_tolerance


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _train(cli, root, out, model="padim", *extra):
    result = cli("train", "--model", model, "--dataset-root", root, "--result-path", out, *FAST, *extra)
    assert result.exit_code == 0, result.err
    return out / model / root.name, result


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_train_then_inference_round_trip(cli, any_dataset, tmp_path, model):
    run_dir, result = _train(cli, any_dataset, tmp_path / "results", model)
    for name in ("model.pt", "config.yaml", "metrics.json", "results.csv"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "metrics.json").read_text())
    metrics = summary["metrics"]
    for key in ("image_AUROC", "image_F1", "pixel_AUROC", "pixel_F1", "pixel_AUPRO"):
        assert 0.0 <= metrics[key] <= 1.0, key
        assert f"{key}" in result.out
    assert summary["timings"]["fit_seconds"] > 0 and summary["timings"]["peak_rss_mb"] > 0
    train_rows = {r["name"]: r for r in _rows(run_dir / "results.csv")}
    assert len(train_rows) == 6 and all(r["status"] == "ok" for r in train_rows.values())
    for row in train_rows.values():
        assert (run_dir / "images" / f"{row['name']}.png").is_file()
        assert row["decision"] == ("NG" if float(row["normalized_score"]) >= 0.5 else "OK")

    # One test image scored on its own gives the training run's score.
    name, row = next(iter(sorted(train_rows.items())))
    single = tmp_path / "single.png"
    shutil.copy(row["file"], single)
    out = tmp_path / "inf-single"
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", single, "--save-path", out,
                 "--quiet")
    assert result.exit_code == 0, result.err
    (inferred,) = _rows(out / "results.csv")
    tol = file_tolerance(run_dir / "model.pt", float(row["raw_score"]))  # a batch of one, not of training's
    assert float(inferred["raw_score"]) == pytest.approx(float(row["raw_score"]), rel=tol.raw_rtol)
    assert float(inferred["normalized_score"]) == pytest.approx(float(row["normalized_score"]), abs=tol.score_atol)
    assert inferred["decision"] == row["decision"]
    assert inferred["label"] == "" and (out / "images" / "single.png").is_file()

    # The whole dataset root, with a batch size other than training's: same scores, labels and metrics.
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", any_dataset, "--quiet",
                 "--batch-size", "1")
    assert result.exit_code == 0, result.err
    default_out = run_dir / "inference"
    for inferred in _rows(default_out / "results.csv"):
        assert float(inferred["raw_score"]) == pytest.approx(float(train_rows[inferred["name"]]["raw_score"]),
                                                             rel=1e-4)
        assert inferred["label"] == train_rows[inferred["name"]]["label"]
    inferred_metrics = json.loads((default_out / "metrics.json").read_text())["metrics"]
    assert inferred_metrics["image_AUROC"] == pytest.approx(metrics["image_AUROC"], abs=1e-6)


def test_inference_threshold_moves_the_cut(cli, dataset, tmp_path):
    run_dir, _ = _train(cli, dataset, tmp_path / "r")
    decisions = {}
    for cut in ("0.0", "0.5", "1.0"):
        out = tmp_path / f"cut{cut}"
        result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", dataset / "test",
                     "--save-path", out, "--image-threshold", cut, "--quiet", "--no-images")
        assert result.exit_code == 0, result.err
        rows = _rows(out / "results.csv")
        for row in rows:
            assert row["decision"] == ("NG" if float(row["normalized_score"]) >= float(cut) else "OK")
        decisions[cut] = sum(r["decision"] == "NG" for r in rows)
        assert not (out / "images").exists()
    assert decisions["0.0"] == 6 and decisions["0.0"] >= decisions["0.5"] >= decisions["1.0"]


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_threshold_outside_zero_to_one_is_refused(cli, dataset, tmp_path, value):
    run_dir, _ = _train(cli, dataset, tmp_path / "r")
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", dataset, "--image-threshold",
                 value, "--save-path", tmp_path / "o")
    assert result.exit_code == 1
    assert result.err.strip() == f"Error: --image-threshold must be between 0 and 1 (normalized scale, 0.5 = " \
                                 f"trained threshold), got {float(value)}"
    assert not (tmp_path / "o").exists()


def test_good_only_dataset_uses_the_fallback_and_flags_no_good_image(cli, tmp_path):
    root = make_dataset(tmp_path / "goods", n_train=10, n_good=4, n_defect=0)
    run_dir, result = _train(cli, root, tmp_path / "r")
    rows = _rows(run_dir / "results.csv")
    assert len(rows) == 4 and all(r["decision"] == "OK" for r in rows)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert any("no defective calibration images" in n for n in summary["notes"])
    assert summary["images_fitted"] == 10
    # auto weighs the good images against synthetic defects pasted on the held-out ones (another seed)
    assert (summary["thresholds"]["method"], summary["thresholds"]["rule"]) == ("auto", "balanced")
    assert summary["thresholds"]["defect_scores"] == 12 and summary["thresholds"]["good_images"] == 14
    assert "(auto chose balanced: the cut with the best balanced accuracy between the scores of 14" in result.out
    # without defects, recall is estimated on synthetic ones (each kind on each of the 4 good calibration
    # images), and said to be synthetic; the same defects through the saved model give the same count
    found = summary["synthetic_recall"]
    assert (found["images"], found["defects"]) == (4, 12) and set(found["by_kind"]) == {"cutpaste", "scratch",
                                                                                         "blotch"}
    from hamacho.data.decoding import read_image
    from hamacho.data.synthetic import KINDS, synthetic_defect
    from hamacho.predictor import Predictor

    predictor = Predictor.load(run_dir / "model.pt")
    goods = sorted((root / "test" / "good").glob("*.png"))
    defects = [synthetic_defect(read_image(path), kind, number * 3 + k)  # seed 0: 0 * 1_000_003 + ...
               for number, path in enumerate(goods) for k, kind in enumerate(KINDS)]
    flagged = sum(p.decision == "NG" for p in predictor.predict(defects))
    assert found["flagged"] == pytest.approx(flagged / 12)
    assert any(n.startswith("synthetic defects: the threshold flags about") and "not real ones" in n
               for n in summary["notes"])
    assert "note: synthetic defects: the threshold flags about" in result.err


def test_balanced_threshold_weighs_synthetic_defects_against_good_images(cli, tmp_path):
    root = make_dataset(tmp_path / "goods", n_train=10, n_good=6, n_defect=0)
    # without synthetic defects auto is the good-image rule at target_fpr: the highest threshold balanced may set
    auto_dir, _ = _train(cli, root, tmp_path / "auto", "padim", "threshold.synthetic_images=0")
    run_dir, result = _train(cli, root, tmp_path / "r", "padim", "threshold.method=balanced")
    how = json.loads((run_dir / "metrics.json").read_text())["thresholds"]
    # 6 held-out good images and the 10 fitted ones out of fold; one defect of each kind on each held-out image
    assert how["method"] == how["rule"] == "balanced"
    assert how["image"].startswith("balanced: the cut with the best balanced accuracy between the scores of 16 good "
                                   "image(s) and 18 synthetic defect(s)")
    assert how["good_images"] == 16 and how["defect_scores"] == 18 and how["max_fpr"] == 0.1
    assert 0 < how["expected_fpr"] <= 0.1 + 1e-9 and 0.5 <= how["balanced_accuracy"] <= 1
    # kept between the good-image rule at max_fpr and at target_fpr: never above what auto sets
    auto = json.loads((auto_dir / "metrics.json").read_text())
    threshold = json.loads((run_dir / "metrics.json").read_text())["calibration"]["image_threshold"]
    assert threshold <= auto["calibration"]["image_threshold"] * (1 + 1e-6) and auto["thresholds"]["rule"] == "fpr"
    assert "image" in result.out and "balanced: the cut with the best balanced accuracy" in result.out
    assert ("note: no defective calibration images: the threshold weighs 18 synthetic defect(s) against 16 good "
            "image(s) (threshold.method balanced)") in result.err


def test_balanced_without_synthetic_images_is_refused_in_one_line(cli, tmp_path):
    root = make_dataset(tmp_path / "goods", n_train=6, n_good=2, n_defect=0)
    result = cli("train", "--model", "padim", "--dataset-root", root, "--result-path", tmp_path / "r", *FAST,
                 "threshold.method=balanced", "threshold.synthetic_images=0")
    assert result.exit_code == 1 and "Traceback" not in result.err
    assert result.err.strip() == ("Error: threshold.method balanced needs threshold.synthetic_images > 0: the "
                                  "threshold is placed between the good images' scores and those of synthetic defects")
    assert not (tmp_path / "r").exists()


def test_auto_with_few_defective_images_bounds_the_f1_cut_and_says_so(cli, dataset, tmp_path):
    run_dir, result = _train(cli, dataset, tmp_path / "r")
    how = json.loads((run_dir / "metrics.json").read_text())["thresholds"]
    # 3 defective calibration images, fewer than threshold.few_defects (20); 3 good + 8 fitted out of fold
    assert how["method"] == "auto" and how["rule"] == "f1-bounded" and how["good_images"] == 11
    assert how["image"].startswith("F1 on 3 defective calibration image(s) (fewer than 20) bounded by the good-image "
                                   "rule on 11 good image(s)")
    assert how["pixel"].startswith("F1-optimal on") and "labelled pixels" in how["pixel"]
    assert "(auto chose f1-bounded: F1 on 3 defective" in result.out
    plain, _ = _train(cli, dataset, tmp_path / "plain", "padim", "threshold.few_defects=0")
    assert json.loads((plain / "metrics.json").read_text())["thresholds"]["rule"] == "f1"


def test_train_good_only_holds_out_images(cli, tmp_path):
    root = make_dataset(tmp_path / "trainonly", n_train=10, n_good=0, n_defect=0)
    run_dir, result = _train(cli, root, tmp_path / "r")
    assert "held out" in result.err
    summary = json.loads((run_dir / "metrics.json").read_text())
    # 1 held out, and the 9 fitted ones scored out of fold: every good image calibrates
    assert summary["images_fitted"] == 9 and summary["images_calibrated"] == 10
    assert summary["thresholds"]["good_images"] == 10
    (row,) = _rows(run_dir / "results.csv")
    assert row["decision"] == "OK"


def test_training_is_reproducible_with_a_seed(cli, dataset, tmp_path):
    a, _ = _train(cli, dataset, tmp_path / "a", "patchcore", "--seed", "3")
    b, _ = _train(cli, dataset, tmp_path / "b", "patchcore", "--seed", "3")
    assert [r["raw_score"] for r in _rows(a / "results.csv")] == [r["raw_score"] for r in _rows(b / "results.csv")]


def test_full_resolution_outputs_and_only_wrong(cli, dataset, tmp_path):
    run_dir, _ = _train(cli, dataset, tmp_path / "r", "padim", "visualization.save_heatmap=true",
                        "visualization.save_segmentation=true", "visualization.only_wrong=true")
    rows = _rows(run_dir / "results.csv")
    wrong = {r["name"] for r in rows if (r["decision"] == "NG") != (r["label"] == "defective")}
    written = {str(p.relative_to(run_dir / "images").with_suffix("")) for p in (run_dir / "images").rglob("*.png")}
    assert written == wrong
    import cv2

    for name in wrong:
        heat = cv2.imread(str(run_dir / "heatmaps" / f"{name}.png"))
        assert heat.shape[:2] == (96, 96)  # the original resolution, not the 64 px model input
        assert (run_dir / "segmentation" / f"{name}.png").is_file()


def test_python_dash_m_and_no_traceback_on_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hamacho", "train", "--dataset-root", str(tmp_path / "nope"),
                             "--backbone-weights", "none"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"Error: dataset root not found: {tmp_path / 'nope'}"]
    assert "Traceback" not in result.stderr
