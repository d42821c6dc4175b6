"""The folder layout: good images in one folder, defective ones (optional) in another, masks in a third.

    good/                 good images, in subfolders too (e.g. per line or per day)
    bad/                  defective images: flat, or one subfolder per defect type (optional)
    mask/                 masks of the defective images, flat or mirroring bad/ (optional)

A seeded share of the good images (``dataset.split``) is held out of fitting; it and the defective
images calibrate the threshold and are tested. A mask belongs to the defective image with its name
(``<stem><dataset.mask_suffix>.<any image extension>``), in the same subfolder where masks mirror the
defect folders, else anywhere under the mask folder when that name is unique.
"""

from __future__ import annotations

import random
from pathlib import Path

from hamacho.data.discovery import (
    GOOD,
    IMAGE_EXTENSIONS,
    DatasetLayout,
    Sample,
    list_images,
    require_folder,
    unique_names,
)
from hamacho.errors import DatasetError, summarize

BAD = "bad"


def hold_out(goods: list[Sample], share: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """A seeded ``share`` of the good samples (at least one, never all): ``(fitted, held out)``, in order."""
    if len(goods) < 2:
        raise DatasetError(f"{len(goods)} good image(s): at least 2 are needed (one to fit, one to calibrate)")
    count = min(max(1, round(share * len(goods))), len(goods) - 1)
    order = list(range(len(goods)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [s for i, s in enumerate(goods) if i not in held], [s for i, s in enumerate(goods) if i in held]


def mask_stem(stem: str, suffix: str) -> str | None:
    """The image stem a mask belongs to, or None when its name does not end with ``suffix``."""
    if not suffix:
        return stem
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else None


def relative_text(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` (posix), or as it is when outside it."""
    try:
        return path.relative_to(root).as_posix() if root is not None else path.as_posix()
    except ValueError:
        return path.as_posix()


def match_masks(bads: list[Sample], masks: list[Path], mask_root: Path, bad_root: Path | None,
                suffix: str) -> tuple[list[Sample], list[str]]:
    """Attach masks to defective samples by name; warnings for images without masks and masks without images.

    A mask in the same place relative to ``mask_root`` as its image relative to ``bad_root`` wins; else a
    mask of that name anywhere, when there is only one.
    """
    by_place: dict[tuple[str, str], Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for mask in masks:
        stem = mask_stem(mask.stem, suffix)
        if stem is None:
            continue
        by_place.setdefault((relative_text(mask.parent, mask_root), stem), mask)
        by_stem.setdefault(stem, []).append(mask)
    used: set[Path] = set()
    matched, missing = [], 0
    for sample in bads:
        place = relative_text(sample.path.parent, bad_root) if bad_root is not None else None
        mask = by_place.get((place, sample.path.stem))
        if mask is None and len(by_stem.get(sample.path.stem, [])) == 1:
            mask = by_stem[sample.path.stem][0]
        if mask is None:
            missing += 1
        else:
            used.add(mask)
        matched.append(Sample(sample.path, sample.name, sample.label, sample.defect_type, mask))
    warnings = []
    if missing:
        warnings.append(f"{missing} defective image(s) have no mask; they count for image metrics only")
    unused = [relative_text(m, mask_root) for m in masks if m not in used]
    if unused:
        warnings.append(f"{len(unused)} mask(s) without an image were ignored: {summarize(unused, 5, ', ')}")
    return matched, warnings


def discover_folder(good_dir: str | Path, bad_dir: str | Path | None, mask_dir: str | Path | None,
                    mask_suffix: str, split: float, seed: int, name: str | None = None) -> DatasetLayout:
    """Read a folder layout (see the module docstring).

    Args:
        good_dir: Good images (recursive).
        bad_dir: Defective images (recursive; a first-level subfolder names the defect type), or None.
        mask_dir: Masks, or None.
        mask_suffix: End of a mask's stem (``_mask``, or "" for masks named like their images).
        split: Share of good images held out for calibration and test.
        seed: Seed of the hold-out.
        name: Results folder name (default: the good folder's parent's name).

    Raises:
        DatasetError: Missing folders, no good images, or fewer than two.
    """
    good_root = require_folder(Path(good_dir), "good image folder")
    good_paths = list_images(good_root, recursive=True)
    if not good_paths:
        raise DatasetError(f"no images in {good_root} (supported: {' '.join(IMAGE_EXTENSIONS)})")
    goods = [Sample(p, f"{GOOD}/{p.relative_to(good_root).with_suffix('').as_posix()}", 0, GOOD) for p in good_paths]
    fitted, held = hold_out(unique_names(goods), split, seed)
    bads: list[Sample] = []
    warnings: list[str] = []
    bad_root = require_folder(Path(bad_dir), "defective image folder") if bad_dir else None
    if bad_root is not None:
        for path in list_images(bad_root, recursive=True):
            relative = path.relative_to(bad_root)
            kind = relative.parts[0] if len(relative.parts) > 1 else BAD
            rest = Path(*relative.parts[1:]) if len(relative.parts) > 1 else relative
            bads.append(Sample(path, f"{kind}/{rest.with_suffix('').as_posix()}", 1, kind))
        if not bads:
            warnings.append(f"no images in the defective image folder {bad_root}")
    if mask_dir:
        mask_root = require_folder(Path(mask_dir), "mask folder")
        bads, found = match_masks(bads, list_images(mask_root, recursive=True), mask_root, bad_root, mask_suffix)
        warnings += found
    layout_name = name or good_root.resolve().parent.name
    return DatasetLayout(root=good_root.parent, train=fitted, test=unique_names(held + bads), warnings=warnings,
                         name=layout_name, data_format="folder")
