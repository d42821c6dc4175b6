"""Process resource figures for summaries and benchmarks."""

from __future__ import annotations

import sys


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (NaN where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
