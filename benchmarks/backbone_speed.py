"""Forward time of the feature extractor per backbone: what batch-norm folding and channels-last buy.

    python benchmarks/backbone_speed.py [--backbones resnet18 mobilenet_v2 ...] [--image-size 256]

For each backbone, Hamacho's extractor up to PaDiM's default layers runs on a batch of random uint8
images four ways: folded + channels-last (what Hamacho does), folded only, channels-last only, and
neither (torchvision's plain modules). Prints milliseconds per image (best of ``--repeats``) and the
ratios to "neither"; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from hamacho.models.backbone import FeatureExtractor, default_layers


def build(backbone: str, layers: list[str], fold: bool, channels_last: bool) -> FeatureExtractor:
    """An extractor with folding and the memory layout switched as asked (seed 0, random weights)."""
    import hamacho.models.backbone as module

    original = module.fold_batch_norms
    if not fold:
        module.fold_batch_norms = lambda _module: None
    try:
        torch.manual_seed(0)
        extractor = FeatureExtractor(backbone, layers)
    finally:
        module.fold_batch_norms = original
    if not channels_last:
        extractor.to(memory_format=torch.contiguous_format)
        extractor.channels_last = False
    return extractor


def time_forward(extractor: FeatureExtractor, images: torch.Tensor, repeats: int) -> float:
    """Best milliseconds per image over ``repeats`` passes (after one warm-up)."""
    best = float("inf")
    with torch.inference_mode():
        extractor(images)
        for _ in range(repeats):
            start = time.perf_counter()
            extractor(images)
            best = min(best, time.perf_counter() - start)
    return best / images.shape[0] * 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["resnet18", "wide_resnet50_2", "mobilenet_v2",
                                                      "efficientnet_b0", "convnext_tiny"])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8)
    print(f"#### Extractor forward, ms/image ({args.image_size} px, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads)\n")
    print("| backbone | folded + channels-last | folded | channels-last | neither | folding gain | layout gain |")
    print("|---|---|---|---|---|---|---|")
    for backbone in args.backbones:
        layers = default_layers(backbone, (4, 8, 16))
        times = {(fold, last): time_forward(build(backbone, layers, fold, last), images, args.repeats)
                 for fold in (True, False) for last in (True, False)}
        both, folded, last, neither = times[True, True], times[True, False], times[False, True], times[False, False]
        print(f"| {backbone} | {both:.1f} | {folded:.1f} | {last:.1f} | {neither:.1f} | "
              f"{last / both:.2f}x | {folded / both:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
