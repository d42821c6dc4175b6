"""Find images, labels and masks: MVTec AD dataset roots, plain folders and single images.

Layout of a dataset root (one category)::

    train/good/*.png                      required: defect-free training images
    test/good/*.png                       optional: defect-free test images (label 0)
    test/<defect>/*.png                   optional: defective test images (label 1, type <defect>)
    test/unknown/*.png                    optional: scored and visualised, left out of metrics
    ground_truth/<defect>/<name>_mask.png optional: binary masks (any non-zero pixel is defective)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from hamacho.errors import DatasetError, summarize

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LIST_EXTENSIONS = (".csv", ".txt")  # file lists (hamacho.data.file_list)
GOOD = "good"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Sample:
    """One image to score.

    Attributes:
        path: Image file.
        name: Relative name used for output files, e.g. ``broken_large/000``.
        label: 0 good, 1 defective, None unknown.
        defect_type: ``good``, the defect folder name, or ``unknown``.
        mask_path: Ground-truth mask, if any.
    """

    path: Path
    name: str
    label: int | None
    defect_type: str
    mask_path: Path | None = None


@dataclass
class DatasetLayout:
    """What was found under a dataset root."""

    root: Path
    train: list[Sample]
    test: list[Sample]
    warnings: list[str] = field(default_factory=list)
    name: str | None = None
    data_format: str = "mvtec"

    @property
    def category(self) -> str:
        """Name of the results folder: ``name``, else the root folder's name."""
        return self.name or self.root.resolve().name

    @property
    def labelled_test(self) -> list[Sample]:
        """Test samples with a known label."""
        return [s for s in self.test if s.label is not None]

    def counts(self) -> dict[str, dict[str, int]]:
        """Number of images per split and type, e.g. ``{"test": {"good": 20, "broken_large": 20}}``."""
        out: dict[str, dict[str, int]] = {"train": {GOOD: len(self.train)}, "test": {}}
        for sample in self.test:
            out["test"][sample.defect_type] = out["test"].get(sample.defect_type, 0) + 1
        return out


def is_image_file(path: Path) -> bool:
    """True for a regular file with a supported image extension (hidden files excluded)."""
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files in a folder (and its subfolders, hidden ones excepted, when ``recursive``)."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern)
                  if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def unique_names(samples: list[Sample]) -> list[Sample]:
    """Samples whose names collide (``a.png`` and ``a.jpg`` in one folder) get their extension appended."""
    seen: dict[str, int] = {}
    for sample in samples:
        seen[sample.name] = seen.get(sample.name, 0) + 1
    return [replace(s, name=f"{s.name}{s.path.suffix.lower()}") if seen[s.name] > 1 else s for s in samples]


def require_folder(path: Path, what: str) -> Path:
    """The folder, or a one-line error saying what is wrong with it (``what`` names it)."""
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}")
    if not path.is_dir():
        raise DatasetError(f"{what} must be a folder, but is a file: {path}")
    return path


def discover_dataset(root: str | Path) -> DatasetLayout:
    """Read an MVTec-AD-style category folder.

    Args:
        root: The category folder.

    Returns:
        Training and test samples with labels and masks, plus warnings about ignored files.

    Raises:
        DatasetError: When the folder or ``train/good`` is missing or holds no images.
    """
    root = Path(root)
    require_folder(root, "dataset root")
    train_dir = root / "train" / GOOD
    if not any(root.iterdir()):
        raise DatasetError(f"dataset root is empty: {root}")
    if not (root / "train").exists():
        raise DatasetError(f"no train/good folder in dataset root {root} (expected the MVTec AD layout, a folder "
                           "layout with good/, or one CSV file list; see docs/dataset.md)")
    require_folder(train_dir, "train/good folder")
    train_paths = list_images(train_dir)
    if not train_paths:
        raise DatasetError(f"no images in {train_dir} (supported: {' '.join(IMAGE_EXTENSIONS)})")
    train = [Sample(p, f"train/{p.stem}", 0, GOOD) for p in train_paths]

    test, warnings = _discover_test(root)
    return DatasetLayout(root=root, train=train, test=test, warnings=warnings)


def _find_masks(gt_dir: Path) -> dict[tuple[str, str], Path]:
    """Map (defect type, image stem) to a mask file; ``<stem>_mask.*`` and ``<stem>.*`` both count."""
    masks: dict[tuple[str, str], Path] = {}
    if not gt_dir.is_dir():
        return masks
    for type_dir in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
        for path in list_images(type_dir):
            stem = path.stem.removesuffix("_mask")
            masks.setdefault((type_dir.name, stem), path)
    return masks


def discover_inference_inputs(path: str | Path) -> tuple[list[Sample], Path]:
    """Samples for ``hamacho inference``: a single image, a folder (recursive), a dataset root or a file list.

    A dataset root contributes its ``test/`` images with labels and masks; any other folder gives
    every image below it with an unknown label; a ``.csv`` or ``.txt`` file list the images it names
    (:func:`hamacho.data.file_list.discover_listed_images`).

    Args:
        path: Image file, folder, dataset root or file list.

    Returns:
        The samples and the folder their names are relative to.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"image path not found: {path}")
    if path.is_file():
        if path.suffix.lower() in LIST_EXTENSIONS:
            from hamacho.data.file_list import discover_listed_images  # it builds on this module

            return discover_listed_images(path), path.parent
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(f"not an image file (supported: {' '.join(IMAGE_EXTENSIONS)}): {path}")
        return [Sample(path, path.stem, None, UNKNOWN)], path.parent
    if (path / "test").is_dir():
        test, _ = _discover_test(path)
        if not test:
            raise DatasetError(f"no images under {path / 'test'}")
        return test, path
    images = list_images(path, recursive=True)
    if not images:
        raise DatasetError(f"no images found under {path} (supported: {' '.join(IMAGE_EXTENSIONS)})")
    samples = [Sample(p, str(p.relative_to(path).with_suffix("")), None, UNKNOWN) for p in images]
    return samples, path


def _discover_test(root: Path) -> tuple[list[Sample], list[str]]:
    """Test samples under ``root/test`` with labels and masks, plus warnings about unmatched files."""
    warnings: list[str] = []
    test: list[Sample] = []
    test_dir = root / "test"
    if not test_dir.exists():
        return test, warnings
    require_folder(test_dir, "test folder")
    masks = _find_masks(root / "ground_truth")
    used_masks: set[Path] = set()
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        kind = type_dir.name
        label = 0 if kind == GOOD else None if kind == UNKNOWN else 1
        missing = 0
        for path in list_images(type_dir):
            mask = masks.get((kind, path.stem)) if label == 1 else None
            if mask is not None:
                used_masks.add(mask)
            elif label == 1 and masks:
                missing += 1
            test.append(Sample(path, f"{kind}/{path.stem}", label, kind, mask))
        if missing:
            warnings.append(f"{missing} image(s) in test/{kind} have no mask; they count for image metrics only")
    unused = sorted(set(masks.values()) - used_masks)
    if unused:
        listed = summarize([str(p.relative_to(root)) for p in unused], limit=5, separator=", ")
        warnings.append(f"{len(unused)} mask(s) without an image were ignored: {listed}")
    return test, warnings
