"""Which layout the training data is in (``dataset.format``), and reading it.

``mvtec`` (:mod:`hamacho.data.discovery`), ``folder`` (:mod:`hamacho.data.folder_layout`) and
``filelist`` (:mod:`hamacho.data.file_list`). With ``auto``, the options decide (``--good-dir`` ...:
folder; ``--file-list``, ``--good-list`` ...: filelist), else the dataset root's contents: ``train/``
means MVTec, ``good/`` a folder layout, a single ``*.csv`` a file list. A root that fits more than one is
refused with one line naming them.
"""

from __future__ import annotations

from pathlib import Path

from hamacho.data.discovery import DatasetLayout, discover_dataset, require_folder
from hamacho.data.file_list import discover_csv_list, discover_text_lists
from hamacho.data.folder_layout import discover_folder
from hamacho.errors import ConfigError, DatasetError
from hamacho.settings import DatasetSettings

FOLDER_KEYS = ("good_dir", "bad_dir", "mask_dir")
LIST_KEYS = ("file_list", "good_list", "bad_list", "mask_list")
OPTION = {"good_dir": "--good-dir", "bad_dir": "--bad-dir", "mask_dir": "--mask-dir", "file_list": "--file-list",
          "good_list": "--good-list", "bad_list": "--bad-list", "mask_list": "--mask-list", "root": "--dataset-root"}


def _given(dataset: DatasetSettings, keys: tuple[str, ...]) -> list[str]:
    return [OPTION[key] for key in keys if getattr(dataset, key)]


def _root_layouts(root: Path) -> list[str]:
    """The layouts a dataset root looks like."""
    found = []
    if (root / "train").exists():
        found.append("mvtec")
    if any(p.is_dir() and p.name.lower() == "good" for p in root.iterdir()):
        found.append("folder")
    if len(list(root.glob("*.csv"))) == 1:
        found.append("filelist")
    return found


def detect_format(dataset: DatasetSettings) -> str:
    """``dataset.format``, or the one the options and the root's contents point to.

    Raises:
        ConfigError: No data given, or options of two layouts.
        DatasetError: A root that fits several layouts (or is missing, a file, or empty).
    """
    folder, lists = _given(dataset, FOLDER_KEYS), _given(dataset, LIST_KEYS)
    conflicts = {"mvtec": folder + lists, "folder": lists, "filelist": folder}
    if dataset.format != "auto":
        if conflicts[dataset.format]:
            raise ConfigError(f"--data-format {dataset.format} does not take {', '.join(conflicts[dataset.format])}")
        return dataset.format
    if folder and lists:
        raise ConfigError(f"{', '.join(folder)} (folder layout) and {', '.join(lists)} (file lists) contradict "
                          "each other: give one layout (see docs/dataset.md)")
    if folder:
        return "folder"
    if lists:
        return "filelist"
    if not dataset.root:
        raise ConfigError("no dataset given: pass --dataset-root DIR, --good-dir DIR or --file-list CSV "
                          "(see docs/dataset.md)")
    root = require_folder(Path(dataset.root), "dataset root")
    if not any(root.iterdir()):
        raise DatasetError(f"dataset root is empty: {root}")
    layouts = _root_layouts(root)
    if len(layouts) > 1:
        raise DatasetError(f"cannot tell the layout of {root}: it looks like {' and like '.join(layouts)}; pass "
                           "--data-format mvtec|folder|filelist")
    return layouts[0] if layouts else "mvtec"  # MVTec's errors name what is missing


def discover_training_data(dataset: DatasetSettings, seed: int) -> DatasetLayout:
    """The training data in whichever layout it is (see the module docstring).

    Args:
        dataset: The ``dataset`` settings.
        seed: Seed of the good images held out (folder and filelist layouts).
    """
    data_format = detect_format(dataset)
    root = Path(dataset.root) if dataset.root else None
    if data_format == "mvtec":
        if root is None:
            raise ConfigError("--data-format mvtec needs --dataset-root DIR")
        layout = discover_dataset(root)
        layout.name = dataset.name
        return layout
    if data_format == "folder":
        if not dataset.good_dir and root is None:
            raise ConfigError("the folder layout needs --good-dir DIR (or --dataset-root DIR holding good/)")
        good = dataset.good_dir or _first_folder(root, ("good",)) or root / "good"
        bad = dataset.bad_dir or _first_folder(root, ("bad", "ng", "defective"))
        masks = dataset.mask_dir or _first_folder(root, ("mask", "masks", "ground_truth"))
        return discover_folder(good, bad, masks, dataset.mask_suffix, dataset.split, seed, dataset.name)
    if dataset.file_list or (root is not None and not dataset.good_list):
        csv_path = Path(dataset.file_list) if dataset.file_list else _single_csv(root)
        return discover_csv_list(csv_path, dataset.split, seed, dataset.name)
    if not dataset.good_list:
        raise ConfigError("file lists need --good-list FILE (or --file-list CSV)")
    return discover_text_lists(dataset.good_list, dataset.bad_list, dataset.mask_list, dataset.mask_suffix,
                               dataset.split, seed, dataset.name)


def _first_folder(root: Path | None, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` (any letter case) that is a folder under ``root`` (only when the root was given)."""
    if root is None:
        return None
    folders = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
    return next((folders[name] for name in names if name in folders), None)


def _single_csv(root: Path) -> Path:
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) != 1:
        found = ", ".join(p.name for p in csvs) or "none"
        raise DatasetError(f"--data-format filelist with --dataset-root {root} needs exactly one CSV file there "
                           f"(found: {found}); or pass --file-list CSV")
    return csvs[0]
