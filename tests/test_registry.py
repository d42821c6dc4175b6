"""The model registry: a third model, registered in one place, trains and infers through the CLI."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass

import pytest
import torch
from omegaconf import OmegaConf

from hamacho.config import build_config, settings_to_dict
from hamacho.config_reference import render_yaml
from hamacho.errors import ConfigError
from hamacho.models.base import AnomalyModel
from hamacho.models.registry import ModelSpec, get_spec, model_names, register, unregister
from hamacho.settings import ModelParams, layers_field, setting
from tests.conftest import FAST, make_dataset


@dataclass
class ToyParams(ModelParams):
    name: str = "toy"
    layers: list[str] = layers_field(["layer1"])
    blur_sigma: float = setting(2.0, at_least=0.0)
    power: float = setting(2.0, above=0.0, help="The distance is the L-power norm.")


class ToyModel(AnomalyModel):
    def __init__(self, extractor, image_size: int, power: float, blur_sigma: float) -> None:
        super().__init__(extractor, image_size, blur_sigma)
        self.power = power
        side = image_size // 4
        self.register_buffer("total", torch.zeros(extractor.out_channels[0], side, side))
        self.register_buffer("count", torch.zeros(()))

    def update(self, images: torch.Tensor) -> None:
        self.total += self.feature_extractor(images)[0].sum(dim=0)
        self.count += images.shape[0]

    def fit(self, phase=None) -> None:
        self.total /= self.count
        if phase is not None:
            phase.advance()

    def patch_scores(self, images: torch.Tensor):
        features = self.feature_extractor(images)[0]
        return torch.linalg.vector_norm(features - self.total, ord=self.power, dim=1), None


def build_toy(params: ToyParams, extractor, image_size: int, seed: int) -> ToyModel:
    return ToyModel(extractor, image_size, params.power, params.blur_sigma)


@pytest.fixture
def toy():
    spec = register(ModelSpec(name="toy", display_name="Toy distance", params=ToyParams, build=build_toy))
    yield spec
    unregister("toy")


def test_a_registered_model_trains_and_infers_through_the_cli(toy, cli, tmp_path):
    assert "toy" in model_names() and get_spec("toy") is toy
    # Its YAML documents its defaults with their help, like the built-in models' (see test_config).
    rendered = render_yaml("toy")
    assert OmegaConf.to_container(OmegaConf.create(rendered)) == settings_to_dict(build_config("toy"))
    assert "  power: 2.0" in rendered and "# The distance is the L-power norm." in rendered
    root = make_dataset(tmp_path / "parts", n_train=8, n_good=3, n_defect=3)
    options = [o for o in FAST if o != "--no-report"]
    result = cli("train", "--model", "toy", "--dataset-root", root, "--result-path", tmp_path / "out", *options,
                 "model.power=1.0")
    assert result.exit_code == 0, result.err
    run_dir = tmp_path / "out" / "toy" / "parts"
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["model"] == "toy" and summary["metrics"]["image_AUROC"] == 1.0
    assert "Trained toy (resnet18)" in result.out
    assert "<title>Toy distance training report" in (run_dir / "report.html").read_text()
    assert OmegaConf.load(run_dir / "config.yaml").model.power == 1.0

    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", root, "--save-path",
                 tmp_path / "inf", "--quiet", "--no-report")
    assert result.exit_code == 0, result.err
    with open(run_dir / "results.csv") as a, open(tmp_path / "inf" / "results.csv") as b:
        trained, inferred = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["raw_score"] for r in trained] == [r["raw_score"] for r in inferred]
    assert [r["decision"] for r in inferred] == ["OK"] * 3 + ["NG"] * 3


def test_its_parameters_are_typed_and_checked(toy):
    with pytest.raises(ConfigError, match="config key 'model.power' must be greater than 0.0 .got 0.0"):
        build_config("toy", overrides=["model.power=0"])
    with pytest.raises(ConfigError, match="unknown config key 'model.coreset_ratio'"):
        build_config("toy", overrides=["model.coreset_ratio=0.1"])


def test_unknown_models_are_refused_with_the_list(cli, tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'toy'; choose one of: padim, patchcore"):
        get_spec("toy")
    result = cli("train", "--model", "toy", "--dataset-root", tmp_path)
    assert result.exit_code == 2
    assert "Invalid value for '--model': 'toy' is not one of 'padim', 'patchcore'" in result.err
