"""The Hamacho side of the benchmark: one training run per process, and the backbone-forward floor.

``python benchmarks/hamacho_side.py SPEC.json`` trains and tests one model on one category with
:func:`hamacho.train.run_training` and writes ``result.json`` into the spec's ``out_dir`` (metrics,
timings, peak RSS of this process). ``benchmarks/run.py`` starts one such process per (model,
category, coreset ratio), so that the peak RSS belongs to that run alone.

``python benchmarks/hamacho_side.py --forward SPEC.json`` times the backbone-forward floor instead and
writes ``forward.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from hamacho.data.decoding import read_image, resize_image, to_chw
from hamacho.data.discovery import discover_dataset

LAYER_ORDER = ("layer1", "layer2", "layer3", "layer4")


def hamacho_options(spec: dict[str, Any]) -> dict[str, Any]:
    """Dotted configuration keys of one benchmark run (report images only when visualization is on)."""
    options = {
        "dataset.root": spec["dataset"],
        "dataset.image_size": int(spec["image_size"]),
        "dataset.batch_size": int(spec["batch_size"]),
        "dataset.num_workers": int(spec["num_workers"]),
        "model.backbone": spec["backbone"],
        "model.backbone_weights": spec["weights"],
        "project.seed": int(spec["seed"]),
        "project.result_path": str(Path(spec["out_dir"]) / "work"),
        "trainer.accelerator": "cpu",
        "visualization.report_images": bool(spec["visualization"]),
        "report.enabled": False,
    }
    if spec["model"] == "patchcore":
        options["model.coreset_ratio"] = float(spec["coreset_ratio"])
    return options


def run_hamacho(spec: dict[str, Any]) -> dict[str, Any]:
    """Train + test with Hamacho in this process and describe the run.

    Args:
        spec: Run description (see :func:`hamacho_options`; plus ``model`` and ``out_dir``).

    Returns:
        Metrics, timings, peak RSS and what the peer needs to match (PaDiM channel indices).
    """
    from hamacho.config import build_config, settings_to_dict
    from hamacho.resources import peak_rss_mb
    from hamacho.train import run_training

    startup_rss = peak_rss_mb()  # after imports: what the process costs before any work
    config = build_config(spec["model"], options=hamacho_options(spec))
    start = time.perf_counter()
    result = run_training(config, log=lambda line: print(line, file=sys.stderr))
    total = time.perf_counter() - start
    peak, hwm = peak_rss_mb(), vm_hwm_mb()
    from hamacho.model_file import load_model_file

    model = load_model_file(result.model_path).model
    indices = getattr(model, "feature_indices", None)
    bank = getattr(model, "memory_bank", None)
    out = {
        "implementation": "hamacho",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": sys.version.split()[0]},
        "spec": spec,
        "config": settings_to_dict(config),
        "metrics": result.metrics,
        "calibration": result.calibration,
        "timings": {**result.timings, "peak_rss_mb": peak, "startup_rss_mb": startup_rss, "vm_hwm_mb": hwm,
                    "run_training_seconds": total},
        "images_tested": len(result.rows),
        # Raw image scores and labels (-1 unknown) in test order, to check the scoring against.
        "raw_scores": [row.raw_score for row in result.rows],
        "labels": [{"good": 0, "defective": 1}.get(row.label, -1) for row in result.rows],
        "counts": result.summary.counts,
        "notes": result.notes,
        "channel_indices": [int(i) for i in indices.tolist()] if indices is not None else None,
        "memory_bank_size": int(bank.shape[0]) if bank is not None else None,
    }
    if not spec.get("keep_work", False):
        shutil.rmtree(Path(spec["out_dir"]) / "work", ignore_errors=True)
    return out


def vm_hwm_mb() -> float | None:
    """Peak RSS of this process image from /proc (VmHWM, MiB), a cross-check of ``ru_maxrss``; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def load_weights(backbone: str, weights: str, seed: int) -> torch.nn.Module:
    """A torchvision network with the benchmark's weights: a state-dict file, else a seeded random init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torchvision.models.get_model(backbone, weights=None)
    if weights not in ("none", "imagenet"):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k.removeprefix("module."): v for k, v in state.items()})
    return net.eval()


def truncated_backbone(net: torch.nn.Module, layers: list[str]) -> torch.nn.Sequential:
    """The network from its stem up to the deepest of ``layers`` (what the anomaly models run)."""
    if not hasattr(net, "layer1"):  # a `features` sequence: features.0 .. features.N
        return torch.nn.Sequential(*net.features[: max(int(layer.split(".")[1]) for layer in layers) + 1]).eval()
    depth = max(LAYER_ORDER.index(layer) for layer in layers) + 1
    return torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                               *(getattr(net, name) for name in LAYER_ORDER[:depth])).eval()


def forward_floor(
    dataset: str, backbone: str, layers: list[str], weights: str, seed: int, image_size: int, batch_size: int,
    repeats: int = 1,
) -> dict[str, Any]:
    """Wall time of the pure backbone forward over the test images: the floor any test pass sits on.

    The test images are read and resized as Hamacho does and held in memory first. Two networks run
    over them in fp32, in batches as in the run, under ``torch.inference_mode``:

    - ``forward_seconds``: torchvision's network cut after the deepest used layer, on ImageNet-normalised
      float input (the standard backbone forward both implementations start from);
    - ``extractor_forward_seconds``: Hamacho's :class:`~hamacho.models.backbone.FeatureExtractor` on the
      uint8 images (batch norms folded, channels-last), the floor of Hamacho's own test pass.

    One warm-up batch is not timed; the best of ``repeats`` passes is reported for each.

    Returns:
        Both times, ``images`` and ``forward_images_per_second`` (torchvision's).
    """
    from hamacho.models.backbone import IMAGENET_MEAN, IMAGENET_STD, build_feature_extractor

    layout = discover_dataset(dataset)
    images = torch.from_numpy(np.stack([to_chw(resize_image(read_image(s.path), image_size)) for s in layout.test]))
    if images.shape[0] == 0:
        return {"forward_seconds": None, "extractor_forward_seconds": None, "images": 0,
                "forward_images_per_second": None}
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    floats = [(batch.float() / 255 - mean) / std for batch in torch.split(images, batch_size)]
    plain = truncated_backbone(load_weights(backbone, weights, seed), layers)
    extractor = build_feature_extractor(backbone, layers, weights, seed)
    plain_seconds = _best_pass(plain, floats, repeats)
    extractor_seconds = _best_pass(extractor, list(torch.split(images, batch_size)), repeats)
    return {"forward_seconds": plain_seconds, "extractor_forward_seconds": extractor_seconds,
            "images": int(images.shape[0]), "forward_images_per_second": images.shape[0] / plain_seconds,
            "repeats": max(1, repeats), "threads": torch.get_num_threads()}


def _best_pass(model: torch.nn.Module, batches: list[torch.Tensor], repeats: int) -> float:
    """Best wall seconds of ``repeats`` passes of ``model`` over ``batches``, after one untimed batch."""
    best = float("inf")
    with torch.inference_mode():
        model(batches[0])
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            for batch in batches:
                model(batch)
            best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    """``hamacho_side.py [--forward] SPEC.json``: write ``result.json`` (or ``forward.json``) to ``out_dir``."""
    args = sys.argv[1:] if argv is None else argv
    forward = args[:1] == ["--forward"]
    args = args[1:] if forward else args
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    if forward:
        result = forward_floor(spec["dataset"], spec["backbone"], spec["layers"], spec["weights"], int(spec["seed"]),
                               int(spec["image_size"]), int(spec["batch_size"]), int(spec.get("repeats", 1)))
        result["torch"] = torch.__version__
        out = Path(spec["out_dir"]) / "forward.json"
    else:
        result = run_hamacho(spec)
        out = Path(spec["out_dir"]) / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
