"""One home for each setting: the CLI, the service's /options and job checks, and the docs derive from it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from hamacho.config import build_config
from hamacho.config_reference import main as reference_main
from hamacho.config_reference import render_reference, render_yaml
from hamacho.errors import ConfigError
from hamacho.models.params import PadimParams
from hamacho.models.registry import BUILTIN_MODELS, get_spec, register, unregister
from hamacho.settings import setting
from tests.conftest import FAST, make_dataset


def test_generated_yaml_and_reference_are_up_to_date(capsys):
    code = reference_main(["--check"])
    assert code == 0, capsys.readouterr().err  # else: python -m hamacho.config_reference


@dataclass
class PadimWithHalo(PadimParams):
    """PaDiM with one more parameter, as a developer would add it to PadimParams."""

    halo_px: int = setting(3, at_least=0, help="Pixels of halo ignored around each patch. Purely a test.")


@pytest.fixture
def padim_with_halo():
    builtin = BUILTIN_MODELS["padim"]
    register(type(builtin)(name="padim", display_name=builtin.display_name, params=PadimWithHalo,
                           build=builtin.build))
    yield
    unregister("padim")  # the built-in comes back on its next use


def test_a_new_model_parameter_reaches_every_surface(padim_with_halo, cli, tmp_path):
    from fastapi.testclient import TestClient

    from hamacho.serve.app import create_app
    from hamacho.serve.service_config import ServiceConfig

    # the CLI help lists it with its default and the first sentence of its help
    result = cli("train", "--help")
    assert result.exit_code == 0
    help_text = " ".join(result.out.split())
    assert "model.halo_px=3 Pixels of halo ignored around each patch." in help_text
    # the configuration reference and the model's YAML file
    assert "| `model.halo_px` | `3` | integer >= 0 |  | Pixels of halo ignored" in render_reference()
    assert "  halo_px: 3                     # Pixels of halo ignored around each patch." in render_yaml("padim")
    # it is a real, checked key
    assert build_config("padim", overrides=["model.halo_px=5"]).model.halo_px == 5
    with pytest.raises(ConfigError, match="config key 'model.halo_px' must be at least 0"):
        build_config("padim", overrides=["model.halo_px=-1"])
    # the service: /options describes it, and a job with a bad value is refused before queueing
    config = ServiceConfig(data_dir=tmp_path / "data")
    with TestClient(create_app(config, start_jobs=False)) as client:
        options = client.get("/api/v1/options").json()
        described = {s["key"]: s for s in options["settings"]["padim"]}["model.halo_px"]
        assert described["default"] == 3 and described["type"] == "int" and described["minimum"] == 0
        assert described["summary"] == "Pixels of halo ignored around each patch."
        assert options["defaults"]["padim"]["model"]["halo_px"] == 3
        # the job schema in the OpenAPI document describes it too
        job = client.get("/openapi.json").json()["components"]["schemas"]["JobIn"]["properties"]["parameters"]
        assert job["properties"]["model.halo_px"] == {
            "description": "Pixels of halo ignored around each patch. Purely a test.", "default": 3, "type": "integer",
            "minimum": 0}
        assert "dataset.root" not in job["properties"]  # set by the service itself
        response = client.post("/api/v1/jobs", json={"model_tag": "h", "model": "padim", "image_ids": [1],
                                                     "parameters": {"model.halo_px": -1}})
        assert response.status_code == 400
        assert response.json()["error"].startswith("config key 'model.halo_px' must be at least 0")
    assert "halo_px" not in json.dumps(get_spec("patchcore").params().__dict__)


def test_image_size_as_height_by_width_from_the_cli(cli, tmp_path):
    root = make_dataset(tmp_path / "parts", n_train=6, n_good=2, n_defect=2)
    options = [o if o != "64" else "64x96" for o in FAST]
    result = cli("train", "--model", "padim", "--dataset-root", root, "--result-path", tmp_path / "out", *options)
    assert result.exit_code == 0, result.err
    summary = json.loads((tmp_path / "out" / "padim" / "parts" / "metrics.json").read_text())
    assert summary["image_size"] == summary["input_size"] == [64, 96]
    result = cli("train", "--dataset-root", root, "--image-size", "64x100", "--result-path", tmp_path / "o2")
    assert result.exit_code == 1
    assert result.err.strip() == ("Error: config key 'dataset.image_size' must be a positive multiple of 32 "
                                  "(the backbone's stride) (got [64, 100])")
    result = cli("train", "--dataset-root", root, "--image-size", "wide")
    assert result.exit_code == 2 and "Invalid value for '--image-size': 'wide' is not a size" in result.err


@pytest.mark.parametrize(("text", "value"), [("256", 256), ("256x320", [256, 320]), ("256,320", [256, 320]),
                                             ("[256, 320]", [256, 320]), ("256 X 320", [256, 320])])
def test_size_spellings(text, value):
    assert build_config("padim", overrides=[f"dataset.image_size='{text}'"]).dataset.image_size == value
