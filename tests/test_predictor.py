"""The Predictor: the library's scoring API, and the path the CLI and the training run score through."""

from __future__ import annotations

import csv
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from hamacho.config import build_config
from hamacho.data.decoding import read_image
from hamacho.errors import ConfigError, ModelFileError
from hamacho.predictor import Prediction, Predictor
from hamacho.train import run_training
from tests.conftest import make_dataset
from tests.float_bounds import model_of, reorder_tolerance


def _train(root: Path, out: Path, model: str) -> Path:
    settings = build_config(model, options={"dataset.root": str(root), "dataset.image_size": 64,
                                            "model.backbone": "resnet18", "model.backbone_weights": "none",
                                            "project.result_path": str(out), "report.enabled": False,
                                            "dataset.batch_size": 3})
    return run_training(settings, log=lambda _: None).model_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small dataset and a PaDiM and a PatchCore model trained on it."""
    root = make_dataset(tmp_path_factory.mktemp("data") / "parts", n_train=10, n_good=3, n_defect=3)
    out = tmp_path_factory.mktemp("results")
    return root, {model: _train(root, out, model) for model in ("padim", "patchcore")}


def _test_images(root: Path) -> list[Path]:
    return sorted((root / "test").rglob("*.png"))


def _same(a: Prediction, b: Prediction, predictor: Predictor | None = None) -> None:
    """The same image scored twice: bit-identical, or, when ``predictor`` is given because the two scores
    came from different batches, within the float32 reordering bound (tests/float_bounds.py)."""
    assert a.error == b.error
    assert a.anomaly_map.shape == b.anomaly_map.shape
    if predictor is None:
        assert a.decision == b.decision
        assert a.raw_score == b.raw_score and a.score == b.score
        assert np.array_equal(a.anomaly_map, b.anomaly_map)
        return
    tol = reorder_tolerance(model_of(predictor), b.raw_score, raw_map_max=b.raw_score)
    assert a.raw_score == pytest.approx(b.raw_score, rel=tol.raw_rtol)
    assert a.score == pytest.approx(b.score, abs=tol.score_atol)
    if abs(b.score - b.image_threshold) > tol.score_atol:
        assert a.decision == b.decision
    np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=tol.map_atol)


def test_paths_and_rgb_arrays_give_the_same_prediction(trained):
    root, models = trained
    predictor = Predictor.load(models["padim"], device="cpu")
    paths = _test_images(root)
    from_paths = predictor.predict(paths)
    from_arrays = predictor.predict([read_image(p) for p in paths])
    assert len(from_paths) == len(paths) == 6
    for path, by_path, by_array in zip(paths, from_paths, from_arrays, strict=True):
        assert by_path.source == str(path) and by_array.source.startswith("array #")
        _same(by_path, by_array)  # the same batches: bit-identical
        assert by_path.error is None
        assert 0.0 <= by_path.score <= 1.0 and by_path.decision == ("NG" if by_path.score >= 0.5 else "OK")
        assert by_path.anomaly_map.shape == (96, 96) and by_path.anomaly_map.dtype == np.float32
        assert by_path.mask.dtype == bool and np.array_equal(by_path.mask, by_path.anomaly_map >= 0.5)
    # The generated defects are obvious: every defective image is NG, every good one OK.
    assert [p.decision for p in from_paths] == ["OK"] * 3 + ["NG"] * 3
    single = predictor.predict(paths[0])  # one image, not in a list
    assert len(single) == 1
    _same(single[0], from_paths[0], predictor)  # a batch of one, then of three


def test_every_supported_dtype_and_channel_count(trained):
    root, models = trained
    predictor = Predictor.load(models["padim"], device="cpu")
    rgb = read_image(_test_images(root)[-1])  # a defective image
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    as16 = lambda a: a.astype(np.uint16) * 257
    inputs = [rgb, rgba, as16(rgb), as16(rgba), gray, gray[:, :, None], as16(gray)]
    rgb_p, rgba_p, rgb16, rgba16, gray_p, gray1, gray16 = predictor.predict(inputs)
    for prediction in (rgba_p, rgb16, rgba16):
        _same(prediction, rgb_p, predictor)  # alpha dropped, 16-bit scaled by 1/257: the same pixels
    for prediction in (gray1, gray16):
        _same(prediction, gray_p, predictor)
    assert rgb_p.decision == "NG" and gray_p.error is None and gray_p.anomaly_map.shape == gray.shape
    # Colour matters: the gray version is another image (the defect is magenta).
    assert gray_p.raw_score != pytest.approx(rgb_p.raw_score, rel=1e-3)


def test_original_resolution_of_non_square_images(trained):
    root, models = trained
    predictor = Predictor.load(models["padim"], device="cpu")
    image = cv2.resize(read_image(_test_images(root)[0]), (130, 70))
    (prediction,) = predictor.predict(image, pixel_threshold=0.0)
    assert prediction.anomaly_map.shape == (70, 130) and prediction.mask.shape == (70, 130)
    assert prediction.mask.all()  # cut 0: every pixel is at or above it


def test_unreadable_inputs_get_an_error_each_and_do_not_fail_the_batch(trained, tmp_path):
    root, models = trained
    predictor = Predictor.load(models["patchcore"], device="cpu", batch_size=4)
    good = _test_images(root)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    inputs = [good[0], empty, read_image(good[4]), np.zeros((4, 4, 7), np.uint8), broken, {"not": "an image"},
              tmp_path / "missing.png", good[5]]
    results = predictor.predict(inputs)
    assert len(results) == 8
    errors = {i: r.error for i, r in enumerate(results) if r.error}
    assert sorted(errors) == [1, 3, 4, 5, 6]
    assert "empty file (0 bytes)" in errors[1]
    assert "got shape (4, 4, 7)" in errors[3]
    assert "not a readable image" in errors[4]
    assert errors[5].startswith("unsupported input type dict") and results[5].source == "input #5"
    assert results[3].source == "array #3" and results[1].source == str(empty)
    assert "missing.png" in errors[6]
    for i in errors:
        assert results[i].decision == "" and np.isnan(results[i].score) and results[i].anomaly_map is None
    alone = predictor.predict([good[0], good[4], good[5]])
    for index, reference in zip((0, 2, 7), alone, strict=True):
        assert results[index].error is None
        _same(results[index], reference, predictor)


def test_per_call_thresholds(trained):
    root, models = trained
    predictor = Predictor.load(models["padim"], device="cpu")
    paths = _test_images(root)
    default = predictor.predict(paths)
    everything = predictor.predict(paths, image_threshold=0.0, pixel_threshold=0.0)
    assert all(p.decision == "NG" and p.mask.all() and p.image_threshold == 0.0 for p in everything)
    cut = sorted(p.score for p in default)[2]  # the third-lowest score: that image and those above are NG
    moved = predictor.predict(paths, image_threshold=cut, pixel_threshold=0.9)
    assert [p.decision for p in moved] == ["NG" if p.score >= cut else "OK" for p in default]
    assert sum(p.decision == "NG" for p in moved) == 4
    for before, after in zip(default, moved, strict=True):
        assert after.score == before.score  # the cut moves, the scores do not
        assert np.array_equal(after.mask, after.anomaly_map >= 0.9)
        assert after.mask.sum() <= before.mask.sum()
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="image_threshold must be between 0 and 1"):
            predictor.predict(paths, image_threshold=bad)
        with pytest.raises(ConfigError, match="pixel_threshold must be between 0 and 1"):
            predictor.predict(paths, pixel_threshold=bad)


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_two_predictors_in_two_threads_equal_one_after_the_other(trained, model):
    root, models = trained
    first, second = Predictor.load(models[model], device="cpu"), Predictor.load(models[model], device="cpu")
    images = [read_image(p) for p in _test_images(root)] * 3
    sequential = [first.predict(images), second.predict(images)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(p.predict, images) for p in (first, second) for _ in range(2)]
        concurrent = [future.result() for future in futures]
    shared = Predictor.load(models[model], device="cpu")  # one Predictor used by two threads at once
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent += [future.result() for future in [pool.submit(shared.predict, images) for _ in range(2)]]
    for run in concurrent:
        for a, b in zip(run, sequential[0], strict=True):
            assert a.decision == b.decision
            assert a.raw_score == b.raw_score and a.score == b.score
            assert np.array_equal(a.anomaly_map, b.anomaly_map)


def test_scores_equal_the_inference_command(trained, cli, tmp_path):
    root, models = trained
    out = tmp_path / "inference"
    result = cli("inference", "--model-path", models["patchcore"], "--image-path", root, "--save-path", out,
                 "--quiet", "--no-report", "--no-images")
    assert result.exit_code == 0, result.err
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    predictions = Predictor.load(models["patchcore"], device="cpu", batch_size=1).predict([r["file"] for r in rows])
    assert len(rows) == 6
    reference = Predictor.load(models["patchcore"], device="cpu")  # batches as trained, as the command
    for row, prediction, same_batches in zip(rows, predictions, reference.predict([r["file"] for r in rows]),
                                             strict=True):
        assert float(row["raw_score"]) == same_batches.raw_score
        assert float(row["normalized_score"]) == same_batches.score
        assert row["decision"] == same_batches.decision
        tol = reorder_tolerance(model_of(reference), prediction.raw_score, prediction.raw_score)
        assert float(row["raw_score"]) == pytest.approx(prediction.raw_score, rel=tol.raw_rtol)
        assert float(row["normalized_score"]) == pytest.approx(prediction.score, abs=tol.score_atol)


def test_a_model_in_memory_and_its_file_agree(trained):
    root, models = trained
    from hamacho.model_file import load_model_file

    loaded = load_model_file(models["padim"])
    in_memory = Predictor.from_model(loaded.model, loaded.settings, device="cpu")
    from_file = Predictor.load(models["padim"], device="cpu")
    assert in_memory.image_size == from_file.image_size == 64
    assert in_memory.calibration == from_file.calibration
    for a, b in zip(in_memory.predict(_test_images(root)), from_file.predict(_test_images(root)), strict=True):
        _same(a, b)


def test_load_errors_are_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        Predictor.load(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(ModelFileError, match="not a torch archive"):
        Predictor.load(tmp_path / "text.pt")


def test_public_name_loads_without_torch():
    """`from hamacho import Predictor` loads no torch: only opening a model file (PyTorch runtime) does."""
    code = ("import sys, hamacho; assert 'torch' not in sys.modules; "
            "from hamacho import Predictor, Prediction; assert 'torch' not in sys.modules; "
            "print(Predictor.__module__, Prediction.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hamacho.predictor", "hamacho.predictor"]
