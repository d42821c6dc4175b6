"""Dataset discovery, image conversion and calibration splits."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from hamacho.data.dataset import AnomalyDataset, DecodeCache, iter_batches
from hamacho.data.decoding import ImageReadError, read_image, read_mask, resize_mask
from hamacho.data.discovery import discover_dataset, discover_inference_inputs
from hamacho.data.splits import make_splits, repeated_paths
from hamacho.errors import DatasetError
from tests.conftest import make_dataset, write_png


def test_layout_discovery_labels_masks_and_unknown(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=4, n_good=2, n_defect=3)
    write_png(root / "test" / "unknown" / "x.png", np.zeros((96, 96, 3), np.uint8))
    (root / "train" / "good" / "notes.txt").write_text("not an image")
    layout = discover_dataset(root)
    assert len(layout.train) == 4 and all(s.label == 0 for s in layout.train)
    kinds = {s.name: (s.label, s.defect_type, s.mask_path is not None) for s in layout.test}
    assert kinds["good/000"] == (0, "good", False)
    assert kinds["scratch/002"] == (1, "scratch", True)
    assert kinds["unknown/x"] == (None, "unknown", False)
    assert layout.counts() == {"train": {"good": 4}, "test": {"good": 2, "scratch": 3, "unknown": 1}}
    assert len(layout.labelled_test) == 5
    assert layout.warnings == []


def test_masks_named_like_the_image_also_count(tmp_path):
    root = make_dataset(tmp_path / "d", n_defect=1, masks=False)
    write_png(root / "ground_truth" / "scratch" / "000.png", np.zeros((96, 96), np.uint8))
    layout = discover_dataset(root)
    assert layout.test[-1].mask_path.name == "000.png"


def test_missing_and_orphan_masks_are_reported(tmp_path):
    root = make_dataset(tmp_path / "d", n_defect=3)
    (root / "ground_truth" / "scratch" / "001_mask.png").unlink()
    write_png(root / "ground_truth" / "scratch" / "999_mask.png", np.zeros((96, 96), np.uint8))
    layout = discover_dataset(root)
    text = " | ".join(layout.warnings)
    assert "1 image(s) in test/scratch have no mask" in text
    assert "1 mask(s) without an image were ignored: ground_truth/scratch/999_mask.png" in text


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "dataset root not found"),
        (lambda r: r.write_text("x"), "dataset root must be a folder, but is a file"),
        (lambda r: r.mkdir(), "dataset root is empty"),
        (lambda r: (r / "test").mkdir(parents=True), "no train/good folder"),
        (lambda r: (r / "train" / "good").mkdir(parents=True), "no images in"),
        (lambda r: ((r / "train").mkdir(parents=True), (r / "train" / "good").write_text("")), "must be a folder"),
    ],
)
def test_layout_errors(tmp_path, setup, message):
    root = tmp_path / "root"
    setup(root)
    with pytest.raises(DatasetError, match=message):
        discover_dataset(root)


def test_inference_inputs_image_folder_and_dataset_root(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=2, n_good=1, n_defect=2)
    samples, _ = discover_inference_inputs(root)
    assert [s.label for s in samples] == [0, 1, 1]
    folder = tmp_path / "loose"
    write_png(folder / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_png(folder / "sub" / "b.jpg", np.zeros((8, 8, 3), np.uint8))
    samples, _ = discover_inference_inputs(folder)
    assert [s.name for s in samples] == ["a", "sub/b"] and all(s.label is None for s in samples)
    single, _ = discover_inference_inputs(folder / "a.png")
    assert single[0].name == "a"
    with pytest.raises(DatasetError, match="not an image file"):
        discover_inference_inputs(_touch(tmp_path / "x.doc"))  # .txt and .csv are file lists
    with pytest.raises(DatasetError, match="no images found"):
        discover_inference_inputs(_mkdir(tmp_path / "empty"))


def _touch(path: Path) -> Path:
    path.write_text("x")
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_image_conversions(tmp_path):
    gray = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    rgba[..., 3] = 10
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    deep = np.full((8, 8), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    g = read_image(tmp_path / "g.png")
    assert g.shape == (8, 8, 3) and (g[..., 0] == gray).all() and (g[..., 2] == gray).all()
    a = read_image(tmp_path / "a.png")
    assert a.shape == (8, 8, 3) and a[0, 0].tolist() == [200, 0, 0]
    d = read_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and d.max() == 255


def test_unreadable_images_are_refused_with_the_reason(tmp_path):
    good = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "ok.png"), good)
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageReadError, match="empty file"):
        read_image(tmp_path / "zero.png")
    for name in ("cut.png", "text.jpg"):
        with pytest.raises(ImageReadError, match="not a readable image"):
            read_image(tmp_path / name)


def test_masks_resize_with_nearest_neighbour_and_any_channel(tmp_path):
    mask = np.zeros((10, 10, 3), np.uint8)
    mask[2:5, 2:5, 1] = 1
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    m = read_mask(tmp_path / "m.png")
    assert m.dtype == bool and m.sum() == 9
    small = resize_mask(m, 5)
    assert set(np.unique(small.astype(np.uint8))) <= {0, 1}


def test_dataset_flags_bad_image_and_mismatched_mask(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=2, n_good=1, n_defect=2)
    (root / "test" / "scratch" / "000.png").write_bytes(b"")
    write_png(root / "ground_truth" / "scratch" / "001_mask.png", np.zeros((10, 10), np.uint8))
    layout = discover_dataset(root)
    ds = AnomalyDataset(layout.test, 64)
    items = {layout.test[i].name: ds[i] for i in range(len(ds))}
    assert not items["scratch/000"].valid and "empty file" in items["scratch/000"].error
    assert items["scratch/001"].valid and not items["scratch/001"].has_mask
    assert "mask ignored" in items["scratch/001"].error and "10x10" in items["scratch/001"].error
    assert items["good/000"].has_mask and items["good/000"].image.shape == (3, 64, 64)
    assert items["good/000"].original_size == (96, 96) and items["scratch/000"].original_size == (0, 0)


def test_splits_hold_out_training_images_when_test_has_no_good(tmp_path):
    root = make_dataset(tmp_path / "d", n_train=10, n_good=0, n_defect=2)
    splits = make_splits(discover_dataset(root), 0.2, seed=0)
    assert len(splits.train) == 8 and len(splits.calibration) == 4
    assert not {s.path for s in splits.train} & {s.path for s in splits.calibration}
    assert splits.test == [s for s in discover_dataset(root).test]
    assert make_splits(discover_dataset(root), 0.2, seed=0).train == splits.train  # seeded
    only_train = make_dataset(tmp_path / "e", n_train=10, n_good=0, n_defect=0)
    splits = make_splits(discover_dataset(only_train), 0.2, seed=0)
    assert splits.test == splits.calibration and len(splits.test) == 2


def test_batched_reading_on_threads_matches_one_by_one(tmp_path, capfd):

    root = make_dataset(tmp_path / "d", n_train=2, n_good=3, n_defect=3)
    (root / "test" / "scratch" / "001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 40)
    layout = discover_dataset(root)
    ds = AnomalyDataset(layout.test, 64)
    order = [5, 0, 3, 1, 4, 2]
    batch = ds.__getitems__(order)
    assert [item.index for item in batch] == order
    for item, index in zip(batch, order, strict=True):
        alone = ds[index]
        assert item.valid == alone.valid and item.error == alone.error
        assert np.array_equal(item.image, alone.image) and np.array_equal(item.mask, alone.mask)
    assert sum(not item.valid for item in batch) == 1
    # The codec's complaints about the broken file stay silent, and stderr works afterwards.
    import sys

    print("still here", file=sys.stderr)
    assert capfd.readouterr().err == "still here\n"


def test_test_pass_reuses_the_images_decoded_for_calibration(tmp_path, monkeypatch):

    import hamacho.data.dataset as dataset_module

    root = make_dataset(tmp_path / "d", n_train=4, n_good=3, n_defect=3)
    splits = make_splits(discover_dataset(root), 0.1, seed=0)
    reads: list[Path] = []
    real_read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real_read(path))
    cache = DecodeCache(repeated_paths(splits))
    calibration = list(iter_batches(splits.calibration, 64, 4, cache=cache))
    test = list(iter_batches(splits.test, 64, 4, cache=cache))
    assert sorted(reads) == sorted(s.path for s in splits.test)  # each test image decoded once, not twice
    for a, b in zip(calibration, test, strict=True):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.indices, b.indices) and a.errors == b.errors and a.original_sizes == b.original_sizes
    assert cache._items == {}  # handed over once, then dropped
    # Without room, every pass decodes again, with the same result.
    reads.clear()
    cache = DecodeCache(repeated_paths(splits), budget_bytes=0)
    again = list(iter_batches(splits.calibration, 64, 4, cache=cache)) + list(iter_batches(splits.test, 64, 4, cache=cache))
    assert len(reads) == 2 * len(splits.test)
    assert all(np.array_equal(x.images, y.images) for x, y in zip(again[len(calibration):], test, strict=True))


def test_batches_are_read_on_threads_without_torch(tmp_path):
    """Decoding and resizing never touch torch: torch work on the decoding threads would give them OpenMP
    teams and slow every later torch call, and exported models run where torch is not installed."""
    import subprocess
    import sys

    root = make_dataset(tmp_path / "d", n_train=6, n_good=0, n_defect=0, size=80)
    code = (
        "import sys, numpy as np\n"
        "from hamacho.data.dataset import AnomalyDataset, iter_batches\n"
        "from hamacho.data.discovery import discover_dataset\n"
        "from hamacho.data.decoding import read_image, resize_image, to_chw\n"
        f"samples = discover_dataset({str(root)!r}).train\n"
        "(batch,) = list(iter_batches(samples, 64, 8))\n"
        "assert batch.images.shape == (6, 3, 64, 64) and batch.images.dtype == np.uint8\n"
        "assert list(batch.indices) == list(range(6))\n"
        "for row, sample in enumerate(samples):\n"
        "    assert np.array_equal(batch.images[row], to_chw(resize_image(read_image(sample.path), 64)))\n"
        "    assert np.array_equal(batch.images[row], AnomalyDataset(samples, 64)[row].image)\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_numpy_resize_is_torchs_kernel_bit_for_bit():
    """Exported models resize without torch: the numpy arithmetic must give torch's pixels exactly."""
    import torch
    import torch.nn.functional as F

    from hamacho.data.resize import resize_uint8

    rng = np.random.default_rng(0)
    cases = [(900, 900, 256), (70, 130, 64), (1000, 333, 224), (50, 50, 256), (2048, 2448, 320), (17, 9, 32)]
    cases += [(int(h), int(w), int(rng.choice([32, 64, 128, 224, 256, 320, 512]))) for h, w in rng.integers(8, 1600, (150, 2))]
    for height, width, size in cases:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if height % 2:
            image = cv2.GaussianBlur(image, (0, 0), 2)  # smooth images too, not only noise
        theirs = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                               antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()
        assert np.array_equal(resize_uint8(image, size), theirs), (height, width, size)


def test_unreadable_test_images_are_not_decoded_twice(tmp_path, monkeypatch):
    import hamacho.data.dataset as dataset_module

    root = make_dataset(tmp_path / "d", n_train=4, n_good=3, n_defect=3)
    splits = make_splits(discover_dataset(root), 0.1, seed=0)
    broken = splits.test[0].path
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # a PNG signature, then nothing decodable
    reads: list[Path] = []
    real_read = dataset_module.read_image
    monkeypatch.setattr(dataset_module, "read_image", lambda path: reads.append(path) or real_read(path))
    cache = DecodeCache(repeated_paths(splits))
    calibration = list(iter_batches(splits.calibration, 64, 4, cache=cache))
    test = list(iter_batches(splits.test, 64, 4, cache=cache))
    assert reads.count(broken) == 1
    for passed in (calibration, test):
        valid = [v for batch in passed for v in batch.valid.tolist()]
        assert valid.count(False) == 1


def test_synthetic_defects_are_seeded_small_and_of_each_kind():
    from hamacho.data.synthetic import KINDS, synthetic_defect

    rng = np.random.default_rng(0)
    image = (rng.random((120, 160, 3)) * 60 + 100).astype(np.uint8)
    for kind in KINDS:
        first, again = synthetic_defect(image, kind, 5), synthetic_defect(image, kind, 5)
        assert np.array_equal(first, again) and first.shape == image.shape and first.dtype == np.uint8
        changed = (np.abs(first.astype(int) - image).max(axis=2) > 5).mean()  # faint ones too
        assert 0.0005 < changed < 0.04, (kind, changed)  # a small defect, not a new image
        assert not np.array_equal(synthetic_defect(image, kind, 6), first)  # another seed, another defect
    with pytest.raises(ValueError, match="synthetic defect kind 'dent' is not one of cutpaste, scratch, blotch"):
        synthetic_defect(image, "dent", 0)
    with pytest.raises(ValueError, match=r"needs an \(H, W, 3\) uint8 image of 16 px or more"):
        synthetic_defect(image[:8], "scratch", 0)
