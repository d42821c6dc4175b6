"""The file-list layout: a CSV (or text files) naming the images, their labels, masks and split.

CSV (``--file-list``), UTF-8, with a header: ``path``, ``label`` (good | bad; ok/ng and normal/anomalous
are read too), optional ``mask`` and optional ``split`` (train | test). Text lists (``--good-list``,
``--bad-list``, ``--mask-list``): one path a line; blank lines and lines starting with ``#`` are skipped;
masks belong to defective images by name, as in the folder layout. Relative paths are relative to the
list's own folder and must stay inside it; absolute paths are taken as they are. Good images without a
split are held out (seeded share ``dataset.split``) for calibration and test like in the folder layout;
defective images are always tested.
"""

from __future__ import annotations

import csv
from pathlib import Path

from hamacho.data.discovery import GOOD, UNKNOWN, DatasetLayout, Sample, unique_names
from hamacho.data.folder_layout import BAD, hold_out, match_masks, relative_text
from hamacho.errors import DatasetError, summarize

LABELS = {"good": 0, "ok": 0, "normal": 0, "bad": 1, "ng": 1, "defective": 1, "anomalous": 1}


def resolve_entry(base: Path, text: str, where: str) -> Path:
    """A list entry as a path: relative ones inside ``base`` (no escaping it with ``..``), absolute as given."""
    path = Path(text.strip())
    if path.is_absolute():
        return path
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base.resolve()):
        raise DatasetError(f"{where}: {text.strip()!r} points outside the list's folder {base}; "
                           "use a path inside it or an absolute path")
    return base / path


def _name(path: Path, base: Path) -> str:
    """Output name of an image: its path relative to the list's folder (or its absolute path), no extension."""
    try:
        return path.relative_to(base).with_suffix("").as_posix()
    except ValueError:
        return path.with_suffix("").as_posix().lstrip("/")


def _check_exist(paths: list[Path], source: Path) -> None:
    """One line naming the listed files that do not exist (relative to the list's folder where they are)."""
    missing = [relative_text(p, source.parent) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} file(s) listed in {source} not found: {summarize(missing, 5, ', ')}")



def read_csv_list(csv_path: Path) -> list[tuple[Path, int, Path | None, str]]:
    """Rows of a CSV file list: ``(image, label, mask or None, split or "")``, paths resolved and checked."""
    if not csv_path.is_file():
        raise DatasetError(f"file list not found: {csv_path}")
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = {f.strip().lower(): f for f in reader.fieldnames or []}
            if not {"path", "label"} <= fields.keys():
                raise DatasetError(f"file list {csv_path} needs a header with the columns path and label "
                                   "(optional: mask, split)")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read file list {csv_path}: {exc}") from exc
    out = []
    for number, row in enumerate(rows, start=2):
        where = f"{csv_path.name}, line {number}"
        text = (row.get(fields["path"]) or "").strip()
        if not text:
            continue
        label_text = (row.get(fields["label"]) or "").strip().lower()
        if label_text not in LABELS:
            raise DatasetError(f"{where}: label {label_text!r} is not good or bad")
        split = (row.get(fields["split"]) or "").strip().lower() if "split" in fields else ""
        if split not in ("", "train", "test"):
            raise DatasetError(f"{where}: split {split!r} is not train or test")
        if split == "train" and LABELS[label_text]:
            raise DatasetError(f"{where}: a defective image cannot be in the train split (the model learns good ones)")
        mask_text = (row.get(fields["mask"]) or "").strip() if "mask" in fields else ""
        mask = resolve_entry(base, mask_text, where) if mask_text else None
        out.append((resolve_entry(base, text, where), LABELS[label_text], mask, split))
    if not out:
        raise DatasetError(f"file list {csv_path} lists no images")
    _check_exist([r[0] for r in out] + [r[2] for r in out if r[2] is not None], csv_path)
    return out


def read_text_list(list_path: Path) -> list[Path]:
    """Paths of a text list (one a line), resolved and checked."""
    if not list_path.is_file():
        raise DatasetError(f"file list not found: {list_path}")
    try:
        lines = list_path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read file list {list_path}: {exc}") from exc
    paths = [resolve_entry(list_path.parent, line, f"{list_path.name}, line {i}")
             for i, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]
    _check_exist(paths, list_path)
    return paths


def discover_csv_list(csv_path: str | Path, split: float, seed: int, name: str | None = None) -> DatasetLayout:
    """Read a CSV file list (see the module docstring)."""
    csv_path = Path(csv_path)
    base = csv_path.parent
    train, held_back, test, free = [], [], [], []
    rows = read_csv_list(csv_path)
    samples = unique_names([Sample(path, f"{GOOD if label == 0 else BAD}/{_name(path, base)}", label,
                                   GOOD if label == 0 else BAD, mask if label else None)
                            for path, label, mask, _ in rows])
    for sample, (_, label, _, row_split) in zip(samples, rows):
        if label:
            test.append(sample)
        elif row_split == "train":
            train.append(sample)
        elif row_split == "test":
            held_back.append(sample)
        else:
            free.append(sample)
    if free:
        if train or held_back:  # some rows name their split: the others follow the same ratio
            fitted, held = hold_out(free, split, seed) if len(free) > 1 else (free, [])
        else:
            fitted, held = hold_out(free, split, seed)
        train, held_back = train + fitted, held_back + held
    if not train:
        raise DatasetError(f"file list {csv_path} leaves no good image to fit (every good row is in the test split)")
    return DatasetLayout(root=base, train=train, test=held_back + test, name=name or csv_path.stem,
                         data_format="filelist")


def discover_text_lists(good_list: str | Path, bad_list: str | Path | None, mask_list: str | Path | None,
                        mask_suffix: str, split: float, seed: int, name: str | None = None) -> DatasetLayout:
    """Read ``--good-list``/``--bad-list``/``--mask-list`` text files (see the module docstring)."""
    good_path = Path(good_list)
    base = good_path.parent
    goods = unique_names([Sample(p, f"{GOOD}/{_name(p, base)}", 0, GOOD) for p in read_text_list(good_path)])
    if not goods:
        raise DatasetError(f"file list {good_path} lists no images")
    fitted, held = hold_out(goods, split, seed)
    bads: list[Sample] = []
    warnings: list[str] = []
    if bad_list:
        bad_path = Path(bad_list)
        bads = [Sample(p, f"{BAD}/{_name(p, bad_path.parent)}", 1, BAD) for p in read_text_list(bad_path)]
    if mask_list:  # text lists have no folders to mirror: masks match by name, wherever they are
        mask_path = Path(mask_list)
        bads, warnings = match_masks(bads, read_text_list(mask_path), mask_path.parent, None, mask_suffix)
    return DatasetLayout(root=base, train=fitted, test=unique_names(held + bads), warnings=warnings,
                         name=name or good_path.stem, data_format="filelist")


def discover_listed_images(list_path: str | Path) -> list[Sample]:
    """The images a file list names, for ``hamacho inference``: every row of a CSV list (``path``, ``label``,
    optional ``mask``; the split is ignored) with its label, or every line of a text list, label unknown.

    Args:
        list_path: A ``.csv`` file list or a ``.txt`` list of paths (see the module docstring).

    Returns:
        The samples in the list's order, named by their path relative to the list's folder.
    """
    list_path = Path(list_path)
    base = list_path.parent
    if list_path.suffix.lower() == ".csv":
        rows = read_csv_list(list_path)
        return unique_names([Sample(path, _name(path, base), label, BAD if label else GOOD,
                                    mask if label else None) for path, label, mask, _ in rows])
    paths = read_text_list(list_path)
    if not paths:
        raise DatasetError(f"file list {list_path} lists no images")
    return unique_names([Sample(p, _name(p, base), None, UNKNOWN) for p in paths])
