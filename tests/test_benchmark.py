"""The benchmark (benchmarks/run.py): an end-to-end run on tiny data without the peer, and its helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import report
from benchmarks.run import main, make_weights, parse_weights, weights_for
from benchmarks.scoring import evaluate_raw, score_peer_dump
from tests.conftest import make_dataset

FIGURES = [row.key for row in report.ROWS]


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple[Path, Path, str, Path]:
    """One benchmark of both models on a generated dataset (resnet18 for both, 64 px), without the peer."""
    tmp = tmp_path_factory.mktemp("bench")
    data = make_dataset(tmp / "parts", n_train=6, n_good=3, n_defect=3)
    weights = tmp / "resnet18-seed0.pth"
    assert main(["--make-weights", str(weights), "--backbone", "resnet18", "--seed", "0"]) == 0
    out = tmp / "out"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["--dataset", str(data), "--image-size", "64", "--backbone", "resnet18",
                     "--backbone-weights", f"resnet18={weights}", "--no-visualization", "--output-dir", str(out),
                     "--batch-size", "4"])
    assert code == 0
    return out, data, buffer.getvalue(), weights


def test_benchmark_writes_json_per_run_and_a_summary(bench_run):
    out, _data, _, weights = bench_run
    summary = json.loads((out / "summary.json").read_text())
    assert [c["model"] for c in summary["comparisons"]] == ["padim", "patchcore"]
    assert summary["peer"] is None and "targets" in summary["verdict"]
    assert summary["environment"]["cpu_count"] >= 1
    for comparison in summary["comparisons"]:
        folder = out / "parts" / comparison["model"]
        run = json.loads((folder / "hamacho" / "result.json").read_text())
        assert run["spec"]["weights"] == str(weights) and run["spec"]["backbone"] == "resnet18"
        assert run["spec"]["batch_size"] == 4 and run["spec"]["visualization"] is False
        assert run["config"]["visualization"]["report_images"] is False
        assert run["images_tested"] == 6
        assert not (folder / "hamacho" / "work").exists()  # model files are removed unless --keep-work
        assert json.loads((folder / "comparison.json").read_text())["rows"] == comparison["rows"]
        forward = json.loads((folder / "forward.json").read_text())
        assert forward["images"] == 6 and forward["forward_seconds"] > 0
        ours = comparison["hamacho"]
        assert set(FIGURES) <= set(ours)
        for key in report.METRIC_KEYS:
            assert 0.0 <= ours[key] <= 1.0, key
        for key in ("fit_seconds", "test_seconds", "test_images_per_second", "peak_rss_mb", "forward_seconds",
                    "test_over_forward", "feature_extraction_seconds", "model_fit_seconds", "calibration_seconds"):
            assert ours[key] > 0, key
        timings = run["timings"]
        assert ours["fit_seconds"] == pytest.approx(timings["fit_seconds"] + timings["calibration_seconds"])
        assert ours["test_images_per_second"] == pytest.approx(6 / timings["test_seconds"])
        assert ours["test_over_forward"] == pytest.approx(timings["test_seconds"] / forward["forward_seconds"])
        assert comparison["anomalib"] is None
        assert all(row["pass"] is None and row["ratio"] is None for row in comparison["rows"])
    padim = json.loads((out / "parts" / "padim" / "hamacho" / "result.json").read_text())
    assert len(padim["channel_indices"]) == 100
    patchcore = json.loads((out / "parts" / "patchcore" / "hamacho" / "result.json").read_text())
    assert patchcore["memory_bank_size"] == int(np.ceil(0.01 * 6 * 8 * 8))  # 6 images, 8x8 layer2 patches at 64 px


def test_benchmark_prints_the_table(bench_run):
    out, _, printed, _ = bench_run
    assert printed == (out / "table.md").read_text()
    assert "#### parts · padim (resnet18, 64 px, batch 4)" in printed
    assert "#### parts · patchcore (resnet18, 64 px, batch 4, coreset 0.01)" in printed
    for row in report.ROWS:
        assert f"| {row.label} |" in printed
    assert "anomalib" not in printed.split("\n")[2]  # no peer: no anomalib column
    assert "#### CLI start-up (median of runs; target < 0.5 s)" in printed
    start_up = json.loads((out / "summary.json").read_text())["startup"]
    assert [row["exit_code"] for row in start_up] == [0, 0, 0, 2]
    for row in start_up:
        assert row["median_seconds"] > 0 and row["peak_rss_mb"] > 0
        assert f"| {row['command']} | {row['median_seconds']:.3f} |" in printed


def test_peer_scoring_reproduces_hamachos_own_image_metrics(bench_run):
    out, _, _, _ = bench_run
    for model in ("padim", "patchcore"):
        run = json.loads((out / "parts" / model / "hamacho" / "result.json").read_text())
        again = evaluate_raw(np.array(run["raw_scores"]), None, torch.tensor(run["labels"]))
        assert again["image_AUROC"] == pytest.approx(run["metrics"]["image_AUROC"])
        assert again["image_F1"] == pytest.approx(run["metrics"]["image_F1"])


def test_make_weights_equals_hamachos_seeded_initialisation(bench_run):
    """The saved file and Hamacho's ``none`` at the same seed give the same network, hence the same features."""
    from hamacho.models.backbone import build_feature_extractor

    _, _, _, weights = bench_run
    layers = ["layer1", "layer2", "layer3"]
    seeded = build_feature_extractor("resnet18", layers, "none", seed=0)
    from_file = build_feature_extractor("resnet18", layers, str(weights), seed=123)
    other = build_feature_extractor("resnet18", layers, "none", seed=1)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b, c = seeded(images), from_file(images), other(images)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.allclose(a[-1], c[-1])


def _dump(folder: Path, paths: list[str], scores: np.ndarray, maps: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "scores.npy", scores)
    np.save(folder / "maps.npy", maps)
    (folder / "paths.json").write_text(json.dumps(paths))
    return folder


def test_score_peer_dump_on_ground_truth_maps(tmp_path):
    from hamacho.data.decoding import read_mask, resize_mask
    from hamacho.data.discovery import discover_dataset

    data = make_dataset(tmp_path / "parts", n_train=2, n_good=3, n_defect=3)
    samples = discover_dataset(data).test
    size = 32
    masks = np.stack([resize_mask(read_mask(s.mask_path), size) if s.mask_path else np.zeros((size, size), bool)
                      for s in samples]).astype(np.float32)
    maps = masks + 0.01 * np.random.default_rng(0).random(masks.shape, dtype=np.float32)
    scores = maps.reshape(len(samples), -1).max(axis=1)
    order = [5, 0, 3, 1, 4, 2]  # any order: images are matched by path
    dump = _dump(tmp_path / "peer", [str(samples[i].path) for i in order], scores[order], maps[order])
    metrics = score_peer_dump(dump, data, size)
    assert metrics == {"image_AUROC": 1.0, "image_F1": 1.0, "pixel_AUROC": 1.0, "pixel_F1": 1.0,
                       "pixel_AUPRO": pytest.approx(1.0)}
    # A dump that misses test images is refused rather than scored on a different set.
    short = _dump(tmp_path / "short", [str(s.path) for s in samples[:4]], scores[:4], maps[:4])
    with pytest.raises(ValueError, match="tested 4 images"):
        score_peer_dump(short, data, size)
    with pytest.raises(ValueError, match="expected 64x64"):
        score_peer_dump(dump, data, 64)


def test_evaluate_raw_hand_computed():
    # Scores 1 2 | 3 4 with labels g g d g -> the F1-optimal cut makes {3, 4} NG: TP 1, FP 1 -> F1 2/3.
    labels = torch.tensor([0, 0, 1, 0, -1])  # the unknown image is left out
    metrics = evaluate_raw(np.array([1.0, 2.0, 3.0, 4.0, 99.0]), None, labels)
    assert metrics["image_AUROC"] == pytest.approx(2 / 3)
    assert metrics["image_F1"] == pytest.approx(2 / 3)


def test_ratio_and_pass_fail():
    assert report.ratio(1.0, 4.0) == 0.25
    assert report.ratio(1.0, 0.0) is None and report.ratio(None, 1.0) is None
    assert report.ratio(float("nan"), 1.0) is None
    assert report.target_for("padim", "peak_rss_mb") == ("<=", 0.5)
    assert report.target_for("patchcore", "peak_rss_mb") is None
    assert report.target_for("patchcore", "pixel_AUPRO") == (">=", 1.0)
    assert report.passes(("<=", 0.5), 5.0, 10.0) is True
    assert report.passes(("<=", 0.5), 5.1, 10.0) is False
    assert report.passes((">=", 2.0), 20.0, 10.0) is True
    assert report.passes((">=", 2.0), 19.9, 10.0) is False
    # Accuracy: equal passes, a hair below fails, a missing value is not judged.
    assert report.passes(report.ACCURACY_TARGET, 0.9, 0.9) is True
    assert report.passes(report.ACCURACY_TARGET, 0.8999, 0.9) is False
    assert report.passes(report.ACCURACY_TARGET, 1.0, 0.0) is True  # not a ratio: anomalib at 0 is beaten
    assert report.passes(report.ACCURACY_TARGET, None, 0.9) is None
    assert report.passes(None, 1.0, 2.0) is None


def _figures(scale: float, metric: float) -> dict:
    figures = {key: scale for key in FIGURES}
    figures.update({key: metric for key in report.METRIC_KEYS})
    return figures


def test_compare_table_and_verdict():
    ours = _figures(1.0, 0.9)
    ours["test_images_per_second"] = 30.0
    theirs = _figures(4.0, 0.8)
    theirs["test_images_per_second"] = 10.0
    theirs["image_AUROC"] = 0.95  # ours is worse here
    rows = report.compare("padim", ours, theirs, extras={"coreset 0.1": _figures(2.0, 0.7)})
    by_key = {r["key"]: r for r in rows}
    assert [r["key"] for r in rows] == FIGURES
    assert by_key["fit_seconds"]["ratio"] == 0.25 and by_key["fit_seconds"]["pass"] is True
    assert by_key["peak_rss_mb"]["pass"] is True and by_key["peak_rss_mb"]["target"] == "<= 0.5x"
    assert by_key["test_images_per_second"]["ratio"] == 3.0 and by_key["test_images_per_second"]["pass"] is True
    assert by_key["test_seconds"]["pass"] is None  # no test-wall target for PaDiM
    assert by_key["image_AUROC"]["pass"] is False and by_key["pixel_F1"]["pass"] is True
    assert by_key["image_AUROC"]["extras"] == {"coreset 0.1": 0.7}

    table = report.markdown_table("cat · padim", rows, with_peer=True)
    lines = table.splitlines()
    assert lines[0] == "#### cat · padim"
    assert lines[2] == "| figure | hamacho | anomalib | ours / anomalib | target | pass | hamacho coreset 0.1 |"
    assert "| image AUROC | 0.9000 | 0.9500 | 0.947 | >= anomalib | FAIL | 0.7000 |" in lines
    assert "| fit wall s (incl. calibration/validation) | 1.00 | 4.00 | 0.25 | <= 0.5x | PASS | 2.00 |" in lines
    assert "| peak RSS MiB | 1 | 4 | 0.25 | <= 0.5x | PASS | 2 |" in lines

    verdict = report.verdict_summary([{"title": "cat · padim", "rows": rows}])
    assert verdict.startswith("targets met: 7 of 8")
    assert "cat · padim: image AUROC (0.947x, target >= anomalib)" in verdict
    assert report.verdict_summary([{"title": "x", "rows": report.compare("padim", ours, None)}]).startswith(
        "targets: no peer run")


def test_weights_options():
    table = parse_weights(["resnet18=/a.pth", "wide_resnet50_2=/b.pth"])
    assert weights_for(table, "resnet18") == "/a.pth" and weights_for(table, "wide_resnet50_2") == "/b.pth"
    assert weights_for(parse_weights(["/c.pth"]), "wide_resnet50_2") == "/c.pth"
    assert weights_for(parse_weights([]), "resnet18") == "none"


def test_make_weights_is_seeded(tmp_path):
    a = torch.load(make_weights(tmp_path / "a.pth", "resnet18", 3), weights_only=True)
    b = torch.load(make_weights(tmp_path / "b.pth", "resnet18", 3), weights_only=True)
    c = torch.load(make_weights(tmp_path / "c.pth", "resnet18", 4), weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_export_benchmark_measures_parity_throughput_and_memory(tmp_path, capsys):
    from benchmarks import export_bench

    data = make_dataset(tmp_path / "parts", n_train=6, n_good=2, n_defect=2)
    code = export_bench.main(["--dataset", str(data), "--models", "padim", "--image-size", "64", "--runtimes",
                              "onnx", "--repeats", "1", "--startup-runs", "1", "--output-dir", str(tmp_path / "out")])
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["results"]["padim"]
    assert set(summary["performance"]) == {"torch", "onnx"}
    for runtime, run in summary["performance"].items():
        assert run["images"] == 4 and run["images_per_second"] > 0 and run["peak_rss_mb"] > 0
        assert run["torch_loaded"] == (runtime == "torch")  # the exported path runs without torch
        assert run["single_image_seconds"] > 0
    parity = summary["parity"]["onnx"]
    assert parity["images"] == 4 and parity["decisions_differing"] == 0 and parity["score_max_abs"] < 1e-4
    assert "| onnx |" in printed and "| torch |" in printed
