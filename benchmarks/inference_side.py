"""One measured run in its own process, for ``benchmarks/export_bench.py``.

``python benchmarks/inference_side.py run MODEL IMAGES OUT`` runs ``hamacho inference`` as a library call
(no report, no pictures) and prints JSON: wall seconds of the scoring phase, images, images/s, peak RSS,
the RSS after imports, and whether torch was loaded. ``parity MODEL IMAGES OUT.npz`` writes every test
image's normalized and raw score and map (at the model's input size) through the Predictor.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(model: str, images: str, out: str) -> dict:
    """Score a folder with ``hamacho inference`` (library call) and describe the process."""
    start = time.perf_counter()
    from hamacho.inference import run_inference

    imports_rss = peak_rss_mb()
    result = run_inference(model, images, out, visualization={"report_images": False}, report=False,
                           log=lambda _: None)
    timings = result.summary["timings"]
    return {"images": len(result.rows), "inference_seconds": timings["inference_seconds"],
            "images_per_second": timings["images_per_second"], "peak_rss_mb": peak_rss_mb(),
            "rss_after_imports_mb": imports_rss, "process_seconds": time.perf_counter() - start,
            "torch_loaded": "torch" in sys.modules}


def parity(model: str, images: str, out: str) -> dict:
    """Normalized and raw scores and maps of every image under ``images`` (sorted), saved to ``out``."""
    import numpy as np

    from hamacho.data.discovery import discover_inference_inputs
    from hamacho.predictor import Predictor

    predictor = Predictor.load(model, device="cpu")
    samples, _ = discover_inference_inputs(images)
    parts = {"scores": [], "raw_scores": [], "maps": [], "raw_maps": []}
    for scored in predictor.score_samples(samples):
        parts["scores"].append(scored.scores)
        parts["raw_scores"].append(scored.raw_scores)
        parts["maps"].append(scored.maps)
        parts["raw_maps"].append(scored.raw_maps)
    np.savez(out, names=np.array([s.name for s in samples]), **{k: np.concatenate(v) for k, v in parts.items()})
    return {"images": len(samples), "runtime": predictor.runtime.name}


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    print(json.dumps({"run": run, "parity": parity}[mode](*args)))
