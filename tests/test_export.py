"""Export to ONNX, OpenVINO and TorchScript: the same answers as the PyTorch model, on a torch-free path."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hamacho.config import build_config
from hamacho.data.decoding import read_image
from hamacho.errors import ModelFileError
from hamacho.predictor import Predictor
from hamacho.train import run_training
from tests.conftest import make_dataset
from tests.float_bounds import file_tolerance

RUNTIMES = ["onnx", "openvino", "torchscript"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """PaDiM and PatchCore (resnet18, 64 px) trained on a small dataset and exported for every runtime."""
    from hamacho.export import export_model

    root = make_dataset(tmp_path_factory.mktemp("data") / "parts", n_train=10, n_good=3, n_defect=3)
    out = tmp_path_factory.mktemp("results")
    models = {}
    for name in ("padim", "patchcore"):
        settings = build_config(name, options={"dataset.root": str(root), "dataset.image_size": 64,
                                               "model.backbone": "resnet18", "model.backbone_weights": "none",
                                               "project.result_path": str(out), "report.enabled": False})
        model_path = run_training(settings, log=lambda _: None).model_path
        models[name] = {"model": model_path}
        for runtime in RUNTIMES:
            models[name][runtime] = export_model(model_path, runtime, log=lambda _: None).folder
    return root, models


def _images(root: Path) -> list:
    paths = sorted((root / "test").rglob("*.png"))
    rng = np.random.default_rng(3)
    odd = rng.integers(0, 256, (70, 130, 3), dtype=np.uint8)  # another size and aspect ratio
    return [*paths, read_image(paths[-1])[:, :, 0], odd]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_exports_give_the_same_answers_as_the_model_file(exported, model, runtime):
    root, models = exported
    reference = Predictor.load(models[model]["model"], device="cpu").predict(_images(root))
    predictor = Predictor.load(models[model][runtime], device="cpu")
    assert predictor.runtime.name == runtime and predictor.image_size == 64
    assert predictor.calibration == pytest.approx(Predictor.load(models[model]["model"]).calibration)
    for ours, theirs in zip(predictor.predict(_images(root)), reference, strict=True):
        assert ours.decision == theirs.decision
        assert ours.score == pytest.approx(theirs.score, abs=1e-4)
        assert ours.raw_score == pytest.approx(theirs.raw_score, rel=1e-4)
        assert ours.anomaly_map.shape == theirs.anomaly_map.shape
        assert np.abs(ours.anomaly_map - theirs.anomaly_map).max() < 1e-3
    metadata = json.loads((models[model][runtime] / "metadata.json").read_text())
    assert metadata["runtime"] == runtime and metadata["precision"] == "fp32"
    assert metadata["input"]["shape"] == ["batch", 3, 64, 64] and metadata["input"]["dtype"] == "uint8"
    assert metadata["check"]["raw_score_max_abs"] < 1e-3 and metadata["check"]["decisions_equal"] == 1.0
    assert metadata["model"]["display_name"] == {"padim": "PaDiM", "patchcore": "PatchCore"}[model]


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_batch_size_is_dynamic(exported, runtime):
    root, models = exported
    predictor = Predictor.load(models["patchcore"][runtime], device="cpu")
    images = np.stack([np.asarray(read_image(p)[:64, :64]).transpose(2, 0, 1) for p in _images(root)[:5]])
    together = predictor.runtime.run(images)
    for i in range(5):
        alone = predictor.runtime.run(images[i : i + 1])
        # the same function with other summation orders (tests/float_bounds.py), whatever the runtime
        tol = file_tolerance(models["patchcore"]["model"], float(together.raw_scores[i]),
                             float(together.raw_maps[i].max()))
        np.testing.assert_allclose(alone.raw_scores, together.raw_scores[i], rtol=tol.raw_rtol)
        np.testing.assert_allclose(alone.maps[0], together.maps[i], rtol=0, atol=tol.map_atol)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_inference_command_with_an_export_writes_what_model_pt_writes(exported, cli, tmp_path):
    root, models = exported
    outputs = {}
    for name, path in (("model", models["padim"]["model"]), ("onnx", models["padim"]["onnx"]),
                       ("openvino", models["padim"]["openvino"] / "metadata.json")):
        out = tmp_path / name
        result = cli("inference", "--model-path", path, "--image-path", root, "--save-path", out, "--quiet",
                     "--save-heatmap")
        assert result.exit_code == 0, result.err
        outputs[name] = out
        assert (out / "report.html").is_file() and (out / "metrics.json").is_file()
        assert len(list((out / "images").rglob("*.png"))) == 6 and len(list((out / "heatmaps").rglob("*.png"))) == 6
    reference = _rows(outputs["model"] / "results.csv")
    for name in ("onnx", "openvino"):
        rows = _rows(outputs[name] / "results.csv")
        assert [r["name"] for r in rows] == [r["name"] for r in reference]
        for ours, theirs in zip(rows, reference, strict=True):
            assert ours["decision"] == theirs["decision"]
            assert float(ours["normalized_score"]) == pytest.approx(float(theirs["normalized_score"]), abs=1e-4)
        report = (outputs[name] / "report.html").read_text()
        assert "PaDiM" in report


def test_exported_models_run_without_torch(exported, tmp_path):
    """Inference from an export with torch and Lightning made unimportable, as on a line PC."""
    root, models = exported
    for runtime in ("onnx", "openvino"):
        out = tmp_path / runtime
        code = ("import sys\n"
                "for name in ('torch', 'torchvision', 'lightning', 'torchmetrics'): sys.modules[name] = None\n"
                "from hamacho.cli import main\n"
                f"main(['inference', '--model-path', {str(models['patchcore'][runtime])!r}, '--image-path', "
                f"{str(root)!r}, '--save-path', {str(out)!r}, '--quiet'])\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert len(_rows(out / "results.csv")) == 6 and (out / "report.html").is_file()
        from hamacho import Predictor as Library  # and the library API on the same export

        code = ("import sys\n"
                "for name in ('torch', 'torchvision', 'lightning'): sys.modules[name] = None\n"
                "from hamacho import Predictor\n"
                f"p = Predictor.load({str(models['patchcore'][runtime])!r}).predict({str(root / 'test')!r} + "
                "'/scratch/000.png')[0]\n"
                "print(p.decision, p.anomaly_map.shape)\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["NG", "(96,", "96)"]
        assert Library is Predictor


def test_without_torch_a_model_file_asks_for_it_in_one_line(exported, tmp_path):
    root, models = exported
    code = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "from hamacho.cli import main\n"
            f"main(['inference', '--model-path', {str(models['padim']['model'])!r}, '--image-path', {str(root)!r}, "
            f"'--save-path', {str(tmp_path / 'o')!r}, '--quiet'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        (f"Error: {models['padim']['model']}: a model file (model.pt) needs PyTorch, which is not installed here: "
         "pip install 'hamacho[train]'; or export it (hamacho export) and use the export folder")]
    assert not (tmp_path / "o").exists()


def test_tampered_incomplete_and_newer_exports_are_refused(exported, cli, tmp_path):
    root, models = exported
    image = root / "test" / "good" / "000.png"
    cases = []
    tampered = shutil.copytree(models["padim"]["onnx"], tmp_path / "tampered")
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tampered / "model.onnx").write_bytes(bytes(data))
    cases.append((tampered, "is damaged or was modified: model.onnx does not match the SHA-256 in metadata.json"))
    weights = shutil.copytree(models["padim"]["onnx"], tmp_path / "weights")
    data = bytearray((weights / "model.onnx.data").read_bytes())
    data[len(data) // 3] ^= 0x01
    (weights / "model.onnx.data").write_bytes(bytes(data))
    cases.append((weights, "model.onnx.data does not match the SHA-256"))
    newer = shutil.copytree(models["padim"]["onnx"], tmp_path / "newer")
    metadata = json.loads((newer / "metadata.json").read_text())
    (newer / "metadata.json").write_text(json.dumps({**metadata, "format_version": 99}))
    cases.append((newer, "is export format 99, written by a newer Hamacho"))
    missing = shutil.copytree(models["patchcore"]["openvino"], tmp_path / "missing")
    (missing / "model.bin").unlink()
    cases.append((missing, "is incomplete: model.bin is missing"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")
    cases.append((broken, "cannot be read as JSON"))
    for folder, message in cases:
        result = cli("inference", "--model-path", folder, "--image-path", image, "--save-path", tmp_path / "o",
                     "--quiet")
        assert result.exit_code == 1, result.err
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.err
        with pytest.raises(ModelFileError, match="Hamacho|SHA-256|incomplete|JSON"):
            Predictor.load(folder)
    assert not (tmp_path / "o").exists()


def test_export_errors_are_one_line_and_write_nothing(exported, cli, tmp_path):
    _, models = exported
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        (["--format", "tflite"], 2, "Invalid value for '--format'"),
        (["--format", "torchscript", "--precision", "fp16"], 1, "fp16 export is available for onnx and openvino"),
        (["--format", "onnx", "--precision", "bf16"], 1, "bf16 export is available for openvino; use --precision"),
        (["--format", "onnx", "--output", foreign], 1, "exists and is not a Hamacho export"),
    ]
    for args, code, message in cases:
        result = cli("export", "--model-path", models["padim"]["model"], *args)
        assert result.exit_code == code, result.err
        assert result.err.strip().splitlines()[0].startswith("Error: ") and message in result.err
    result = cli("export", "--model-path", tmp_path / "absent.pt", "--format", "onnx")
    assert result.exit_code == 1 and "model file not found" in result.err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not [p for p in models["padim"]["model"].parent.iterdir() if p.name.endswith(".tmp")]


def test_export_again_replaces_the_folder_and_fp16_stays_close(exported, cli, tmp_path):
    root, models = exported
    target = tmp_path / "deploy"
    for precision in ("fp32", "fp16"):
        result = cli("export", "--model-path", models["patchcore"]["model"], "--format", "openvino", "--output",
                     target, "--precision", precision)
        assert result.exit_code == 0, result.err
        assert f"Exported for openvino ({precision}): {target}" in result.out
        assert "largest differences" in result.err
    assert sorted(p.name for p in target.iterdir()) == ["metadata.json", "model.bin", "model.xml"]
    assert json.loads((target / "metadata.json").read_text())["precision"] == "fp16"
    half = Predictor.load(target).predict(_images(root))
    full = Predictor.load(models["patchcore"]["openvino"]).predict(_images(root))
    assert max(abs(a.score - b.score) for a, b in zip(half, full, strict=True)) < 0.02
    assert [a.decision for a in half[:6]] == [b.decision for b in full[:6]]
    assert not list(tmp_path.glob(".deploy*"))
