"""Bad input and faults: one clear line, a non-zero exit, and nothing else touched."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hamacho.config import build_config, max_num_workers
from hamacho.train import run_training
from tests.conftest import FAST, make_dataset, pause_env, write_png


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.err + result.out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small PaDiM run shared by the inference error tests."""
    root = make_dataset(tmp_path_factory.mktemp("data") / "parts")
    out = tmp_path_factory.mktemp("results")
    cfg = build_config("padim", None, {"dataset.root": str(root), "dataset.image_size": 64,
                                       "model.backbone_weights": "none", "project.result_path": str(out),
                                       "report.enabled": False})
    result = run_training(cfg, log=lambda _: None)
    return root, result.model_path


def _train_cases(tmp: Path) -> list:
    good = make_dataset(tmp / "good")
    file_root = tmp / "file"
    file_root.write_text("x")
    empty = tmp / "empty"
    empty.mkdir()
    no_train = tmp / "no_train"
    (no_train / "test" / "good").mkdir(parents=True)
    empty_train = tmp / "empty_train"
    (empty_train / "train" / "good").mkdir(parents=True)
    (empty_train / "train" / "good" / "readme.txt").write_text("no images here")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("dataset: {image_size: 64\n")
    result_file = tmp / "results_file"
    result_file.write_text("x")
    return [
        (["--dataset-root", tmp / "missing"], 1, ["dataset root not found"]),
        (["--dataset-root", file_root], 1, ["dataset root must be a folder, but is a file"]),
        (["--dataset-root", empty], 1, ["dataset root is empty"]),
        (["--dataset-root", no_train], 1, ["no train/good folder"]),
        (["--dataset-root", empty_train], 1, ["no images in", "train/good"]),
        ([], 1, ["no dataset given: pass --dataset-root"]),
        (["--dataset-root", good, "--model", "resnet"], 2, ["Invalid value for '--model'", "padim", "patchcore"]),
        (["--dataset-root", good, "--backbone", "vgg16"], 2, ["Invalid value for '--backbone'"]),
        (["--dataset-root", good, "--config", bad_yaml], 1, ["bad.yaml"]),
        (["--dataset-root", good, "--config", tmp], 1, ["config path is a folder"]),
        (["--dataset-root", good, "dataset.imagesize=64"], 1,
         ["unknown config key 'dataset.imagesize'", "valid keys in section 'dataset'", "image_size"]),
        (["--dataset-root", good, "--image-size", "100"], 1, ["positive multiple of 32", "got 100"]),
        (["--dataset-root", good, "--image-size", "-32"], 1, ["dataset.image_size' must be at least 32"]),
        (["--dataset-root", good, "--batch-size", "0"], 1, ["dataset.batch_size' must be at least 1"]),
        (["--dataset-root", good, "--num-workers", str(max_num_workers() + 1)], 1, ["at most", "cpu_count"]),
        (["--dataset-root", good, "--backbone-weights", tmp / "nope.pth"], 1, ["backbone weights file not found"]),
        (["--dataset-root", good, "--backbone-weights", tmp], 1, ["backbone weights path is a folder"]),
        (["--dataset-root", good, "--result-path", result_file], 1, ["is a file"]),
        (["--dataset-root", good, "--result-path", result_file / "sub"], 1, ["cannot create result folder"]),
    ]


@pytest.mark.parametrize("case", range(19))
def test_train_user_errors(cli, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    cases = _train_cases(tmp_path / "in")
    assert len(cases) == 19
    args, code, fragments = cases[case]
    before = _snapshot(tmp_path)
    result = cli("train", *FAST, "--result-path", tmp_path / "out", *args)  # the case's options come last and win
    _assert_one_line_error(result, code, *fragments)
    assert _snapshot(tmp_path) == before  # nothing written, not even an empty results folder
    assert not (tmp_path / "out").exists()


def _corrupt(root: Path, kind: str, name: str) -> Path:
    path = root / name
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a picture")
    elif kind == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    return path


def test_corrupt_training_images_are_refused_with_the_full_list(cli, tmp_path):
    root = make_dataset(tmp_path / "d", n_train=8)
    train = root / "train" / "good"
    bad = [_corrupt(train, "zero", "001.png"), _corrupt(train, "text", "004.png")]
    result = cli("train", "--dataset-root", root, "--result-path", tmp_path / "out", *FAST)
    _assert_one_line_error(result, 1, "2 training image(s) cannot be read", "empty file (0 bytes)", str(bad[0]),
                           "not a readable image", str(bad[1]))
    assert not (tmp_path / "out").exists()


def test_truncated_training_images_are_found_while_fitting(cli, tmp_path):
    root = make_dataset(tmp_path / "d", n_train=8)
    bad = _corrupt(root / "train" / "good", "truncated", "002.png")
    result = cli("train", "--dataset-root", root, "--result-path", tmp_path / "out", *FAST)
    _assert_one_line_error(result, 1, "1 training image(s) cannot be read", "truncated", str(bad))
    assert not (tmp_path / "out" / "padim" / "d" / "model.pt").exists()


def test_bad_test_images_and_masks_are_reported_not_fatal(cli, tmp_path):
    root = make_dataset(tmp_path / "d", n_train=8, n_good=3, n_defect=4)
    _corrupt(root / "test" / "good", "truncated", "001.png")
    _corrupt(root / "test" / "scratch", "zero", "000.png")
    write_png(root / "ground_truth" / "scratch" / "002_mask.png", np.zeros((20, 20), np.uint8))  # wrong size
    (root / "ground_truth" / "scratch" / "003_mask.png").unlink()  # image without mask
    write_png(root / "ground_truth" / "scratch" / "777_mask.png", np.zeros((96, 96), np.uint8))  # mask alone
    result = cli("train", "--dataset-root", root, "--result-path", tmp_path / "out", *FAST)
    assert result.exit_code == 0, result.err
    assert "unreadable test images skipped: 2" in result.err
    assert "masks not used: 1" in result.err and "20x20" in result.err
    assert "1 image(s) in test/scratch have no mask" in result.err
    assert "1 mask(s) without an image were ignored: ground_truth/scratch/777_mask.png" in result.err
    with open(tmp_path / "out" / "padim" / "d" / "results.csv") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    assert rows["good/001"]["decision"] == "" and "not a readable image" in rows["good/001"]["status"]
    assert rows["scratch/000"]["decision"] == "" and "empty file" in rows["scratch/000"]["status"]
    assert rows["scratch/002"]["decision"] in ("OK", "NG") and rows["scratch/002"]["status"].startswith("mask ignored")
    assert rows["scratch/001"]["status"] == "ok"


def _inference_cases(tmp: Path, root: Path, model: Path) -> list:
    foreign = tmp / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    tampered = tmp / "tampered.pt"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    text = tmp / "notes.doc"  # .txt and .csv are file lists (docs/inference.md)
    text.write_text("x")
    empty = tmp / "empty_dir"
    empty.mkdir()
    blocker = tmp / "blocker"
    blocker.write_text("x")
    image = root / "test" / "good" / "000.png"
    return [
        (["--model-path", tmp / "none.pt", "--image-path", image], ["model file not found"]),
        (["--model-path", empty, "--image-path", image], ["model path is a folder without model.pt"]),
        (["--model-path", foreign, "--image-path", image], ["is not a Hamacho model file"]),
        (["--model-path", tampered, "--image-path", image], ["tampered.pt"]),
        (["--model-path", text, "--image-path", image], ["is not a Hamacho model file, or it is damaged (not a torch archive)"]),
        (["--model-path", model, "--image-path", tmp / "nothing"], ["image path not found"]),
        (["--model-path", model, "--image-path", text], ["not an image file"]),
        (["--model-path", model, "--image-path", empty], ["no images found under"]),
        (["--model-path", model, "--image-path", image, "--pixel-threshold", "2"], ["--pixel-threshold must be"]),
        (["--model-path", model, "--image-path", image, "--batch-size", "0"], ["--batch-size must be at least 1"]),
        (["--model-path", model, "--image-path", image, "--save-path", blocker], ["save path is a file"]),
        (["--model-path", model, "--image-path", image, "--save-path", blocker / "x"], ["cannot create save path"]),
    ]


@pytest.mark.parametrize("case", range(12))
def test_inference_user_errors(cli, trained, tmp_path, case):
    root, model = trained
    cases = _inference_cases(tmp_path, root, model)
    assert len(cases) == 12
    args, fragments = cases[case]
    before_model, before_tmp = _snapshot(model.parent), _snapshot(tmp_path)
    result = cli("inference", *args, "--quiet")
    _assert_one_line_error(result, 1, *fragments)
    assert _snapshot(model.parent) == before_model and _snapshot(tmp_path) == before_tmp


def test_inference_on_a_messy_folder_processes_every_good_image(cli, trained, tmp_path):
    root, model = trained
    folder = tmp_path / "line3"
    folder.mkdir()
    shutil.copy(root / "test" / "scratch" / "000.png", folder / "ok_color.png")
    gray = cv2.cvtColor(cv2.imread(str(root / "test" / "good" / "000.png")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(folder / "gray_small.png"), cv2.resize(gray, (50, 70)))
    rgba = cv2.cvtColor(cv2.imread(str(root / "test" / "good" / "001.png")), cv2.COLOR_BGR2BGRA)
    cv2.imwrite(str(folder / "alpha.png"), rgba)
    cv2.imwrite(str(folder / "deep.tif"), (gray.astype(np.uint16) * 257))
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not a jpeg")
    shutil.copy(root / "test" / "good" / "002.png", folder / "cut.png")
    _corrupt(folder, "truncated", "cut.png")
    (folder / "readme.txt").write_text("ignored: not an image extension")
    out = tmp_path / "out"
    result = cli("inference", "--model-path", model, "--image-path", folder, "--save-path", out, "--quiet")
    assert result.exit_code == 0, result.err
    assert "warning: 3 of 7 image(s) could not be read" in result.err
    assert "7 image(s): " in result.out and "3 unreadable" in result.out
    with open(out / "results.csv") as handle:
        rows = {r["name"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"ok_color", "gray_small", "alpha", "deep", "zero", "text", "cut"}
    for name in ("ok_color", "gray_small", "alpha", "deep"):
        assert rows[name]["decision"] in ("OK", "NG") and rows[name]["status"] == "ok"
        assert (out / "images" / f"{name}.png").is_file()
    for name, reason in (("zero", "empty file"), ("text", "not a readable image"), ("cut", "not a readable image")):
        assert rows[name]["decision"] == "" and reason in rows[name]["status"]
    assert not (out / "images" / "zero.png").exists()


def test_inference_fails_only_when_nothing_could_be_read(cli, trained, tmp_path):
    _, model = trained
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.png").write_text("nope")
    result = cli("inference", "--model-path", model, "--image-path", folder, "--save-path", tmp_path / "o",
                 "--quiet")
    assert result.exit_code == 1
    assert result.err.strip().splitlines()[-1].startswith("Error: none of the 2 image(s) could be read")


def test_model_folder_is_accepted_for_model_path(cli, trained, tmp_path):
    root, model = trained
    result = cli("inference", "--model-path", model.parent, "--image-path", root / "test" / "good" / "000.png",
                 "--save-path", tmp_path / "o", "--quiet")
    assert result.exit_code == 0, result.err


def test_interrupted_model_save_keeps_the_previous_file(trained, tmp_path, monkeypatch):
    from hamacho import model_file
    from hamacho.model_file import load_model_file, save_model_file

    _, model = trained
    target = tmp_path / "model.pt"
    shutil.copy(model, target)
    before = target.read_bytes()
    loaded = load_model_file(target)

    def save_half_then_interrupt(obj, path):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_file.torch, "save", save_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_model_file(target, loaded.model, loaded.settings)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


TRAIN_PHASES = ["loading", "feature extraction", "fit", "calibration", "test", "report", "saving"]


def _start_paused(tmp_path: Path, phase: str, model: str = "padim", root: Path | None = None,
                  overrides: tuple[str, ...] = ()) -> tuple[subprocess.Popen, Path, Path]:
    """Start `hamacho train` on ``root`` (made in ``tmp_path`` when None) that pauses inside ``phase``
    (tests/seams/hamacho_pause_hook.py) until stopped.

    Returns the process, the marker file the run writes when it pauses there, and its result folder.
    """
    root = root or tmp_path / "parts"
    if not root.exists():
        make_dataset(root, n_train=12, n_good=2, n_defect=2, size=64)
    out = tmp_path / "out"
    marker = tmp_path / "paused"
    marker.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "hamacho", "train", "--model", model, "--dataset-root", str(root), "--result-path",
           str(out), "--image-size", "64", "--backbone", "resnet18", "--backbone-weights", "none", "--batch-size",
           "4", "--quiet", *overrides]
    env = {**os.environ, **pause_env(phase, marker)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env), marker, out


def _stop_when_paused(proc: subprocess.Popen, marker: Path, phase: str, sig: int = signal.SIGINT) -> tuple[int, str, str]:
    """Wait until the run pauses inside ``phase``, then signal it; its exit code, stdout and stderr.

    The hook makes the run announce itself in a marker file and wait for the stop request, so the signal
    always arrives inside the chosen phase, however busy the machine is.
    """
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if not marker.exists():
        proc.kill()
        pytest.fail(f"the run never paused in {phase!r}: {proc.communicate()[1]}")
    assert marker.read_text().strip() == phase
    proc.send_signal(sig)
    out_text, err = proc.communicate(timeout=600)
    return proc.returncode, out_text, err


def _train_and_stop(tmp_path: Path, phase: str, sig: int = signal.SIGINT, model: str = "padim"):
    """Start `hamacho train`, wait until it pauses inside ``phase``, then signal it."""
    proc, marker, out = _start_paused(tmp_path, phase, model)
    return (*_stop_when_paused(proc, marker, phase, sig), out)


@pytest.fixture(scope="module")
def stopped_in_each_phase(tmp_path_factory) -> dict[str, tuple[int, str, str, Path]]:
    """One run stopped with Ctrl-C in each training phase. The runs start together (each waits in its phase
    until stopped, so starting them at once races nothing) and share the cores pytest leaves idle."""
    base = tmp_path_factory.mktemp("phases")
    make_dataset(base / "parts", n_train=12, n_good=2, n_defect=2, size=64)
    started = {}
    for phase in TRAIN_PHASES:
        folder = base / phase.replace(" ", "_")
        folder.mkdir()
        started[phase] = _start_paused(folder, phase, root=base / "parts")
    try:
        return {phase: (*_stop_when_paused(proc, marker, phase), out)
                for phase, (proc, marker, out) in started.items()}
    finally:
        for proc, _, _ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.mark.parametrize("phase", TRAIN_PHASES)
def test_ctrl_c_in_any_phase_of_training_leaves_no_model_file(stopped_in_each_phase, phase):
    code, out_text, err, out = stopped_in_each_phase[phase]
    assert code == 130, err
    lines = err.strip().splitlines()  # notes on the calibration may come first (2 defective images: few)
    assert lines[-1] == f"Interrupted during {phase}; no model file was written.", err
    assert all(line.startswith("note: ") for line in lines[:-1]), err  # no traceback, no other error
    assert out_text == ""
    assert not list(out.rglob("model.pt")) and not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))


def test_interrupted_run_keeps_the_previous_model_file(tmp_path, cli):
    root = make_dataset(tmp_path / "parts", n_train=12, n_good=2, n_defect=2, size=64)
    result = cli("train", "--dataset-root", root, "--result-path", tmp_path / "out", *FAST, "--batch-size", "4",
                 "--seed", "1")
    assert result.exit_code == 0, result.err
    model = tmp_path / "out" / "padim" / "parts" / "model.pt"
    before = model.read_bytes()
    code, _, err, _ = _train_and_stop(tmp_path, "saving")  # seed 0: another model, stopped before its rename
    assert code == 130, err
    assert model.read_bytes() == before
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_ctrl_c_during_a_coreset_chunk_selected_in_feature_extraction(tmp_path):
    """PatchCore selects each full coreset chunk during feature extraction: with chunks of 64 patches (one
    64 px image), the first batch's update completes chunks, and the first step of the phase, where the run
    pauses, is a step of that selection."""
    proc, marker, out = _start_paused(tmp_path, "feature extraction", "patchcore",
                                      overrides=("model.coreset_chunk=64",))
    code, out_text, err = _stop_when_paused(proc, marker, "feature extraction")
    assert code == 130, err
    assert err.strip().splitlines() == ["Interrupted during feature extraction; no model file was written."]
    assert out_text == ""
    assert not list(out.rglob("model.pt"))


def test_sigterm_stops_like_ctrl_c_with_its_own_exit_code(tmp_path):
    code, _, err, out = _train_and_stop(tmp_path, "fit", sig=signal.SIGTERM, model="patchcore")
    assert code == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["Interrupted during fit; no model file was written."]
    assert not list(out.rglob("model.pt"))
