"""The anomalib side of the benchmark: train + test one model on one category, dump raw predictions.

Runs under the peer environment's python (anomalib 2.7, torch, torchvision, timm), never under
Hamacho's, and imports nothing from Hamacho: it writes raw image scores and anomaly maps (before
anomalib's normalization and thresholding) plus timings to a folder, and ``benchmarks/run.py``
computes every metric for both sides with Hamacho's own functions.

Usage (normally started by ``benchmarks/run.py --peer anomalib``)::

    /work/peer/bin/python benchmarks/peer_anomalib.py SPEC.json

SPEC.json keys: ``model`` (padim | patchcore), ``dataset`` (category folder in MVTec AD layout),
``image_size``, ``backbone``, ``layers``, ``weights`` (torchvision state-dict file), ``seed``,
``batch_size``, ``num_workers``, ``coreset_ratio``, ``num_neighbors``, ``n_features`` (PaDiM; null
for anomalib's default), ``channel_indices`` (PaDiM; null keeps anomalib's own seeded choice),
``visualization`` (bool), ``out_dir`` and optional ``good_only`` (bool: no defective image is seen before
the test; 20 % of train/good validate, so anomalib's threshold falls back to the highest good
validation score, and ``result.json`` gets ``good_only``: its own OK/NG on test/good and on the defects). Written to ``out_dir``: ``scores.npy`` (N,), ``maps.npy``
(N, S, S) float32, ``labels.npy`` (N,), ``paths.json`` and ``result.json`` (timings, peak RSS,
weight-loading check, anomalib's own metrics, versions).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: every weight comes from the given file
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch
import torchvision

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb() -> float | None:
    """Peak RSS of this process image from /proc (VmHWM, MiB), a cross-check of ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# timm's name of a torchvision network with the same architecture, and its layer names (anomalib's side).
TIMM_BACKBONES = {"mobilenet_v2": "mobilenetv2_100"}
TIMM_LAYERS = {"mobilenet_v2": {"features.1": "blocks.0", "features.3": "blocks.1", "features.6": "blocks.2",
                                "features.10": "blocks.3", "features.13": "blocks.4", "features.16": "blocks.5",
                                "features.17": "blocks.6"}}
MOBILENET_V2_STAGES = (1, 2, 3, 4, 3, 3, 1)  # inverted-residual blocks per timm stage (torchvision features.1-17)


def mobilenet_v2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's mobilenet_v2 state-dict under timm's ``mobilenetv2_100`` names (same tensors).

    torchvision: ``features.0`` stem (conv, bn), ``features.1`` .. ``features.17`` inverted residuals
    (``conv.0.0`` expand conv, ``conv.0.1`` its bn, ``conv.1.0`` depthwise, ``conv.1.1``, ``conv.2``
    projection, ``conv.3``; the first block has no expansion), ``features.18`` head. timm: ``conv_stem``,
    ``bn1``, ``blocks.S.J`` (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3``; the first
    block ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``), ``conv_head``, ``bn2``, ``classifier``.
    """
    prefixes = {"features.0.0.": "conv_stem.", "features.0.1.": "bn1.", "features.18.0.": "conv_head.",
                "features.18.1.": "bn2.", "classifier.1.": "classifier."}
    block = 1
    for stage, count in enumerate(MOBILENET_V2_STAGES):
        for j in range(count):
            ours, theirs = f"features.{block}.conv.", f"blocks.{stage}.{j}."
            parts = (["0.0", "conv_dw"], ["0.1", "bn1"], ["1", "conv_pw"], ["2", "bn2"]) if stage == 0 else (
                ["0.0", "conv_pw"], ["0.1", "bn1"], ["1.0", "conv_dw"], ["1.1", "bn2"], ["2", "conv_pwl"],
                ["3", "bn3"])
            prefixes.update({f"{ours}{a}.": f"{theirs}{b}." for a, b in parts})
            block += 1
    out = {}
    for key, value in state.items():
        prefix = max((p for p in prefixes if key.startswith(p)), key=len, default=None)
        if prefix is None:
            raise KeyError(f"no timm name for {key}")
        out[prefixes[prefix] + key[len(prefix):]] = value
    return out


def torchvision_features(reference: torch.nn.Module, backbone: str, layers: list[str], x: torch.Tensor) -> dict:
    """The named layers' outputs of a torchvision network (ResNet or ``features`` sequence)."""
    found = {}
    if hasattr(reference, "layer1"):
        y = reference.maxpool(reference.relu(reference.bn1(reference.conv1(x))))
        for index in range(1, max(int(layer[-1]) for layer in layers) + 1):
            y = getattr(reference, f"layer{index}")(y)
            found[f"layer{index}"] = y
    else:
        y = x
        for index, block in enumerate(reference.features):
            y = block(y)
            found[f"features.{index}"] = y
    return {layer: found[layer] for layer in layers}


def load_backbone(extractor: torch.nn.Module, backbone: str, layers: list[str], weights: str) -> dict:
    """Load a torchvision state-dict into anomalib's TimmFeatureExtractor and prove the features match.

    timm's ResNets name their parameters like torchvision's (``conv1``, ``bn1``, ``layerN.i.convK``,
    ``downsample.0/1``); MobileNetV2's are renamed (:func:`mobilenet_v2_to_timm`). anomalib's extractor
    is timm's ``features_only`` model cut after the deepest requested stage. Every tensor of that model
    must come from the file (none missing, and each equal to the file's afterwards), and the feature maps
    must equal those of a torchvision model built from the same file on a random input (within 1e-4).

    Args:
        extractor: anomalib's ``TimmFeatureExtractor``.
        backbone: torchvision network name.
        layers: Its layers (torchvision names) the extractor returns.
        weights: Path of the torchvision state-dict file.

    Returns:
        What was checked: tensor counts, ignored file keys, largest feature difference per layer.
    """
    original = torch.load(weights, map_location="cpu", weights_only=True)
    original = {k.removeprefix("module."): v for k, v in original.items()}
    state = mobilenet_v2_to_timm(original) if backbone == "mobilenet_v2" else original
    net = extractor.feature_extractor
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise RuntimeError(f"weights {weights} lack {len(result.missing_keys)} tensors: {result.missing_keys[:5]}")
    own = net.state_dict()
    unequal = [k for k, v in own.items() if not torch.equal(v, state[k])]
    if unequal:
        raise RuntimeError(f"tensors not loaded as in the file: {unequal[:5]}")
    reference = torchvision.models.get_model(backbone, weights=None)
    reference.load_state_dict(original)
    reference.eval()
    extractor.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 128, 128, generator=generator)
    names = TIMM_LAYERS.get(backbone, {})
    with torch.no_grad():
        ours = extractor(x)
        expected = torchvision_features(reference, backbone, layers, x)
    differences = {layer: float((ours[names.get(layer, layer)] - expected[layer]).abs().max()) for layer in layers}
    if max(differences.values()) > 1e-4:
        raise RuntimeError(f"anomalib's features differ from torchvision's: {differences}")
    return {
        "tensors_loaded": len(own),
        "tensors_in_file": len(state),
        "file_keys_not_used": sorted({k.split(".")[0] for k in result.unexpected_keys}),
        "max_feature_difference": differences,
    }


def build_model(spec: dict):
    """anomalib's Padim or Patchcore configured like Hamacho's run: same size, layers, defaults."""
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    size = int(spec["image_size"])
    pre_processor = PreProcessor(
        transform=Compose([Resize((size, size), antialias=True), Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)])
    )
    names = TIMM_LAYERS.get(spec["backbone"], {})
    common = {
        "backbone": TIMM_BACKBONES.get(spec["backbone"], spec["backbone"]),
        "layers": [names.get(layer, layer) for layer in spec["layers"]],
        "pre_trained": False,
        "pre_processor": pre_processor,
        "visualizer": bool(spec["visualization"]),
    }
    if spec["model"] == "padim":
        from anomalib.models import Padim

        model = Padim(n_features=spec.get("n_features"), **common)
        indices = spec.get("channel_indices")
        if indices is not None:
            if len(indices) != model.model.idx.numel():
                raise ValueError(f"{len(indices)} channel indices given, the model keeps {model.model.idx.numel()}")
            model.model.idx.copy_(torch.tensor(indices, dtype=model.model.idx.dtype))
    elif spec["model"] == "patchcore":
        from anomalib.models import Patchcore

        model = Patchcore(
            coreset_sampling_ratio=float(spec["coreset_ratio"]), num_neighbors=int(spec["num_neighbors"]), **common
        )
    else:
        raise ValueError(f"unknown model {spec['model']!r}")
    return model


def make_callbacks(model) -> tuple[list, dict, dict]:
    """A timing callback (fit phases) and a raw-output capture of the test pass.

    The capture is a forward hook on the plain torch model, so it sees ``pred_score`` and
    ``anomaly_map`` before anomalib's post-processor normalizes and clips them.
    """
    from lightning.pytorch import Callback

    marks: dict[str, float] = {}
    captured: dict[str, list] = {"scores": [], "maps": [], "paths": [], "labels": []}
    state = {"capturing": False}

    def hook(_module, _inputs, output) -> None:
        if state["capturing"] and not _module.training:
            captured["scores"].append(output.pred_score.detach().float().cpu().numpy().reshape(-1))
            maps = output.anomaly_map.detach().float().cpu().numpy()
            captured["maps"].append(maps.reshape(maps.shape[0], maps.shape[-2], maps.shape[-1]))

    model.model.register_forward_hook(hook)
    original_fit = model.fit

    def timed_fit() -> None:
        marks["model_fit_start"] = time.perf_counter()
        original_fit()
        marks["model_fit_end"] = time.perf_counter()

    model.fit = timed_fit  # called by MemoryBankMixin at the start of validation

    class Marks(Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            marks.setdefault("train_start", time.perf_counter())

        def on_validation_end(self, trainer, pl_module) -> None:
            marks["validation_end"] = time.perf_counter()

        def on_test_epoch_start(self, trainer, pl_module) -> None:
            state["capturing"] = True

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
            captured["paths"].extend(str(p) for p in batch.image_path)
            captured["labels"].append(batch.gt_label.detach().cpu().numpy().reshape(-1).astype(np.int64))

        def on_test_epoch_end(self, trainer, pl_module) -> None:
            state["capturing"] = False

    return [Marks()], marks, captured


def run(spec: dict) -> dict:
    """Fit and test; write raw predictions and ``result.json`` to ``spec["out_dir"]``."""
    import anomalib
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from anomalib.models import Padim, Patchcore  # noqa: F401 - imported before the start-up RSS is taken
    from lightning.pytorch import seed_everything

    startup_rss = peak_rss_mb()  # after imports: what the process costs before any work
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = Path(spec["dataset"]).resolve()
    seed_everything(int(spec["seed"]), workers=True, verbose=False)

    model = build_model(spec)
    check = load_backbone(model.model.feature_extractor, spec["backbone"], list(spec["layers"]), spec["weights"])
    callbacks, marks, captured = make_callbacks(model)
    datamodule = MVTecAD(
        root=dataset.parent,
        category=dataset.name,
        train_batch_size=int(spec["batch_size"]),
        eval_batch_size=int(spec["batch_size"]),
        num_workers=int(spec["num_workers"]),
        test_split_mode="from_dir",
        # Thresholds from the labelled test images, as Hamacho does; good-only: from held-out train images.
        val_split_mode="from_train" if spec.get("good_only") else "same_as_test",
        val_split_ratio=0.2,
        seed=int(spec["seed"]),
    )
    engine = Engine(
        accelerator="cpu",
        devices=1,
        default_root_dir=out_dir / "anomalib_workdir",
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
    )

    start = time.perf_counter()
    engine.fit(model=model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    reported = engine.test(model=model, datamodule=datamodule, verbose=False)
    test_seconds = time.perf_counter() - start
    peak, hwm = peak_rss_mb(), vm_hwm_mb()

    scores = np.concatenate(captured["scores"]).astype(np.float32)
    maps = np.concatenate(captured["maps"]).astype(np.float32)
    labels = np.concatenate(captured["labels"])
    if not len(scores) == len(maps) == len(labels) == len(captured["paths"]):
        raise RuntimeError("captured predictions and image paths do not line up")
    np.save(out_dir / "scores.npy", scores)
    np.save(out_dir / "maps.npy", maps)
    np.save(out_dir / "labels.npy", labels)
    (out_dir / "paths.json").write_text(json.dumps(captured["paths"], indent=0), encoding="utf-8")

    timings = {
        "fit_seconds": fit_seconds,
        "test_seconds": test_seconds,
        "test_images_per_second": len(scores) / test_seconds if test_seconds > 0 else 0.0,
        "peak_rss_mb": peak,
        "startup_rss_mb": startup_rss,
        "vm_hwm_mb": hwm,
    }
    if {"train_start", "model_fit_start", "model_fit_end", "validation_end"} <= marks.keys():
        timings.update(
            feature_extraction_seconds=marks["model_fit_start"] - marks["train_start"],
            model_fit_seconds=marks["model_fit_end"] - marks["model_fit_start"],
            validation_seconds=marks["validation_end"] - marks["model_fit_end"],
        )
    result = {
        "implementation": "anomalib",
        "versions": {
            "anomalib": anomalib.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": sys.version.split()[0],
        },
        "spec": {k: v for k, v in spec.items() if k != "channel_indices"},
        "channel_indices": [int(i) for i in model.model.idx.tolist()] if spec["model"] == "padim" else None,
        "memory_bank_size": int(model.model.memory_bank.shape[0]) if spec["model"] == "patchcore" else None,
        "backbone_check": check,
        "timings": timings,
        "images_tested": len(scores),
        "anomalib_reported_metrics": {k: float(v) for k, v in (reported[0] if reported else {}).items()},
    }
    if spec.get("good_only"):
        # anomalib's PostProcessor: NG when the normalized score is strictly above its normalized threshold,
        # i.e. the raw score strictly above the raw threshold (its normalization is monotonic).
        decisions = scores > float(model.post_processor.image_threshold)
        result["good_only"] = {
            "validation_images": len(datamodule.val_data),
            "raw_image_threshold": float(model.post_processor.image_threshold),
            "fpr_test_good": float(decisions[labels == 0].mean()),
            "recall": float(decisions[labels == 1].mean()),
        }
    (out_dir / "result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``peer_anomalib.py SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    result = run(spec)
    print(json.dumps(result["timings"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
