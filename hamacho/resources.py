"""Process resources: figures for summaries and benchmarks, and how this process shares the CPU."""

from __future__ import annotations

import os
import sys


def wait_passively() -> None:
    """Ask OpenMP (PyTorch's CPU threads) to sleep, not spin, while they wait; call it before torch loads.

    Spinning threads fight other work for the cores, which a line PC always has (camera, PLC links, a
    viewer, a training job beside predictions). Measured with benchmarks/busy_core.py (PaDiM
    mobilenet_v2, 256 px, bottle images, 2 cores, one kept busy by another process), three runs: spinning
    kept 0.31-0.43x of the idle throughput, passive waiting 0.50-0.80x; idle, 17-24 ms/image either way
    (no difference beyond the runs' spread). An explicit setting of the user's wins. A program that imports Hamacho as a library must set
    ``OMP_WAIT_POLICY=PASSIVE`` itself before torch is first imported (docs/api.md#threads).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (NaN where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
