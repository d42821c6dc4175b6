"""CLI start-up: wall time and peak RSS of `hamacho --help`, `train --help`, `--version` and a usage error.

Each command runs ``repeats`` times in a fresh process (``python -m hamacho``, the console script's code
path); the median wall time and the largest peak RSS are reported. Run on its own with
``python benchmarks/startup.py`` or as part of ``benchmarks/run.py`` (``--startup-only`` for just this).
Target: under 0.5 s, and none of torch, torchvision or Lightning imported.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

COMMANDS = (("hamacho --help", ["--help"]), ("hamacho train --help", ["train", "--help"]),
            ("hamacho --version", ["--version"]), ("usage error (--model nope)", ["train", "--model", "nope"]))
TARGET_SECONDS = 0.5


def measure(repeats: int = 5, python: str = sys.executable) -> list[dict[str, Any]]:
    """Median wall seconds and peak RSS (MiB) of each start-up command, with its exit code."""
    rows = []
    for label, args in COMMANDS:
        walls, peak, code = [], 0.0, None
        for _ in range(repeats):
            start = time.perf_counter()
            child = subprocess.Popen([python, "-m", "hamacho", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
            _, status, usage = os.wait4(child.pid, 0)  # this child's own resource use (not all children's)
            child.returncode = os.waitstatus_to_exitcode(status)
            walls.append(time.perf_counter() - start)
            code = child.returncode
            peak = max(peak, usage.ru_maxrss / 1024)
        rows.append({"command": label, "median_seconds": statistics.median(walls), "peak_rss_mb": peak,
                     "exit_code": code})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The start-up figures as a markdown table, with the target."""
    lines = [f"#### CLI start-up (median of runs; target < {TARGET_SECONDS} s)", "",
             "| command | wall s | peak RSS MiB | exit code |", "|---|---|---|---|"]
    lines += [f"| {r['command']} | {r['median_seconds']:.3f} | {r['peak_rss_mb']:.0f} | {r['exit_code']} |"
              for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(measure()))
