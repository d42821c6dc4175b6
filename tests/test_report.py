"""The analysis report: report.html after train and inference, checked against metrics.json and results.csv."""

from __future__ import annotations

import base64
import contextlib
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hamacho.config import build_config
from hamacho.errors import ConfigError
from hamacho.post.curves import binary_curves, downsample_curve, sample_pixels
from hamacho.results.examples import Example, ExampleTracker, rank_keys
from tests.conftest import FAST, make_dataset

WITH_REPORT = [option for option in FAST if option != "--no-report"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_SECTIONS = {"summary", "metrics", "distributions", "curves", "examples", "images"}


class ReportParser(HTMLParser):
    """Sections, tables (cell text and attributes by table id), embedded images and figure files of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.ids: set[str] = set()
        self.tables: dict[str, list[list[tuple[str, dict]]]] = {}
        self.images: list[str] = []
        self.figure_files: list[str] = []
        self._table: str | None = None
        self._cell: list | None = None
        self._anonymous = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "section":
            self.sections.append(attrs.get("id", ""))
        elif tag == "table":
            self._anonymous += 1
            self._table = attrs.get("id") or f"table{self._anonymous}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = ["", attrs]
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "figure" and "data-file" in attrs:
            self.figure_files.append(attrs["data-file"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._table = None

    def body_rows(self, table_id: str) -> list[list[str]]:
        """Cell texts of a table's rows after the header row."""
        return [[text for text, _ in row] for row in self.tables[table_id][1:]]


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def metric_text(value):
    return "n/a" if value is None else f"{value:.4f}"


def check_metrics(report: ReportParser, metrics: dict) -> None:
    """Every metric of metrics.json is in the metrics table, as printed, and nothing else."""
    shown = {attrs["data-metric"]: text for row in report.tables["metrics-table"] for text, attrs in row
             if "data-metric" in attrs}
    assert shown == {name: metric_text(value) for name, value in metrics.items()}


def check_per_image_table(report: ReportParser, rows: list[dict[str, str]]) -> None:
    """Same images in the same order as results.csv, with the same labels, decisions and printed scores."""
    table = report.body_rows("per-image")
    assert len(table) == len(rows)
    for shown, row in zip(table, rows):
        _, name, defect_type, label, norm, raw, decision, check, status = shown
        assert (name, defect_type, label, decision, status) == (
            row["name"], row["defect_type"], row["label"] or "\u2013", row["decision"], row["status"])
        assert norm == f"{float(row['normalized_score']):.4f}"
        assert raw == f"{float(row['raw_score']):.4f}"
        if row["label"]:
            right = (row["decision"] == "NG") == (row["label"] == "defective")
            assert check == ("right" if right else "wrong")


def check_confusion(report: ReportParser, rows: list[dict[str, str]]) -> None:
    counts = {attrs["data-count"]: int(text) for row in report.tables["confusion"] for text, attrs in row
              if "data-count" in attrs}
    labelled = [r for r in rows if r["label"] and r["decision"]]
    expected = {
        "tp": sum(r["label"] == "defective" and r["decision"] == "NG" for r in labelled),
        "fn": sum(r["label"] == "defective" and r["decision"] == "OK" for r in labelled),
        "fp": sum(r["label"] == "good" and r["decision"] == "NG" for r in labelled),
        "tn": sum(r["label"] == "good" and r["decision"] == "OK" for r in labelled),
    }
    assert counts == expected


def check_figures(report: ReportParser, run_dir: Path) -> None:
    """Embedded figures are valid PNGs, each also written as the file its figure names."""
    assert report.images and len(report.images) == len(report.figure_files)
    for src, name in zip(report.images, report.figure_files):
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1])
        assert data.startswith(PNG_SIGNATURE)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
        assert (run_dir / name).read_bytes() == data
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == sorted(Path(f).name for f in report.figure_files)


def check_offline(path: Path) -> None:
    """No scripts, stylesheets, fonts or anything else fetched from elsewhere."""
    text = re.sub(r'src="data:image/png;base64,[^"]*"', "", path.read_text(encoding="utf-8"))
    assert 'src="' not in text and "url(" not in text
    assert "<script" not in text and "<link" not in text and "@import" not in text and "http" not in text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run with the report, shared by the tests below (stdout kept for the path line)."""
    from hamacho.cli import main

    root = make_dataset(tmp_path_factory.mktemp("data") / "parts", n_good=4, n_defect=4)
    out = tmp_path_factory.mktemp("results")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(["train", "--model", "padim", "--dataset-root", str(root), "--result-path", str(out), *WITH_REPORT,
              "report.examples=3"])
    return root, out / "padim" / "parts", stdout.getvalue()


def test_training_report_matches_results(trained):
    _, run_dir, stdout = trained
    path = run_dir / "report.html"
    assert f"Report: {path}" in stdout.splitlines()
    report = parse(path)
    assert ALL_SECTIONS <= set(report.sections)
    summary = json.loads((run_dir / "metrics.json").read_text())
    rows = csv_rows(run_dir / "results.csv")
    check_metrics(report, summary["metrics"])
    check_per_image_table(report, rows)
    check_confusion(report, rows)
    check_figures(report, run_dir)
    check_offline(path)
    # Thresholds: raw values from the calibration, normalized cut 0.5 in training.
    cal = summary["calibration"]
    image_row, pixel_row = report.body_rows("thresholds")
    assert image_row[:3] == ["image", f"{cal['image_threshold']:.4f}", "0.5"]
    assert pixel_row[:3] == ["pixel", f"{cal['pixel_threshold']:.4f}", "0.5"]
    # Counts per split and type.
    counts = {row[0]: row[1:] for row in report.body_rows("counts")}
    assert counts["good"] == ["8", "4"] and counts["scratch"] == ["\u2013", "4"] and counts["total"] == ["8", "8"]
    # Figures: both histograms, both curve figures, and report.examples=3 worst and best pictures.
    names = {Path(f).name for f in report.figure_files}
    assert {"image_scores.png", "pixel_scores.png", "image_curves.png", "pixel_curves.png"} <= names
    assert {f"worst_{i:02d}.png" for i in (1, 2, 3)} | {f"best_{i:02d}.png" for i in (1, 2, 3)} <= names
    assert not any(n.startswith(("worst_04", "best_04")) for n in names)
    assert {"worst-examples", "best-examples"} <= report.ids


def test_no_report_writes_none(cli, tmp_path):
    root = make_dataset(tmp_path / "parts")
    result = cli("train", "--dataset-root", root, "--result-path", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.err
    run_dir = tmp_path / "out" / "padim" / "parts"
    assert (run_dir / "results.csv").is_file()
    assert not (run_dir / "report.html").exists() and not (run_dir / "report").exists()
    assert "Report:" not in result.out
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", root, "--save-path",
                 tmp_path / "inf", "--quiet", "--no-report")
    assert result.exit_code == 0, result.err
    assert (tmp_path / "inf" / "results.csv").is_file() and not (tmp_path / "inf" / "report.html").exists()


def test_inference_on_dataset_root_report(cli, trained, tmp_path):
    root, run_dir, _ = trained
    out = tmp_path / "inf"
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", root, "--save-path", out,
                 "--quiet", "--image-threshold", "0.6", "--no-images")
    assert result.exit_code == 0, result.err
    assert f"Report: {out / 'report.html'}" in result.out
    report = parse(out / "report.html")
    assert ALL_SECTIONS <= set(report.sections)
    rows = csv_rows(out / "results.csv")
    check_metrics(report, json.loads((out / "metrics.json").read_text())["metrics"])
    check_per_image_table(report, rows)
    check_confusion(report, rows)
    check_figures(report, out)
    assert report.body_rows("thresholds")[0][2] == "0.6"  # the user's cut is shown
    # --no-images: no per-image pictures, but the report's examples are there.
    assert not (out / "images").exists()
    assert any(Path(f).name.startswith("worst_") for f in report.figure_files)


def test_inference_on_plain_folder_report_has_no_metrics(cli, trained, tmp_path):
    root, run_dir, _ = trained
    out = tmp_path / "inf"
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", root / "test" / "scratch",
                 "--save-path", out, "--quiet")
    assert result.exit_code == 0, result.err
    report = parse(out / "report.html")
    assert {"summary", "distributions", "examples", "images"} <= set(report.sections)
    assert not {"metrics", "curves"} & set(report.sections)
    assert "confusion" not in report.tables and "metrics-table" not in report.tables
    assert {"highest-examples", "borderline-examples"} <= report.ids and "worst-examples" not in report.ids
    check_per_image_table(report, csv_rows(out / "results.csv"))
    check_figures(report, out)
    assert not (out / "metrics.json").exists()


def test_report_failure_keeps_the_run(cli, tmp_path, monkeypatch):
    import hamacho.report.html as report_html

    def broken(**kwargs):
        raise RuntimeError("figure exploded")

    monkeypatch.setattr(report_html, "write_report", broken)
    root = make_dataset(tmp_path / "parts")
    result = cli("train", "--dataset-root", root, "--result-path", tmp_path / "out", *WITH_REPORT)
    assert result.exit_code == 0, result.err
    assert "warning: report not written: RuntimeError: figure exploded" in result.err
    run_dir = tmp_path / "out" / "padim" / "parts"
    for name in ("model.pt", "results.csv", "metrics.json"):
        assert (run_dir / name).is_file()
    assert not (run_dir / "report.html").exists() and "Report:" not in result.out


def test_report_keys_are_validated():
    config = build_config("patchcore", overrides=["report.examples=2", "report.pixel_sample=1000"])
    assert config.report.examples == 2 and config.report.pixel_sample == 1000
    with pytest.raises(ConfigError, match="report.examples"):
        build_config("padim", overrides=["report.examples=-1"])
    with pytest.raises(ConfigError, match="report.pixel_sample"):
        build_config("padim", overrides=["report.pixel_sample=lots"])


# --- building blocks ---------------------------------------------------------------------------------------

def test_curves_match_torchmetrics():
    from torchmetrics.functional.classification import binary_precision_recall_curve, binary_roc

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(5, 3, 3000), 1)  # ties on purpose, outside [0, 1]
    labels = rng.random(3000) < 0.2
    curves = binary_curves(scores, labels, scores >= 6, max_points=10**9)
    # torchmetrics takes scores outside [0, 1] for logits: scale them into it first (same order).
    unit, target = torch.from_numpy((scores - scores.min()) / np.ptp(scores)), torch.from_numpy(labels).long()
    fpr, tpr, _ = binary_roc(unit, target)
    precision, recall, _ = binary_precision_recall_curve(unit, target)
    for ours, theirs in ((curves.fpr, fpr), (curves.tpr, tpr), (curves.precision, precision),
                         (curves.recall, recall)):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)
    point = curves.operating_point
    assert point.tp + point.fn == int(labels.sum()) and point.tp == int(((scores >= 6) & labels).sum())
    assert binary_curves(scores, np.zeros_like(labels)) is None  # one class: undefined


def test_curves_are_thinned_but_keep_their_ends():
    x = np.linspace(0, 1, 100_000) ** 3
    y = np.sqrt(np.linspace(0, 1, 100_000))
    small_x, small_y = downsample_curve(x, y, 500)
    assert len(small_x) <= 502 and (small_x[0], small_y[0], small_x[-1], small_y[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(small_x) >= 0)


def test_pixel_sample_is_seeded_bounded_and_balanced():
    scores = np.arange(100_000, dtype=np.float32)
    labels = np.zeros(100_000, dtype=bool)
    labels[:500] = True
    first = sample_pixels(scores, labels, 2000, seed=3)
    again = sample_pixels(scores, labels, 2000, seed=3)
    assert first.scores.size == 2000 and first.total == 100_000
    np.testing.assert_array_equal(first.scores, again.scores)
    assert int(first.labels.sum()) == 500  # fewer defect pixels than half: all of them
    np.testing.assert_array_equal(first.labels.astype(bool), first.scores < 500)
    everything = sample_pixels(scores[:100], labels[:100], 2000)
    assert everything.scores.size == 100


def _example(name: str, label: str, score: float, decision: str) -> Example:
    blank = np.zeros((4, 4), dtype=bool)
    return Example(name, label, score, decision, np.zeros((4, 4, 3), np.uint8), blank.astype(np.float16), blank,
                   None)


def test_example_tracker_keeps_errors_first_and_stays_bounded():
    tracker = ExampleTracker(2)
    cases = [("g1", "good", 0.10, "OK"), ("g2", "good", 0.48, "OK"), ("g3", "good", 0.70, "NG"),
             ("d1", "defective", 0.95, "NG"), ("d2", "defective", 0.52, "NG"), ("d3", "defective", 0.40, "OK"),
             ("u1", "", 0.51, "NG"), ("u2", "", 0.90, "NG")]
    for name, label, score, decision in cases:
        keys = rank_keys(label, score, 0.5, decision)
        if tracker.wants(keys):
            tracker.offer(keys, _example(name, label, score, decision))
    assert [e.name for e in tracker.group("worst")] == ["g3", "d3"]  # the two errors, furthest first
    assert [e.name for e in tracker.best()] == ["d1", "g1"]
    assert [e.name for e in tracker.group("highest")] == ["u2", "u1"]
    assert [e.name for e in tracker.group("borderline")] == ["u1", "u2"]
    assert all(len(tracker.group(g)) <= 2 for g in ("worst", "best_ng", "best_ok", "highest", "borderline"))
    assert [e.name for e in tracker.best(exclude={"d1"})] == ["d2", "g1"]


def test_picture_titles_draw_japanese_names():
    """OpenCV's fonts draw '?' for Japanese; titles that are not ASCII are drawn with a font that has them."""
    from matplotlib import font_manager

    from hamacho.report.drawing import HEADER_H, UNICODE_FONTS, compose_report

    image = np.full((64, 64, 3), 128, np.uint8)
    norm_map = np.zeros((64, 64), np.float32)

    def header(title: str) -> np.ndarray:
        picture = compose_report(image, norm_map, norm_map > 0.5, title, False, None, 0.5, 0.5)
        return picture[:HEADER_H]

    japanese, question_marks = header("画像 01"), header("?? 01")
    blank = header("")
    assert (japanese != blank).any(axis=2).sum() > 40  # something is drawn
    if any(font.name in UNICODE_FONTS for font in font_manager.fontManager.ttflist):
        assert (japanese != question_marks).any(axis=2).sum() > 40  # and it is not what OpenCV would draw
