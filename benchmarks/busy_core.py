"""How much of its idle speed the Predictor keeps when another process keeps one core busy.

A line PC is never idle. For each OpenMP waiting policy (PyTorch's default spin-waiting, and the passive
waiting the CLI and the service ask for), a child process loads a model file, scores ``--images`` decoded
bottle images three times (best time kept), first on an idle machine, then beside a process that spins
on one core. Prints ms/image and the share of the idle speed kept (a fair share on 2 cores: 0.5).

    python benchmarks/busy_core.py --model results/padim/bottle/model.pt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = r"""
import json, sys, time
from pathlib import Path
from hamacho.data.decoding import read_image
from hamacho.predictor import Predictor
predictor = Predictor.load(sys.argv[1], device="cpu")
images = [read_image(p) for p in sorted(Path(sys.argv[2]).rglob("*.png"))[: int(sys.argv[3])]]
predictor.predict(images[:4])
best = float("inf")
for _ in range(3):
    start = time.perf_counter()
    predictor.predict(images)
    best = min(best, (time.perf_counter() - start) / len(images))
print(json.dumps(best * 1000))
"""
POLICIES = {"spin (PyTorch's default)": None, "passive (hamacho's CLI and service)": "PASSIVE"}


def ms_per_image(args: argparse.Namespace, policy: str | None) -> float:
    """Best ms/image of one child process with that OpenMP waiting policy."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    done = subprocess.run([sys.executable, "-c", CHILD, args.model, args.images_dir, str(args.images)], env=env,
                          capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="A model file or export folder.")
    parser.add_argument("--images-dir", default="../shared/data/mvtec/bottle/test", help="Images to score.")
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args(argv)
    print("| waiting policy | idle ms/image | one core busy ms/image | idle speed kept |")
    print("|---|---|---|---|")
    for label, policy in POLICIES.items():
        idle = ms_per_image(args, policy)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)  # let the busy process take its core
            busy = ms_per_image(args, policy)
        finally:
            hog.kill()
            hog.wait()
        print(f"| {label} | {idle:.1f} | {busy:.1f} | {idle / busy:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
