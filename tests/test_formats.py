"""Data layouts factories keep: the folder layout, CSV and text file lists, detection of the layout."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, _defect, _texture, write_png

from hamacho.data.discovery import list_images
from hamacho.data.file_list import discover_csv_list, discover_text_lists
from hamacho.data.folder_layout import discover_folder, hold_out
from hamacho.data.formats import detect_format, discover_training_data
from hamacho.errors import ConfigError, DatasetError
from hamacho.settings import DatasetSettings

RNG = np.random.default_rng(0)


def good(path: Path) -> Path:
    write_png(path, _texture(RNG, 32))
    return path


def bad(path: Path, mask_path: Path | None = None) -> Path:
    image, mask = _defect(RNG, _texture(RNG, 32))
    write_png(path, image)
    if mask_path is not None:
        write_png(mask_path, mask)
    return path


def by_name(samples):
    return {s.name: s for s in samples}


def test_folder_layout_recursive_mixed_case_and_unicode_names(tmp_path):
    root = tmp_path / "ライン1"
    for i in range(7):
        good(root / "good" / f"{i:02d}.png")
    good(root / "good" / "day 2" / "良品 01.PNG")  # space, Japanese, upper-case extension
    good(root / "good" / "day 2" / "00.JPG")  # same stem as good/00.png in another folder
    good(root / "good" / ".thumbs" / "skip.png")  # hidden folders are not data
    (root / "good" / "notes.txt").write_text("not an image")
    bad(root / "bad" / "傷 1.png", root / "mask" / "傷 1_mask.png")
    bad(root / "bad" / "b.Png", root / "mask" / "b_mask.png")

    layout = discover_folder(root / "good", root / "bad", root / "mask", "_mask", split=0.2, seed=0)
    assert layout.data_format == "folder" and layout.category == "ライン1"
    goods = by_name(layout.train + [s for s in layout.test if s.label == 0])
    assert len(goods) == 9 and "good/day 2/良品 01" in goods and "good/day 2/00" in goods and "good/00" in goods
    assert goods["good/day 2/00"].path != goods["good/00"].path  # same stem, kept apart
    assert len(layout.train) == 7 and sum(s.label == 0 for s in layout.test) == 2  # round(0.2 * 9) held out
    defects = by_name(s for s in layout.test if s.label == 1)
    assert set(defects) == {"bad/傷 1", "bad/b"}
    assert defects["bad/傷 1"].mask_path == root / "mask" / "傷 1_mask.png"
    assert defects["bad/b"].mask_path == root / "mask" / "b_mask.png" and defects["bad/b"].defect_type == "bad"
    assert layout.warnings == []


def test_hold_out_is_seeded_and_keeps_one_on_each_side():
    samples = list(range(10))
    fitted, held = hold_out(samples, 0.3, seed=5)
    assert len(held) == 3 and sorted(fitted + held) == samples
    assert hold_out(samples, 0.3, seed=5) == (fitted, held)
    assert hold_out(samples, 0.3, seed=6) != (fitted, held)
    assert [len(part) for part in hold_out(samples[:2], 0.9, seed=0)] == [1, 1]
    assert [len(part) for part in hold_out(samples[:3], 0.01, seed=0)] == [2, 1]
    with pytest.raises(DatasetError, match="1 good image"):
        hold_out(samples[:1], 0.2, seed=0)


def test_defect_type_folders_with_mirrored_masks_and_duplicate_names(tmp_path):
    for i in range(4):
        good(tmp_path / "ok" / f"{i}.png")
    for kind in ("scratch", "crack"):
        bad(tmp_path / "ng" / kind / "001.png", tmp_path / "gt" / kind / "001_mask.png")
    bad(tmp_path / "ng" / "crack" / "002.png")  # no mask: image metrics only
    good(tmp_path / "gt" / "crack" / "999_mask.png")  # a mask without an image
    good(tmp_path / "gt" / "crack" / "readme.png")  # not a mask name: ignored
    layout = discover_folder(tmp_path / "ok", tmp_path / "ng", tmp_path / "gt", "_mask", split=0.25, seed=0)
    defects = by_name(s for s in layout.test if s.label == 1)
    assert set(defects) == {"scratch/001", "crack/001", "crack/002"}
    assert defects["scratch/001"].mask_path == tmp_path / "gt" / "scratch" / "001_mask.png"
    assert defects["crack/001"].mask_path == tmp_path / "gt" / "crack" / "001_mask.png"
    assert defects["crack/002"].mask_path is None and defects["crack/001"].defect_type == "crack"
    assert layout.warnings == ["1 defective image(s) have no mask; they count for image metrics only",
                               "2 mask(s) without an image were ignored: crack/999_mask.png, crack/readme.png"]


def test_flat_masks_named_like_their_images(tmp_path):
    for i in range(3):
        good(tmp_path / "good" / f"{i}.png")
    bad(tmp_path / "bad" / "dent" / "x.png", tmp_path / "masks" / "x.png")  # flat mask folder, no suffix
    layout = discover_folder(tmp_path / "good", tmp_path / "bad", tmp_path / "masks", "", split=0.2, seed=0)
    (defect,) = [s for s in layout.test if s.label == 1]
    assert defect.name == "dent/x" and defect.mask_path == tmp_path / "masks" / "x.png"


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match=r"^good image folder not found: .*nowhere$"):
        discover_folder(tmp_path / "nowhere", None, None, "_mask", 0.2, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"^no images in .*empty \(supported: \.png"):
        discover_folder(tmp_path / "empty", None, None, "_mask", 0.2, 0)
    good(tmp_path / "one" / "a.png")
    with pytest.raises(DatasetError, match="1 good image.s.: at least 2 are needed"):
        discover_folder(tmp_path / "one", None, None, "_mask", 0.2, 0)
    good(tmp_path / "one" / "b.png")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"^defective image folder must be a folder, but is a file"):
        discover_folder(tmp_path / "one", tmp_path / "file.png", None, "_mask", 0.2, 0)


def write_csv(path: Path, rows: list[list[str]], header=("path", "label", "mask", "split")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_list_with_labels_masks_and_splits(tmp_path):
    base = tmp_path / "lot 7"
    rows = [[f"img/g{i}.png", "good", "", "train"] for i in range(4)]
    for i in range(4):
        good(base / "img" / f"g{i}.png")
    rows += [["img/検査 g9.png", "OK", "", "test"], ["img/g5.png", "normal", "", ""], ["img/g6.png", "good", "", ""]]
    for name in ("検査 g9.png", "g5.png", "g6.png"):
        good(base / "img" / name)
    bad(base / "img" / "d1.png", base / "gt" / "d1.png")
    bad(base / "sub" / "d1.png")
    rows += [["img/d1.png", "NG", "gt/d1.png", ""], ["sub/d1.png", "bad", "", "test"]]
    outside = bad(tmp_path / "elsewhere" / "d2.png")
    rows.append([str(outside), "defective", "", ""])  # absolute paths are taken as they are
    layout = discover_csv_list(write_csv(base / "list.csv", rows), split=0.5, seed=0)
    assert layout.data_format == "filelist" and layout.category == "list" and layout.root == base
    train = {s.name for s in layout.train}
    assert {f"good/img/g{i}" for i in range(4)} <= train and len(train) == 5  # 4 named + 1 of the 2 free rows
    test = by_name(layout.test)
    assert "good/img/検査 g9" in test and len([s for s in layout.test if s.label == 0]) == 2
    assert test["bad/img/d1"].mask_path == base / "gt" / "d1.png" and test["bad/sub/d1"].mask_path is None
    assert test[f"bad/{outside.with_suffix('').as_posix().lstrip('/')}"].path == outside


@pytest.mark.parametrize("rows, message", [
    ([["a.png", "good"], ["missing.png", "good"], ["gone.png", "bad"]],
     r"^2 file\(s\) listed in .*list.csv not found: missing.png, gone.png$"),
    ([["a.png", "good"], ["../secret.png", "good"]],
     r"^list.csv, line 3: '\.\./secret.png' points outside the list's folder"),
    ([["a.png", "good"], ["a.png", "maybe"]], r"^list.csv, line 3: label 'maybe' is not good or bad$"),
    ([["a.png", "bad", "", "train"]], r"line 2: a defective image cannot be in the train split"),
    ([["a.png", "good", "", "later"]], r"line 2: split 'later' is not train or test"),
    ([], r"lists no images"),
])
def test_csv_list_errors(tmp_path, rows, message):
    good(tmp_path / "data" / "a.png")
    good(tmp_path / "secret.png")
    with pytest.raises(DatasetError, match=message):
        discover_csv_list(write_csv(tmp_path / "data" / "list.csv", rows), 0.2, 0)


def test_csv_without_path_and_label_columns(tmp_path):
    with pytest.raises(DatasetError, match="needs a header with the columns path and label"):
        discover_csv_list(write_csv(tmp_path / "list.csv", [["a.png", "good"]], header=("file", "class")), 0.2, 0)


def test_text_lists_match_masks_by_name(tmp_path):
    for i in range(5):
        good(tmp_path / "g" / f"{i}.png")
    bad(tmp_path / "b" / "x.png", tmp_path / "m" / "x_mask.png")
    bad(tmp_path / "b" / "y.png")
    (tmp_path / "good.txt").write_text("# good parts\n" + "".join(f"g/{i}.png\n" for i in range(5)) + "\n")
    (tmp_path / "bad.txt").write_text("b/x.png\nb/y.png\n")
    (tmp_path / "mask.txt").write_text("m/x_mask.png\n")
    layout = discover_text_lists(tmp_path / "good.txt", tmp_path / "bad.txt", tmp_path / "mask.txt", "_mask",
                                 split=0.2, seed=0)
    assert len(layout.train) == 4 and layout.category == "good"
    defects = by_name(s for s in layout.test if s.label == 1)
    assert defects["bad/b/x"].mask_path == tmp_path / "m" / "x_mask.png" and defects["bad/b/y"].mask_path is None
    assert layout.warnings == ["1 defective image(s) have no mask; they count for image metrics only"]
    (tmp_path / "bad.txt").write_text("b/x.png\nb/zz.png\n")
    with pytest.raises(DatasetError, match=r"1 file\(s\) listed in .*bad.txt not found: b/zz.png$"):
        discover_text_lists(tmp_path / "good.txt", tmp_path / "bad.txt", None, "_mask", 0.2, 0)


def test_same_stem_with_two_extensions_in_one_folder_gets_two_names(tmp_path):
    for name in ("a.png", "a.JPG", "b.png"):
        good(tmp_path / "good" / name)
    layout = discover_folder(tmp_path / "good", None, None, "_mask", split=0.6, seed=0)
    names = [s.name for s in layout.train + layout.test]
    assert len(set(names)) == 3


def test_layout_detection(tmp_path):
    def settings(**kwargs) -> DatasetSettings:
        return DatasetSettings(**kwargs)

    mvtec, folder, lists = tmp_path / "m", tmp_path / "f", tmp_path / "l"
    good(mvtec / "train" / "good" / "a.png")
    good(folder / "good" / "a.png")
    write_csv(lists / "x.csv", [["a.png", "good"]])
    assert detect_format(settings(root=str(mvtec))) == "mvtec"
    assert detect_format(settings(root=str(folder))) == "folder"
    assert detect_format(settings(root=str(lists))) == "filelist"
    assert detect_format(settings(good_dir=str(folder))) == "folder"
    assert detect_format(settings(good_list="g.txt")) == "filelist"
    good(mvtec / "good" / "a.png")
    with pytest.raises(DatasetError, match=r"^cannot tell the layout of .*m: it looks like mvtec and like folder; "
                                           r"pass --data-format mvtec\|folder\|filelist$"):
        detect_format(settings(root=str(mvtec)))
    assert detect_format(settings(root=str(mvtec), format="folder")) == "folder"
    with pytest.raises(ConfigError, match="--good-dir .folder layout. and --file-list .file lists. contradict"):
        detect_format(settings(good_dir="g", file_list="x.csv"))
    with pytest.raises(ConfigError, match="^--data-format mvtec does not take --good-dir$"):
        detect_format(settings(good_dir="g", format="mvtec"))
    with pytest.raises(ConfigError, match="no dataset given"):
        detect_format(settings())


def test_root_of_a_folder_layout_finds_bad_and_mask_folders(tmp_path):
    for i in range(3):
        good(tmp_path / "good" / f"{i}.png")
    bad(tmp_path / "NG" / "c.png", tmp_path / "ground_truth" / "c_mask.png")
    layout = discover_training_data(DatasetSettings(root=str(tmp_path), name="line A"), seed=0)
    (defect,) = [s for s in layout.test if s.label == 1]
    assert defect.mask_path == tmp_path / "ground_truth" / "c_mask.png"
    assert layout.category == "line A"
    assert [p.name for p in list_images(tmp_path / "good")] == ["0.png", "1.png", "2.png"]


# --- end to end, through the command line ---------------------------------------------------------------------

FAST_REPORT = [a for a in FAST if a != "--no-report"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_image_labels_only_end_to_end(cli, tmp_path):
    """Defective images without masks: pixel metrics are not available (null), the report says so."""
    root = tmp_path / "検査"
    for i in range(9):
        good(root / "good" / ("昼" if i % 2 else "夜") / f"画像 {i}.png")
    for i in range(3):
        bad(root / "bad" / "scratch" / f"{i}.png")
    bad(root / "bad" / "dent" / "0.png")  # same name as a scratch image: kept apart
    result = cli("train", "--model", "padim", "--dataset-root", root, "--result-path", tmp_path / "r", *FAST_REPORT)
    assert result.exit_code == 0, result.err
    run_dir = tmp_path / "r" / "padim" / "検査"
    summary = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert summary["data_format"] == "folder"
    metrics = summary["metrics"]
    assert 0.0 <= metrics["image_AUROC"] <= 1.0 and 0.0 <= metrics["image_F1"] <= 1.0
    assert metrics["pixel_AUROC"] is None and metrics["pixel_F1"] is None and metrics["pixel_AUPRO"] is None
    assert re.search(r"^pixel_AUROC +n/a$", result.out, re.MULTILINE)
    assert "(the image threshold)" in result.out
    # 4 defective images, fewer than threshold.few_defects: auto bounds the F1 cut by the good-image rule, on the
    # 2 held-out good images and the 7 fitted ones scored out of fold
    assert summary["thresholds"]["rule"] == "f1-bounded"
    assert summary["thresholds"]["image"].startswith("F1 on 4 defective calibration image(s) (fewer than 20) bounded "
                                                     "by the good-image rule on 9 good image(s)")
    assert summary["thresholds"]["pixel"] == "the image threshold"
    calibration = summary["calibration"]
    assert calibration["pixel_threshold"] == calibration["image_threshold"]
    assert (calibration["pixel_min"], calibration["pixel_max"]) == (calibration["image_min"], calibration["image_max"])
    rows = {r["name"]: r for r in _rows(run_dir / "results.csv")}
    assert {"scratch/0", "dent/0"} <= rows.keys() and len(rows) == 6
    assert all((run_dir / "images" / f"{name}.png").is_file() for name in rows)
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="no-pixel-metrics"' in report and "F1 on 4 defective calibration image(s)" in report
    # The model scores new images through inference like any other; a pixel is NG where its image would be.
    out = tmp_path / "inf"
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", root / "bad", "--save-path", out,
                 "--quiet")
    assert result.exit_code == 0, result.err
    inferred = {r["name"]: r for r in _rows(out / "results.csv")}
    assert set(inferred) == {"scratch/0", "scratch/1", "scratch/2", "dent/0"}
    for name, row in inferred.items():
        assert float(row["raw_score"]) == pytest.approx(float(rows[name]["raw_score"]), rel=1e-4)


def test_good_only_workflow_end_to_end(cli, tmp_path):
    """Good images only: the threshold comes from the held-out good images' spread; inference flags defects."""
    root = tmp_path / "line"
    for i in range(12):
        good(root / "good" / f"{i:02d}.png")
    new = tmp_path / "new"
    for i in range(3):
        good(new / f"ok{i}.png")
        bad(new / f"ng{i}.png")
    base = ["train", "--model", "padim", "--good-dir", root / "good", "--split", "0.25", *FAST]
    refused = cli(*base, "--result-path", tmp_path / "f1", "threshold.method=f1")
    assert refused.exit_code == 1 and len(refused.err.strip().splitlines()) == 1
    assert "threshold.method f1 needs defective calibration images" in refused.err
    assert not (tmp_path / "f1").exists()

    runs = {}
    for method in ("auto", "sigma", "percentile", "out-of-fold"):
        chosen = "auto" if method == "out-of-fold" else method
        folds = "threshold.folds=5" if method == "out-of-fold" else "threshold.folds=0"  # 0: held-out images only
        result = cli(*base, "--result-path", tmp_path / method, f"threshold.method={chosen}", "threshold.sigma=3",
                     folds)
        assert result.exit_code == 0, result.err
        run_dir = tmp_path / method / "padim" / "line"
        summary = json.loads((run_dir / "metrics.json").read_text())
        assert summary["images_fitted"] == 9
        # out of fold, the 9 fitted images calibrate too (sigma and percentile use the held-out ones only)
        assert summary["images_calibrated"] == (12 if method == "out-of-fold" else 3)
        runs[method] = (run_dir, summary)
    assert runs["out-of-fold"][1]["thresholds"]["good_images"] == 12
    assert "scores of 12 good image(s)" in runs["out-of-fold"][1]["thresholds"]["image"]
    del runs["out-of-fold"]
    raw = [float(r["raw_score"]) for r in _rows(runs["auto"][0] / "results.csv")]
    mean, std = np.mean(raw), np.std(raw, ddof=1)
    thresholds = {m: s["calibration"]["image_threshold"] for m, (_, s) in runs.items()}
    # the good-image rule with 3 images, too few to fit a spread (tests/test_post.py)
    assert thresholds["auto"] == pytest.approx(max(mean + 3 * std, max(raw) * 1.01), rel=1e-5)
    assert runs["auto"][1]["thresholds"]["good_images"] == 3 and runs["auto"][1]["thresholds"]["target_fpr"] == 0.01
    assert thresholds["sigma"] == pytest.approx(mean + 3 * std, rel=1e-5)
    assert thresholds["percentile"] == pytest.approx(np.percentile(raw, 99), rel=1e-5)
    assert runs["sigma"][1]["thresholds"]["image"] == "mean + 3 std of the scores of 3 good calibration image(s)"
    assert all(m["pixel_AUROC"] is None and m["image_AUROC"] is None for m in
               (s["metrics"] for _, s in runs.values()))
    out = tmp_path / "inf"
    result = cli("inference", "--model-path", runs["auto"][0] / "model.pt", "--image-path", new, "--save-path", out,
                 "--quiet")
    assert result.exit_code == 0, result.err
    rows = {r["name"]: r for r in _rows(out / "results.csv")}
    assert all(rows[f"ng{i}"]["decision"] == "NG" for i in range(3))  # painted defects are far outside the spread
    for row in rows.values():
        assert row["decision"] == ("NG" if float(row["normalized_score"]) >= 0.5 else "OK")


def test_csv_file_list_end_to_end(cli, tmp_path):
    base = tmp_path / "lists"
    rows = []
    for i in range(8):
        rows.append([f"g/{i}.png", "good", "", ""])
        good(base / "g" / f"{i}.png")
    for i in range(2):
        bad(base / "d" / f"{i}.png", base / "m" / f"{i}.png")
        rows.append([f"d/{i}.png", "bad", f"m/{i}.png", ""])
    write_csv(base / "lot.csv", rows)
    result = cli("train", "--model", "patchcore", "--file-list", base / "lot.csv", "--result-path", tmp_path / "r",
                 *FAST)
    assert result.exit_code == 0, result.err
    summary = json.loads((tmp_path / "r" / "patchcore" / "lot" / "metrics.json").read_text())
    assert summary["data_format"] == "filelist" and summary["images_fitted"] == 6
    assert 0.0 <= summary["metrics"]["pixel_AUROC"] <= 1.0
    assert summary["thresholds"]["pixel"].startswith("F1-optimal on")


def test_dataset_errors_through_the_cli_are_one_line(cli, tmp_path):
    base = tmp_path / "lists"
    good(base / "a.png")
    write_csv(base / "x.csv", [["a.png", "good"], ["../b.png", "good"]])
    result = cli("train", "--file-list", base / "x.csv", "--result-path", tmp_path / "r", *FAST)
    assert result.exit_code == 1 and result.err.strip().splitlines() == [
        (f"Error: x.csv, line 3: '../b.png' points outside the list's folder {base}; use a path inside it or an "
        "absolute path")]
    good(base / "train" / "good" / "a.png")
    good(base / "good" / "a.png")
    result = cli("train", "--dataset-root", base, "--result-path", tmp_path / "r", *FAST)
    assert result.exit_code == 1 and "it looks like mvtec and like folder and like filelist" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
