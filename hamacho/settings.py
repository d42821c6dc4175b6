"""Typed settings: one dataclass per configuration section, the one home of every configuration key.

Each field (made with :func:`~hamacho.setting_fields.setting`) holds the key's type, default, bounds and
choices (what :func:`validate` enforces; OmegaConf enforces the types, :mod:`hamacho.config`), its help
text, and where it has them its named ``hamacho train`` option and web-form label. The ``model`` section
is a :class:`ModelParams` subclass per model (:mod:`hamacho.models.params`). The CLI options, the
service's ``/options`` and job schema, the web form, ``configs/<model>.yaml`` and
docs/config-reference.md are derived from these classes (:mod:`hamacho.config_reference`).

This module imports neither torch nor omegaconf, so that the CLI can use it before parsing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from hamacho.framing_checks import (  # noqa: F401 - re-exported: settings users need them
    BACKBONE_STRIDE,
    check_crop,
    check_framing,
    check_image_size,
    check_step,
    model_input_size,
    parse_size,
    size_pair,
)
from hamacho.model_settings import (  # noqa: F401 - re-exported: settings users need them
    BACKBONES,
    ModelParams,
    backbone_field,
    check_layers,
    layers_field,
    weights_field,
)
from hamacho.setting_fields import (  # noqa: F401 - re-exported: settings users need them
    SettingInfo,
    iter_settings,
    section_help,
    setting,
    type_words,
    validate,
)

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
DATA_FORMATS = ("auto", "mvtec", "folder", "filelist")
THRESHOLD_METHODS = ("auto", "f1", "fpr", "balanced", "sigma", "percentile", "manual")


def max_num_workers() -> int:
    """Most data-loading workers allowed here: cpu_count - 2 on Linux, none elsewhere."""
    if not sys.platform.startswith("linux"):
        return 0
    return max((os.cpu_count() or 1) - 2, 0)


def check_num_workers(value: int) -> str | None:
    """Data-loading processes: Linux only, at most cpu_count - 2."""
    if value and not sys.platform.startswith("linux"):
        return "data-loading workers are only supported on Linux; use 0"
    limit = max_num_workers()
    if value > limit:
        return f"is {value} but at most {limit} is allowed here (cpu_count {os.cpu_count()} - 2)"
    return None


SIZE_HELP = "N (square) or [height, width]"


@dataclass
class CircleSettings:
    """crop: circle, found with OpenCV's Hough transform (gradient method) on a grey copy at most 512 px
    wide, blurred (5x5, sigma 1.5) (docs/dataset.md#region-of-interest)."""

    min_radius_frac: float = setting(0.2, above=0.0, at_most=1.0,
                                     help="Smallest radius, as a fraction of the image's shorter side.")
    max_radius_frac: float = setting(0.5, above=0.0, at_most=1.0,
                                     help="Largest radius, likewise (the largest circle found is used).")
    param1: float = setting(100.0, above=0.0, help="Canny's upper edge threshold.")
    param2: float = setting(30.0, above=0.0,
                            help="Accumulator threshold: smaller finds fainter (and more false) circles.")
    margin: float = setting(0.0, at_least=0.0, at_most=1.0,
                            help="Widen the crop by this fraction of the radius (0..1).")


@dataclass
class TilingSettings:
    """Score the image (after the crop) in overlapping tiles (docs/dataset.md#tiling)."""

    tile_size: Any = setting(None, check=check_image_size, parse=parse_size,
                             help=f"null: tiling off; {SIZE_HELP} (or HxW): the tile, which is the model input, each side a "
                                  "multiple of 32.")
    stride: Any = setting(None, check=check_step, parse=parse_size,
                          help=f"Step between tiles, {SIZE_HELP}, at most tile_size; null: tile_size (no "
                               "overlap). The last row and column end at the border; overlaps are averaged.")
    resize: Any = setting(None, check=check_step, parse=parse_size,
                          help=f"Working size ({SIZE_HELP}) the crop is resized to before tiling; null: the crop's "
                               "full resolution on the first training image (then stored with the model).")


@dataclass
class DatasetSettings:
    """Where the images are, how they are framed for the model, and how they are batched."""

    root: str | None = setting(
        None, option="--dataset-root", metavar="PATH",
        help="Dataset folder: one category in MVTec AD layout (train/good, test/<type>, "
             "ground_truth/<type>/<name>_mask.png), or a folder with good/ (bad/, mask/) subfolders, or one "
             "with a CSV file list (docs/dataset.md).")
    image_size: Any = setting(
        256, check=check_image_size, option="--image-size", parse=parse_size, label="Image size",
        metavar="N|HxW",
        help=f"Model input in pixels: {SIZE_HELP}, each side a multiple of 32 (the backbone's stride), also "
             "written HxW or H,W (height first, e.g. 256x320). Not used with tiling.")
    keep_aspect: bool = setting(
        False, help="false: stretch the image (after the crop) to image_size; true: resize it by its longer side "
                    "and pad with black (the padding is not inspected).")
    crop: Any = setting(
        None, check=check_crop,
        help="Region of interest, applied first: null (whole image), [x1, y1, x2, y2] in original pixels (x2, y2 "
             "exclusive), or circle: the bounding box of the largest circle found (outside the circle is not "
             "inspected). Maps and pictures come back at the original size.")
    circle: CircleSettings = field(default_factory=CircleSettings)
    valid_area_mask: str | None = setting(
        None, nonempty=True,
        help="Image file in original pixels, white = inspect (any light pixel): outside it the input is blacked "
             "out, maps are 0, and image scores and pixel metrics ignore it. Read once when training and stored "
             "in the model file (and exports).")
    tiling: TilingSettings = field(default_factory=TilingSettings)
    batch_size: int = setting(
        8, at_least=1, option="--batch-size",
        help="Images per forward pass (decisions do not depend on it); on a CPU small batches are fastest "
             "(cache), on a GPU try 32.")
    num_workers: int = setting(0, at_least=0, check=check_num_workers, option="--num-workers",
                               help="Data-loading processes; Linux only, at most cpu_count - 2.")
    calibration_split: float = setting(
        0.1, above=0.0, at_most=0.9,
        help="MVTec layout: share of train/good held out (seeded) for the threshold when test/ has no good "
             "images; those images are then not used for fitting.")
    holdout: float = setting(
        0.0, at_least=0.0, at_most=0.5,
        help="Share of the labelled calibration images (good and defective alike, chosen by name and seed) kept "
             "out of the thresholds, so that metrics on them are honest: metrics.json's held_out, the report and "
             "the service's model card (the service uses 0.3). 0: every labelled image calibrates.")
    format: str = setting(
        "auto", choices=DATA_FORMATS, option="--data-format",
        help="Layout of the data: auto, mvtec, folder or filelist; auto detects it from the options and the "
             "root's contents, and refuses an ambiguous root.")
    good_dir: str | None = setting(None, option="--good-dir", metavar="PATH",
                                   help="Folder layout: good images (searched recursively).")
    bad_dir: str | None = setting(
        None, option="--bad-dir", metavar="PATH",
        help="Folder layout: defective images, in one folder or one subfolder per defect type (optional).")
    mask_dir: str | None = setting(None, option="--mask-dir", metavar="PATH",
                                   help="Folder layout: masks of the defective images (optional).")
    mask_suffix: str = setting(
        "_mask", help='A mask is named <image stem><mask_suffix>.<any image extension>; "" for masks named like '
                      "their images.")
    file_list: str | None = setting(
        None, option="--file-list", metavar="CSV",
        help="File-list layout: CSV with columns path, label (good|bad) and optional mask, split (train|test); "
             "paths relative to the CSV's folder.")
    good_list: str | None = setting(None, option="--good-list", metavar="TXT",
                                    help="File-list layout: a text file with one good image path a line.")
    bad_list: str | None = setting(
        None, option="--bad-list", metavar="TXT",
        help="File-list layout: a text file with one defective image path a line (optional).")
    mask_list: str | None = setting(
        None, option="--mask-list", metavar="TXT",
        help="File-list layout: one mask path a line, matched to the defective images by name (optional).")
    split: float = setting(
        0.2, above=0.0, at_most=0.9, option="--split",
        help="Folder and file-list layouts: share of the good images held out (seeded) for calibration and "
             "test; the rest is fitted.")
    name: str | None = setting(
        None, help="Name of the results folder <result_path>/<model>/<name>; null: the dataset root's name "
                   "(folder layout: the good folder's parent; file list: the list's stem).")


@dataclass
class ThresholdSettings:
    """Raw thresholds, set on the calibration images; each maps to normalized 0.5 (docs/training.md#thresholds)."""

    method: str = setting(
        "auto", choices=THRESHOLD_METHODS,
        help="auto: balanced without defective calibration images (fpr when synthetic_images is 0 or fewer than 5 "
             "good images calibrate); with fewer than few_defects of them, the f1 cut "
             "kept between the good-image rule at max_fpr (floor) and at target_fpr (ceiling); with more, f1. f1: "
             "the score with the best F1 on the labelled calibration images (the cut midway between the lowest NG "
             "score and the highest score below it); with masks, the pixel threshold likewise over their pixels. "
             "fpr: the good-image rule, the score that calls target_fpr of good parts NG by a robust log-normal "
             "fit (median, MAD) of the good calibration images' scores, with the expected false-alarm rate and its "
             "uncertainty reported. balanced: the cut with the best balanced accuracy between the good calibration "
             "images' scores and those of synthetic defects (the real defective calibration images when there are "
             "any), kept between the good-image rule at max_fpr (floor) and at target_fpr (ceiling); needs "
             "synthetic_images > 0. sigma: mean + sigma * "
             "std of the good calibration images' scores. percentile: that percentile of them. manual: the raw "
             "values image (and pixel) below.")
    target_fpr: float = setting(
        0.01, above=0.0, check=lambda value: None if value < 0.5 else "must be below 0.5",
        help="The false-alarm rate accepted by the good-image rule (method fpr): the share of good parts it "
             "expects to call NG, e.g. 0.01; for balanced and f1-bounded (auto's rules with synthetic or few "
             "defects), the highest threshold they may set.")
    max_fpr: float = setting(
        0.1, above=0.0, check=lambda value: None if value < 0.5 else "must be below 0.5",
        help="The most false alarms a threshold moved by defect scores may cost (method balanced, and auto "
             "without defective images or with fewer than few_defects of them): it is never placed below the good-image rule's threshold "
             "at this rate (nor above the one at target_fpr).")
    few_defects: int = setting(
        20, at_least=0,
        help="Method auto: with fewer defective calibration images than this (but some), the F1 cut is bounded "
             "by the good-image rule (see method); with this many or more, the F1 cut alone. 0: the F1 cut alone "
             "whenever there are defective images.")
    folds: int = setting(
        5, at_least=0, check=lambda value: None if value != 1 else "must be 0 (off) or at least 2",
        help="Good-image rule (models that can take images out of their fit: PaDiM): the training images are "
             "dealt into this many folds and each is scored by the model fitted without its fold, so that every "
             "good image calibrates the threshold, not only the held-out ones. 0: held-out images only.")
    synthetic_images: int = setting(
        30, at_least=0,
        help="Without defective calibration images: this many held-out good images each get a synthetic cut-paste "
             "patch, scratch and blotch, and the share scored NG is reported as an estimate of recall (labelled "
             "synthetic); method balanced also places the threshold on other synthetic defects of the same images. "
             "0: off.")
    sigma: float = setting(6.0, above=0.0,
                           help="Method sigma: the k of mean + k * std (the original Hamacho's no-bad mode: 6).")
    percentile: float = setting(99.0, above=0.0, at_most=100.0, help="Method percentile: 0 < p <= 100.")
    image: float | None = setting(None, help="Method manual: the raw image threshold (required).")
    pixel: float | None = setting(None, help="Method manual: the raw pixel threshold; null: the image threshold.")


@dataclass
class VisualizationSettings:
    """Which pictures are written per scored image."""

    report_images: bool = setting(
        True, help="One report picture per test image: input | ground truth | heatmap | mask | outline.")
    save_heatmap: bool = setting(False, help="Also a heatmap PNG at the original resolution.")
    save_segmentation: bool = setting(False, help="Also a segmentation (outline) PNG at the original resolution.")
    only_wrong: bool = setting(
        False, help="Write pictures only for wrongly decided labelled images (and unlabelled ones).")
    heatmap_alpha: float = setting(0.5, at_least=0.0, at_most=1.0, help="Opacity of the heatmap over the image.")


@dataclass
class ReportSettings:
    """The analysis report (report.html, docs/report.md)."""

    enabled: bool = setting(True, option="--no-report",
                            help="Write report.html and its figures; --no-report skips them.")
    examples: int = setting(5, at_least=0, at_most=50,
                            help="Worst and best scored example pictures shown in the report (each).")
    pixel_sample: int = setting(200_000, at_least=0,
                                help="Most pixels (a seeded sample) in the report's pixel-score histogram.")


@dataclass
class ProjectSettings:
    """Seed and where results go."""

    seed: int = setting(0, at_least=0, at_most=2**32 - 1, option="--seed",
                        help="Seeds the channel choice, random initialisation and every other random choice.")
    result_path: str = setting("results", nonempty=True, option="--result-path", metavar="PATH",
                               help="Results go to <result_path>/<model>/<category>/.")


@dataclass
class TrainerSettings:
    """Device choice."""

    accelerator: str = setting("auto", choices=ACCELERATORS,
                               help="auto uses a GPU when there is one; cpu, gpu, cuda or mps force it.")


@dataclass
class Settings:
    """The whole configuration of a training run (stored in the model file)."""

    model: ModelParams = field(default_factory=ModelParams)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    threshold: ThresholdSettings = field(default_factory=ThresholdSettings)
    visualization: VisualizationSettings = field(default_factory=VisualizationSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    project: ProjectSettings = field(default_factory=ProjectSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
