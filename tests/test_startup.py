"""`hamacho --help`, `--version` and usage errors answer without loading torch, torchvision or Lightning."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "lightning", "pytorch_lightning", "cv2", "omegaconf")
PROBE = """
import json, sys
from hamacho.cli import main
try:
    main({args!r})
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "loaded": [m for m in {heavy!r} if m in sys.modules]}}), file=sys.stderr)
"""


@pytest.mark.parametrize(("args", "code", "text"), [
    (["--help"], 0, "Train on good images"),
    (["train", "--help"], 0, "--backbone-weights"),
    (["inference", "--help"], 0, "--image-threshold"),
    (["--version"], 0, "hamacho, version"),
    (["train", "--model", "nope"], 2, "Invalid value for '--model': 'nope' is not one of 'padim', 'patchcore'"),
    (["train", "--image-size", "big"], 2, "'big' is not a size"),
    (["inference", "--image-path", "x.png"], 2, "Missing option '--model-path'"),
    (["serve-everything"], 2, "No such command"),
])
def test_help_version_and_usage_errors_do_not_import_heavy_modules(args, code, text):
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True,
                            text=True, timeout=120, check=False)
    outcome = json.loads(result.stderr.strip().splitlines()[-1])
    assert outcome == {"code": code, "loaded": []}, result.stderr
    assert text in result.stdout + result.stderr
    if code:
        assert result.stderr.strip().splitlines()[0].startswith("Error: ")


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_waits_passively_unless_told_otherwise(given, expected):
    """Spinning OpenMP threads fight other work on a line PC (benchmarks/busy_core.py); a user's choice wins."""
    code = ("import os, sys\nfrom hamacho.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n"
            "    pass\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.stdout.split()[-2:] == [expected, "False"], result.stderr  # set before any torch import


@pytest.mark.parametrize(("first", "given", "expected"), [
    ("hamacho", None, "PASSIVE"),  # a library user importing hamacho first gets passive waiting
    ("hamacho", "ACTIVE", "ACTIVE"),  # their own setting wins
    ("torch", None, "None"),  # torch first: OpenMP has read its settings, so hamacho changes nothing
])
def test_importing_the_library_waits_passively_before_torch(first, given, expected):
    """The library's Predictor in a user's process is as fair to a busy core as the CLI (docs/api.md#threads)."""
    code = f"import os, sys\nimport {first}\nimport hamacho\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == expected
