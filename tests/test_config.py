"""Configuration: defaults, precedence, unknown keys and bad values."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hamacho.config import build_config, max_num_workers, settings_from_dict, settings_to_dict
from hamacho.errors import ConfigError
from hamacho.models.registry import builtin_model_names, get_spec
from hamacho.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_default_is_valid_and_documented_in_its_yaml():
    assert builtin_model_names() == ["padim", "patchcore"]
    for name in builtin_model_names():
        settings = build_config(name)
        assert settings.model.name == name
        assert settings.dataset.image_size == 256 and settings.dataset.num_workers == 0
        # configs/<name>.yaml documents exactly the defaults of the typed settings: same keys, same values.
        documented = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / f"{name}.yaml"))
        assert documented == settings_to_dict(Settings(model=get_spec(name).params()))
    # layers: null resolves to the backbone's layers at the model's strides.
    assert build_config("padim").model.layers == ["layer1", "layer2", "layer3"]
    assert build_config("patchcore").model.layers == ["layer2", "layer3"]
    assert build_config("patchcore", options={"model.backbone": "mobilenet_v2"}).model.layers == [
        "features.6", "features.13"]
    assert build_config("padim").model.num_features is None


def test_settings_round_trip_through_a_plain_dict():
    settings = build_config("patchcore", overrides=["model.coreset_ratio=0.02", "dataset.root=/data/x"])
    assert settings_from_dict(settings_to_dict(settings), "test") == settings
    older = settings_to_dict(settings)
    del older["report"]  # a file from a version without this section: today's defaults fill in
    assert settings_from_dict(older, "test").report == build_config("patchcore").report
    with pytest.raises(ConfigError, match="unknown config key 'model.colour'"):
        settings_from_dict({**older, "model": {**older["model"], "colour": "red"}}, "test")


def test_precedence_file_then_options_then_overrides(tmp_path):
    user = tmp_path / "my.yaml"
    user.write_text("dataset:\n  batch_size: 4\n  image_size: 128\nmodel:\n  backbone: wide_resnet50_2\n")
    cfg = build_config("padim", user, {"dataset.image_size": 64, "dataset.root": "/data/x y"},
                       ["dataset.image_size=96", "visualization.only_wrong=true"])
    assert cfg.dataset.batch_size == 4  # from the file
    assert cfg.model.backbone == "wide_resnet50_2"
    assert cfg.dataset.image_size == 96  # key=value wins over the named option
    assert cfg.dataset.root == "/data/x y"
    assert cfg.visualization.only_wrong is True


def test_model_comes_from_the_config_file(tmp_path):
    user = tmp_path / "pc.yaml"
    user.write_text("model:\n  name: patchcore\n")
    assert build_config(None, user).model.coreset_ratio == 0.1
    with pytest.raises(ConfigError, match="contradicts"):
        build_config("padim", user)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.bach_size=3"], ("unknown config key 'dataset.bach_size' .*valid keys in section 'dataset': root, "
                                   "image_size, keep_aspect, crop, circle, valid_area_mask, tiling, batch_size")),
        (["foo.bar=1"], "unknown config key 'foo'"),
        (["dataset.image_size=100"], "positive multiple of 32"),
        (["dataset.image_size=0"], "must be at least 32"),
        (["dataset.batch_size=0"], "dataset.batch_size' must be at least 1"),
        (["model.backbone=vgg"], "must be one of: resnet18, resnet34"),
        (["model.layers=[layer3,layer1]"], "shallow to deep"),
        (["model.layers=[layer1,features.3]"], ("has no layer 'features.3' in resnet18; valid layers: layer1 .stride 4, "
                                                "64 ch., layer2")),
        (["visualization.only_wrong=maybe"], "true or false"),
        (["dataset.batch_size=many"], "dataset.batch_size' must be an integer .got 'many'"),
        (["model.blur_sigma=[1,2]"], "model.blur_sigma' must be a number"),
        (["model.num_features=1.5"], "must be an integer or null"),
        (["model.layers=layer1"], "model.layers' must be a list"),
        (["model.coreset_ratio=0"], "greater than 0"),
        (["dataset"], "look like key=value"),
        (["model.name=patchcore"], "cannot be changed"),
    ],
)
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config("padim" if "coreset" not in overrides[0] else "patchcore", overrides=overrides)


def test_bad_yaml_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        build_config("padim", broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        build_config("padim", listing)
    with pytest.raises(ConfigError, match="config file not found"):
        build_config("padim", tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        build_config("padim", tmp_path)


def test_num_workers_capped_at_cpu_count_minus_two():
    limit = max_num_workers()
    assert build_config("padim", overrides=[f"dataset.num_workers={limit}"]).dataset.num_workers == limit
    with pytest.raises(ConfigError, match=f"at most {limit} is allowed"):
        build_config("padim", overrides=[f"dataset.num_workers={limit + 1}"])
