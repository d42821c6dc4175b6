"""``hamacho inference --engine ray --ray-address HOST:PORT`` against a real two-node cluster on this machine.

The cluster (``ray start --head`` and ``ray start --address``, one CPU each, 127.0.0.1, ports and a temporary
folder of its own: tests/ray_support.py) runs one actor on each node; the command's results equal the local
engine's to the last bit, joined at the head's address and through Ray Client (``ray://``, where the run's
driver is a task on the head node).
"""

from __future__ import annotations

import json
import subprocess
import sys

from hamacho.inference import run_inference
from tests.ray_support import require_ray, tiny_model, two_node_cluster

RUN_TIMEOUT = 600  # seconds: a failure guard on a busy machine


def test_the_cli_on_a_two_node_cluster_writes_the_local_engines_results(tmp_path):
    require_ray()
    root, model_path = tiny_model(tmp_path / "model")
    # the archive as a CSV file list (path, label), results files only
    listing = tmp_path / "archive.csv"
    listing.write_text("path,label\n" + "".join(f"{p},{'good' if p.parent.name == 'good' else 'bad'}\n"
                                                 for p in sorted((root / "test").rglob("*.png"))))
    local = run_inference(model_path, listing, tmp_path / "local", report=False,
                          visualization={"report_images": False}, log=lambda _: None).output_dir
    ng = (local / "results.csv").read_text().count(",NG,")  # the local engine's decisions, counted
    assert 0 < ng < 10
    command = [sys.executable, "-m", "hamacho", "inference", "--model-path", str(model_path), "--image-path",
               str(listing), "--engine", "ray", "--actors", "2", "--no-pictures", "--quiet", "--ray-address"]
    with two_node_cluster() as (address, client, env):
        runs = {name: subprocess.run([*command, where, "--save-path", str(tmp_path / name)], env=env,
                                     capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
                for name, where in (("gcs", address), ("client", client))}
    for name, result in runs.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert f"10 image(s): {ng} NG, {10 - ng} OK, 0 unreadable" in result.stdout and result.stderr == ""
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["metrics.json", "results.csv",
                                                                      "results.parquet"]
        assert (tmp_path / name / "results.csv").read_bytes() == (local / "results.csv").read_bytes()
        facts = json.loads((tmp_path / name / "metrics.json").read_text())["ray"]
        assert facts["actors"] == 2  # one on each node (one CPU each); the first ready may score every block
