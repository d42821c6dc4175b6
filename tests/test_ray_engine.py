"""``hamacho inference --engine ray``: the local engine's results from a pool of Ray actors, a killed actor
replaced, a stopped run resumed, and one-line refusals.

One local Ray serves the whole session (``ray.init(num_cpus=2)``); its workers load the kill seam
(tests/seams/hamacho_kill_hook.py), which does nothing until a test asks for a kill. Without Ray Data
these tests skip, saying how to install it (under CI=true they fail: tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hamacho.errors import ConfigError, Interrupted
from hamacho.inference import run_inference
from hamacho.progress import RunControl
from tests.conftest import SEAMS, make_dataset
from tests.ray_support import free_port, require_ray, tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """The session's local Ray: two CPUs, the kill seam installed in its workers; yields the seam's folder."""
    require_ray()
    import ray

    kill_dir = tmp_path_factory.mktemp("kill")
    path = os.pathsep.join(p for p in (str(SEAMS), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": path, "HAMACHO_KILL_DIR": str(kill_dir)},
                          "worker_process_setup_hook": "hamacho_kill_hook.install"})
    yield kill_dir
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(dataset root, model.pt, the local engine's output folder with pictures and report)."""
    root, model_path = tiny_model(tmp_path_factory.mktemp("ray_model"))
    local = run_inference(model_path, root, tmp_path_factory.mktemp("local"), log=lambda _: None)
    return root, model_path, local.output_dir


def _ray(model_path: Path, images: Path, out: Path, actors: int = 2, resume: bool = False,
         control: RunControl | None = None, **request):
    from hamacho.inference import InferenceRequest
    from hamacho.ray_engine.options import RayOptions
    from hamacho.ray_engine.run import run_ray_inference

    return run_ray_inference(InferenceRequest(model_path, images, out, **request), RayOptions(actors=actors),
                             resume, control, log=lambda _: None)


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_ray_engine_writes_the_local_engines_results(ray_session, model, tmp_path):
    """Same rows, scores to the last bit (the same batches), order, metrics, pictures; plus results.parquet."""
    root, model_path, local = model
    result = _ray(model_path, root, tmp_path / "ray")
    out = result.output_dir
    assert (out / "results.csv").read_bytes() == (local / "results.csv").read_bytes()
    ours, theirs = (json.loads((d / "metrics.json").read_text()) for d in (out, local))
    assert ours["metrics"] == theirs["metrics"] and ours["metrics"]["pixel_AUROC"] is not None
    assert ours["engine"] == "ray" and ours["ray"]["actors"] == 2 and ours["ray"]["scored_images"] == 10
    pictures = sorted(p.relative_to(local) for p in (local / "images").rglob("*.png"))
    assert len(pictures) == 10
    assert all((out / p).read_bytes() == (local / p).read_bytes() for p in pictures)
    assert (out / "report.html").is_file() and not (out / "results.parts").exists()
    rows = _parquet_rows(out / "results.parquet")
    assert [(r["file"], r["raw_score"], r["decision"]) for r in rows] == [
        (r.file, r.raw_score, r.decision) for r in result.rows]


def test_a_killed_actor_is_replaced_and_its_blocks_run_again(ray_session, model, tmp_path):
    """An actor that dies after scoring 4 images (before returning them) is restarted; every image comes back
    exactly once, with the local engine's scores."""
    root, model_path, local = model
    (ray_session / "after").write_text("4")
    try:
        result = _ray(model_path, root, tmp_path / "ray", report=False,
                      visualization={"report_images": False})
    finally:
        (ray_session / "after").unlink()
    assert (ray_session / "killed").is_file()  # it did die, mid-run
    assert len(result.summary["ray"]["actor_peak_rss_mb"]) == 3  # two actors, then the replacement
    assert (result.output_dir / "results.csv").read_bytes() == (local / "results.csv").read_bytes()


def test_a_stopped_run_resumes_and_scores_only_what_is_missing(ray_session, model, tmp_path):
    root, model_path, local = model
    out = tmp_path / "ray"
    control = RunControl(stop_note="x")

    def stop_after_four(phase: str, done: int, total: int | None) -> None:
        if phase == "inference" and done >= 4:
            control.request_stop()

    control.observer = stop_after_four
    archive = {"report": False, "visualization": {"report_images": False}}
    with pytest.raises(Interrupted, match="--resume scores the rest"):
        _ray(model_path, root, out, control=control, actors=1, **archive)
    assert not (out / "results.csv").exists()
    assert len(list((out / "results.parts").glob("part-*.parquet"))) == 1  # the first 4 images, saved
    with pytest.raises(ConfigError, match="add --resume to continue it"):
        _ray(model_path, root, out, actors=1, **archive)
    with pytest.raises(ConfigError, match="had another image_threshold"):
        _ray(model_path, root, out, actors=1, resume=True, image_threshold=0.6, **archive)
    result = _ray(model_path, root, out, actors=1, resume=True, **archive)
    assert result.summary["ray"]["resumed_images"] == 4 and result.summary["ray"]["scored_images"] == 6
    assert (out / "results.csv").read_bytes() == (local / "results.csv").read_bytes()
    assert json.loads((out / "metrics.json").read_text())["metrics"]["image_AUROC"] == json.loads(
        (local / "metrics.json").read_text())["metrics"]["image_AUROC"]
    assert len(_parquet_rows(out / "results.parquet")) == 10 and not (out / "results.parts").exists()


def test_a_model_the_actors_cannot_open_is_one_line(ray_session, model, cli, tmp_path):
    """The error an actor raises while opening the model reaches the user as itself, in one line."""
    root, model_path, _ = model
    (ray_session / "unopenable").write_text(f"{model_path}: a model file (model.pt) needs PyTorch, which is not "
                                            "installed here")
    try:
        result = cli("inference", "--model-path", model_path, "--image-path", root, "--save-path", tmp_path / "out",
                     "--quiet", "--no-pictures", "--engine", "ray", "--actors", "1")
    finally:
        (ray_session / "unopenable").unlink()
    assert result.exit_code == 1
    expected = f"Error: {model_path}: a model file (model.pt) needs PyTorch, which is not installed here"
    assert result.err.strip().splitlines() == [expected]
    assert not (tmp_path / "out" / "results.parts").exists()  # nothing was saved: nothing to resume


def test_ray_refusals_are_one_line(cli, tmp_path, monkeypatch):
    """No Ray, a cluster out of reach, nodes that cannot read the model, options without --engine ray."""
    model_args = ["inference", "--model-path", tmp_path / "model.pt", "--image-path", tmp_path, "--quiet"]
    monkeypatch.setitem(sys.modules, "ray", None)
    missing = cli(*model_args, "--engine", "ray")
    assert missing.exit_code == 1
    assert missing.err.strip() == ("Error: --engine ray needs Ray Data (ray is not installed): "
                                   "pip install 'hamacho[ray]'")
    monkeypatch.delitem(sys.modules, "ray")
    usage = cli(*model_args, "--actors", "2", "--resume")
    assert usage.exit_code == 2 and "Error: --actors and --resume need --engine ray" in usage.err


def test_an_unreachable_cluster_is_one_line(model, cli, tmp_path):
    require_ray()
    root, model_path, _ = model
    port = free_port()  # nothing listens there
    result = cli("inference", "--model-path", model_path, "--image-path", root, "--save-path",
                 tmp_path / "out", "--quiet", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert result.err.strip().splitlines() == [
        (f"Error: cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused (is it running? "
         "`ray status` on its head node shows it)")]


def test_nodes_that_cannot_read_the_model_are_named(ray_session):
    from hamacho.ray_engine.connection import RayEngineError, check_nodes_read

    expected = (r"node .* cannot read /nonexistent/model.pt: No such file or directory; every node that runs "
                "actors needs the model")
    with pytest.raises(RayEngineError, match=expected):
        check_nodes_read(["/nonexistent/model.pt"], cpus=1, gpus=0, skip_own_node=False)


def test_help_imports_neither_ray_nor_torch():
    code = ("import sys\nfrom hamacho.cli import main\ntry:\n    main(['inference', '--help'])\n"
            "except SystemExit:\n    pass\nprint([m for m in ('ray', 'pyarrow', 'torch', 'pandas') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            check=False)
    assert "--engine [local|ray]" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


def test_a_file_list_is_an_input_of_the_local_engine_too(tmp_path):
    """CSV lists keep their labels (metrics follow); text lists give unknown labels."""
    from hamacho.data.discovery import discover_inference_inputs

    root = make_dataset(tmp_path / "parts", n_train=1, n_good=2, n_defect=2, size=32)
    good = sorted((root / "test" / "good").glob("*.png"))
    bad = sorted((root / "test" / "scratch").glob("*.png"))
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"{p},good\n" for p in good) +
                                       "".join(f"{p.relative_to(tmp_path)},bad\n" for p in bad))
    samples, base = discover_inference_inputs(tmp_path / "list.csv")
    assert base == tmp_path and [s.label for s in samples] == [0, 0, 1, 1]
    assert samples[2].name == "parts/test/scratch/000" and samples[2].defect_type == "bad"
    (tmp_path / "list.txt").write_text(f"# archive\n{good[0]}\n\n{bad[0]}\n")
    samples, _ = discover_inference_inputs(tmp_path / "list.txt")
    assert [(s.label, s.defect_type) for s in samples] == [(None, "unknown"), (None, "unknown")]


class _FlakyRay:
    """``ray.init`` failing ``failures`` times the way Ray Client's per-session server does as it dies."""

    def __init__(self, failures: int, message: str = "Initialization failure from server:\n") -> None:
        self.failures, self.message, self.calls, self.shutdowns = failures, message, 0, 0

    def init(self, **kwargs) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionAbortedError(self.message)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize(("address", "failures", "message", "calls", "raised"), [
    ("ray://127.0.0.1:10001", 2, "Initialization failure from server:\n", 3, False),  # tried again: joined
    ("ray://127.0.0.1:10001", 3, "Initialization failure from server:\n", 3, True),  # at most 3 attempts
    ("127.0.0.1:6379", 1, "Initialization failure from server:\n", 1, True),  # not Ray Client: no retry
    ("ray://127.0.0.1:10001", 1, "Permission denied: bad token", 1, True),  # another failure: no retry
])
def test_ray_client_sessions_that_die_as_they_start_are_tried_again(address, failures, message, calls, raised):
    from hamacho.ray_engine.connection import _init

    ray = _FlakyRay(failures, message)
    if raised:
        with pytest.raises(ConnectionAbortedError):
            _init(ray, address, {})
    else:
        _init(ray, address, {})
    assert ray.calls == calls and ray.shutdowns == calls - 1
