"""High-resolution inspection: crop box, circle crop, valid-area mask, non-square inputs and tiling.

Tiny generated images and random-init resnet18 at 64 px tiles keep every training here to a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hamacho.config import build_config
from hamacho.data.framing import Framing
from hamacho.data.geometry import (
    CircleParams,
    Placement,
    content_rect,
    coverage,
    find_circle,
    iter_tiles,
    stitch,
    tile_origins,
    to_original,
)
from hamacho.predictor import Predictor
from hamacho.train import run_training
from tests.conftest import FAST, _texture, write_png
from tests.float_bounds import file_tolerance

HEIGHT, WIDTH = 96, 128  # non-square originals


def _rect_dataset(root: Path, n_train: int = 6, n_good: int = 2, n_defect: int = 2, seed: int = 0,
                  disc: bool = False) -> Path:
    """Images HEIGHT x WIDTH; defects are magenta boxes inside x 16..80 (left part); optionally a part on a disc."""
    rng = np.random.default_rng(seed)

    def part() -> np.ndarray:
        image = _texture(rng, WIDTH)[:HEIGHT]
        if disc:
            shade = np.zeros((HEIGHT, WIDTH), np.uint8)
            centre = (60 + int(rng.integers(-4, 5)), 48 + int(rng.integers(-3, 4)))
            cv2.circle(shade, centre, 38, 255, -1)
            image = np.where(shade[:, :, None] > 0, image, 0).astype(np.uint8)
        return image

    for i in range(n_train):
        write_png(root / "train" / "good" / f"{i:03d}.png", part())
    for i in range(n_good):
        write_png(root / "test" / "good" / f"{i:03d}.png", part())
    for i in range(n_defect):
        image, mask = part(), np.zeros((HEIGHT, WIDTH), np.uint8)
        x, y = int(rng.integers(40, 56)), int(rng.integers(30, 50))
        cv2.rectangle(mask, (x, y), (x + 14, y + 10), 255, -1)
        image[mask > 0] = (250, 30, 200)
        write_png(root / "test" / "scratch" / f"{i:03d}.png", image)
        write_png(root / "ground_truth" / "scratch" / f"{i:03d}_mask.png", mask)
    return root


def _train(root: Path, out: Path, model: str = "padim", overrides: tuple[str, ...] = (), size: int = 64) -> Path:
    settings = build_config(model, None, {"dataset.root": str(root), "dataset.image_size": size,
                                          "model.backbone": "resnet18", "model.backbone_weights": "none",
                                          "project.result_path": str(out), "report.enabled": False,
                                          "visualization.report_images": False}, list(overrides))
    return run_training(settings, log=lambda _: None).model_path


# --- geometry, without a model ---------------------------------------------------------------------

def test_tiles_cover_the_frame_and_end_at_the_borders():
    origins = tile_origins((96, 128), (64, 64), (32, 48))
    assert origins == [(0, 0), (0, 48), (0, 64), (32, 0), (32, 48), (32, 64)]
    assert coverage((96, 128), (64, 64), origins).min() >= 1
    with pytest.raises(ValueError, match="larger than the image"):
        tile_origins((48, 128), (64, 64), (32, 32))


def test_stitching_places_tiles_where_they_came_from_and_averages_overlaps():
    frame, tile = (96, 128), (64, 64)
    origins = tile_origins(frame, tile, (40, 40))
    yy, xx = np.mgrid[0 : frame[0], 0 : frame[1]].astype(np.float32)
    truth = np.stack([yy * 1000 + xx, np.full(frame, 7.0, np.float32)])  # position-coded, and constant
    images = np.zeros((2, 3, *frame), np.uint8)
    sums = np.zeros((2, *frame), np.float32)
    for tiles, where in iter_tiles(images, origins, tile, batch_size=5):
        assert len(tiles) <= 5 and tiles.shape[1:] == (3, *tile)
        tile_maps = np.stack([truth[i, y : y + 64, x : x + 64] for i, y, x in where])
        stitch(sums, tile_maps, where, tile)
    stitched = sums / coverage(frame, tile, origins)
    np.testing.assert_allclose(stitched[0], truth[0], rtol=1e-6)
    np.testing.assert_allclose(stitched[1], 7.0, rtol=1e-6)  # a constant map stays constant across overlaps


def test_keep_aspect_pads_and_maps_come_back_at_the_original_size():
    assert content_rect((100, 200), (64, 64), keep_aspect=True) == (16, 0, 32, 64)
    assert content_rect((100, 200), (64, 64), keep_aspect=False) == (0, 0, 64, 64)
    placement = Placement((120, 260), (30, 10, 230, 110), (16, 0, 32, 64))
    frame_map = np.zeros((64, 64), np.float32)
    frame_map[16:48] = 2.0
    full = to_original(frame_map, placement)
    assert full.shape == (120, 260)
    assert np.all(full[10:110, 30:230] == 2.0) and full.sum() == 2.0 * 100 * 200


def test_the_largest_circle_is_found_on_a_disc_image():
    image = np.zeros((300, 400, 3), np.uint8)
    cv2.circle(image, (230, 140), 100, (200, 190, 180), -1)
    cv2.circle(image, (60, 60), 20, (200, 190, 180), -1)  # a smaller one: not the part
    cx, cy, radius = find_circle(image, CircleParams())
    assert abs(cx - 230) <= 3 and abs(cy - 140) <= 3 and abs(radius - 100) <= 4


# --- through training and inference ----------------------------------------------------------------

@pytest.fixture(scope="module")
def rect_data(tmp_path_factory) -> Path:
    return _rect_dataset(tmp_path_factory.mktemp("rect") / "parts")


def test_crop_box_maps_are_zero_outside_and_shown_as_not_inspected(rect_data, cli, tmp_path):
    out = tmp_path / "out"
    result = cli("train", "--dataset-root", rect_data, "--result-path", out, *FAST, "dataset.crop=[8,4,104,84]",
                 "dataset.image_size=[64,96]")
    assert result.exit_code == 0, result.err
    model = out / "padim" / "parts" / "model.pt"
    predictor = Predictor.load(model)
    assert predictor.input_size == (64, 96) and predictor.image_size == (64, 96)
    (p,) = predictor.predict(rect_data / "test" / "scratch" / "000.png")
    assert p.anomaly_map.shape == (HEIGHT, WIDTH) and p.inspected.shape == (HEIGHT, WIDTH)
    assert p.inspected[4:84, 8:104].all() and p.inspected.sum() == 80 * 96
    assert np.all(p.anomaly_map[~p.inspected] == 0) and not p.mask[~p.inspected].any()
    result = cli("inference", "--model-path", model, "--image-path", rect_data, "--save-path", tmp_path / "inf",
                 "--quiet", "--save-heatmap", "--no-report")
    assert result.exit_code == 0, result.err
    heatmap = cv2.imread(str(tmp_path / "inf" / "heatmaps" / "scratch" / "000.png"))
    assert heatmap.shape[:2] == (HEIGHT, WIDTH)
    outside, inside = heatmap[88:96, 108:128].reshape(-1, 3), heatmap[10:80, 20:100].reshape(-1, 3)
    hatched = np.all(outside == 120, axis=1)  # outside the crop: washed-out grey with hatching
    assert hatched.any() and not np.all(inside == 120, axis=1).any()
    assert 140 <= outside[~hatched].mean() <= 200 and np.ptp(outside[~hatched], axis=1).max() < 30


def test_circle_crop_on_disc_images(tmp_path):
    root = _rect_dataset(tmp_path / "discs", disc=True)
    model = _train(root, tmp_path / "out", overrides=("dataset.crop=circle", "dataset.circle.min_radius_frac=0.3"))
    predictor = Predictor.load(model)
    (p,) = predictor.predict(root / "test" / "scratch" / "001.png")
    assert p.error is None and p.anomaly_map.shape == (HEIGHT, WIDTH)
    area = int(p.inspected.sum())
    assert abs(area - np.pi * 38**2) < 0.1 * np.pi * 38**2  # the disc, not its box
    assert np.all(p.anomaly_map[~p.inspected] == 0)
    blank = predictor.predict(np.zeros((HEIGHT, WIDTH, 3), np.uint8))[0]  # no circle: that image only fails
    assert blank.decision == "" and "no circle found" in blank.error


def test_valid_area_mask_outside_never_changes_a_score_and_travels_with_the_model(rect_data, tmp_path):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, :88] = 255  # inspect the left part; the right 40 columns never count
    mask_path = tmp_path / "valid.png"
    write_png(mask_path, mask)
    model = _train(rect_data, tmp_path / "out", model="patchcore",
                   overrides=(f"dataset.valid_area_mask={mask_path}",))
    mask_path.unlink()  # stored inside the model file: the file is no longer needed
    predictor = Predictor.load(model)
    assert predictor.valid_area is not None and predictor.valid_area.sum() == 88 * HEIGHT
    good = cv2.cvtColor(cv2.imread(str(rect_data / "test" / "good" / "000.png")), cv2.COLOR_BGR2RGB)
    spoiled = good.copy()
    spoiled[20:80, 95:125] = (255, 0, 255)  # a large anomaly outside the valid area
    inside = good.copy()
    inside[40:60, 40:60] = (255, 0, 255)
    before, after, found = predictor.predict([good, spoiled, inside])
    assert after.raw_score == before.raw_score and np.array_equal(after.anomaly_map, before.anomaly_map)
    assert found.raw_score > before.raw_score
    assert np.all(after.anomaly_map[:, 88:] == 0) and not after.inspected[:, 88:].any()


def test_tiling_scores_do_not_depend_on_the_tile_batch(rect_data, tmp_path, cli):
    out = tmp_path / "out"
    result = cli("train", "--model", "patchcore", "--dataset-root", rect_data, "--result-path", out, *FAST,
                 "dataset.tiling.tile_size=64", "dataset.tiling.stride=[32,48]")
    assert result.exit_code == 0, result.err
    model = out / "patchcore" / "parts" / "model.pt"
    config = list(Predictor.load(model).settings.dataset.tiling.resize)
    assert config == [HEIGHT, WIDTH]  # null: the full resolution, stored with the model
    images = sorted((rect_data / "test").rglob("*.png"))
    one = Predictor.load(model, batch_size=1).predict(images)
    many = Predictor.load(model, batch_size=7).predict(images)
    for a, b in zip(one, many, strict=True):
        tol = file_tolerance(model, b.raw_score)  # tiles in batches of one and of seven: tests/float_bounds.py
        assert a.raw_score == pytest.approx(b.raw_score, rel=tol.raw_rtol)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=0, atol=tol.map_atol)
        assert a.anomaly_map.shape == (HEIGHT, WIDTH)
        assert a.raw_score == pytest.approx(float(_raw_max(Predictor.load(model), a.source)), rel=tol.raw_rtol)
    assert max(p.score for p in many[2:]) > max(p.score for p in many[:2])  # defects outscore good parts
    result = cli("inference", "--model-path", model, "--image-path", rect_data, "--save-path", tmp_path / "inf",
                 "--quiet", "--save-heatmap")
    assert result.exit_code == 0, result.err
    assert cv2.imread(str(tmp_path / "inf" / "heatmaps" / "good" / "000.png")).shape[:2] == (HEIGHT, WIDTH)
    assert (tmp_path / "inf" / "report.html").is_file()


def _raw_max(predictor: Predictor, path: str) -> float:
    """The image score of a tiled model is the maximum of its stitched raw map."""
    from hamacho.data.discovery import Sample

    (scored,) = list(predictor.score_samples([Sample(Path(path), "x", None, "unknown")]))
    return float(scored.raw_maps[0].max())


def test_tiled_non_square_model_with_a_valid_area_exports_with_the_same_answers(rect_data, tmp_path):
    pytest.importorskip("onnxruntime")
    from hamacho.export import export_model

    mask = np.full((HEIGHT, WIDTH), 255, np.uint8)
    mask[:12] = 0
    write_png(tmp_path / "valid.png", mask)
    model = _train(rect_data, tmp_path / "out", overrides=(
        "dataset.tiling.tile_size=[64,96]", "dataset.tiling.stride=[32,32]", "dataset.crop=[0,0,120,96]",
        f"dataset.valid_area_mask={tmp_path / 'valid.png'}"))
    folder = export_model(model, "onnx", log=lambda _: None).folder
    metadata = json.loads((folder / "metadata.json").read_text())
    assert metadata["input"]["shape"] == ["batch", 3, 64, 96]
    assert "valid_area_mask.png" in metadata["files"] and metadata["input"]["valid_area_mask"] == "valid_area_mask.png"
    images = sorted((rect_data / "test").rglob("*.png"))
    reference = Predictor.load(model, device="cpu").predict(images)
    exported = Predictor.load(folder).predict(images)
    for ours, theirs in zip(exported, reference, strict=True):
        assert ours.decision == theirs.decision and ours.score == pytest.approx(theirs.score, abs=1e-4)
        assert np.abs(ours.anomaly_map - theirs.anomaly_map).max() < 1e-3
        assert np.array_equal(ours.inspected, theirs.inspected) and not ours.inspected[:12].any()


def test_framing_of_an_old_style_model_is_a_plain_resize():
    framing = Framing.plain(64)
    assert framing.frame == framing.input_size == (64, 64) and not framing.map_scores


# --- bad values: one line each -------------------------------------------------------------------

def test_bad_framing_values_are_one_line_errors(rect_data, cli, tmp_path):
    wrong_size = tmp_path / "small_mask.png"
    write_png(wrong_size, np.full((50, 50), 255, np.uint8))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    cases = [
        (["dataset.crop=[0,0,200,80]"], "dataset.crop [0, 0, 200, 80] lies outside the 128x96 image"),
        (["dataset.crop=[10,10,5,40]"], "must be a box [x1, y1, x2, y2] with 0 <= x1 < x2"),
        (["dataset.crop=square"], "must be null, circle, or a box"),
        ([f"dataset.valid_area_mask={wrong_size}"], "the valid-area mask is 50x50 but the image is 128x96"),
        ([f"dataset.valid_area_mask={garbage}"], "dataset.valid_area_mask: not a readable image"),
        ([f"dataset.valid_area_mask={tmp_path / 'absent.png'}"], "dataset.valid_area_mask: file not found"),
        (["dataset.tiling.tile_size=128"], "tile_size 128x128 is larger than the image it tiles (128x96"),
        (["dataset.tiling.tile_size=64", "dataset.tiling.stride=0"], "dataset.tiling.stride' must be at least 1"),
        (["dataset.tiling.tile_size=64", "dataset.tiling.stride=80"], "must be at most the tile size"),
        (["dataset.tiling.tile_size=48"], "dataset.tiling.tile_size' must be a positive multiple of 32"),
        (["dataset.image_size=[64,100]"], "dataset.image_size' must be a positive multiple of 32"),
        (["dataset.tiling.stride=32"], "needs dataset.tiling.tile_size"),
    ]
    for overrides, message in cases:
        result = cli("train", "--dataset-root", rect_data, "--result-path", tmp_path / "out", *FAST, *overrides)
        lines = result.err.strip().splitlines()
        assert result.exit_code == 1, (overrides, result.err)
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], (overrides, result.err)
    assert not list((tmp_path / "out").rglob("model.pt"))
