"""Configuration: packaged defaults + user YAML + command-line overrides -> one validated DictConfig.

The defaults live in ``configs/<model>.yaml`` (installed as ``hamacho.configs``). Every key a user may
set is present there; anything else is refused with the list of valid keys.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hamacho.errors import ConfigError

MODEL_NAMES = ("padim", "patchcore")
BACKBONES = ("resnet18", "wide_resnet50_2")
LAYERS = ("layer1", "layer2", "layer3", "layer4")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def default_config(model_name: str) -> DictConfig:
    """Load the packaged defaults of one model.

    Args:
        model_name: ``padim`` or ``patchcore``.

    Returns:
        The defaults as a DictConfig.
    """
    if model_name not in MODEL_NAMES:
        raise ConfigError(f"unknown model '{model_name}'; choose one of: {', '.join(MODEL_NAMES)}")
    text = resources.files("hamacho.configs").joinpath(f"{model_name}.yaml").read_text(encoding="utf-8")
    return OmegaConf.create(text)


def load_yaml(path: str | Path) -> DictConfig:
    """Read a user YAML file, refusing anything that is not a readable mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config path is a folder, expected a YAML file: {path}")
    try:
        loaded = OmegaConf.load(path)
    except (OmegaConfBaseException, ValueError, OSError) as exc:  # yaml errors subclass ValueError? not always
        raise ConfigError(f"cannot read config file {path}: {_first_line(exc)}") from exc
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {path} is not valid YAML: {_first_line(exc)}") from exc
    if loaded is None:
        return OmegaConf.create({})
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping of sections (model:, dataset:, ...)")
    return loaded


def parse_overrides(items: Iterable[str]) -> DictConfig:
    """Turn ``key=value`` strings (values parsed as YAML) into a nested DictConfig."""
    items = list(items)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"unexpected argument '{item}'; config overrides look like key=value")
    try:
        return OmegaConf.from_dotlist(items)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides {' '.join(items)}: {_first_line(exc)}") from exc


def merge_checked(base: DictConfig, update: Mapping | DictConfig, source: str) -> DictConfig:
    """Merge ``update`` into ``base``, refusing keys that ``base`` does not have.

    Args:
        base: The configuration holding every valid key.
        update: Values to apply.
        source: Where ``update`` came from, for error messages.

    Returns:
        A new merged DictConfig.
    """
    update = OmegaConf.create(dict(update)) if not isinstance(update, DictConfig) else update
    _check_keys(base, update, prefix="", source=source)
    return OmegaConf.merge(base, update)


def build_config(
    model_name: str | None,
    config_file: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> DictConfig:
    """Assemble and validate the effective training configuration.

    Args:
        model_name: Model chosen on the command line, or None to take it from the config file (default padim).
        config_file: Optional user YAML.
        options: Dotted keys set by named command-line options (None values are skipped).
        overrides: ``key=value`` strings, applied last.

    Returns:
        The validated configuration.
    """
    user = load_yaml(config_file) if config_file else OmegaConf.create({})
    file_model = OmegaConf.select(user, "model.name")
    name = model_name or file_model or "padim"
    if model_name and file_model and model_name != file_model:
        raise ConfigError(f"--model {model_name} contradicts model.name: {file_model} in {config_file}")
    cfg = default_config(str(name))
    cfg = merge_checked(cfg, user, source=str(config_file))
    dotted = {k: v for k, v in (options or {}).items() if v is not None}
    cfg = merge_checked(cfg, OmegaConf.from_dotlist([f"{k}={_yaml_scalar(v)}" for k, v in dotted.items()]), "options")
    cfg = merge_checked(cfg, parse_overrides(overrides), source="command line")
    if cfg.model.name != name:
        raise ConfigError(f"model.name cannot be changed by an override; use --model {cfg.model.name}")
    return validate_config(cfg)


def _yaml_scalar(value: Any) -> str:
    """Render a value for a dotlist so that paths and strings survive YAML parsing."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _check_keys(base: DictConfig, update: DictConfig, prefix: str, source: str) -> None:
    for key in update.keys():
        dotted = f"{prefix}{key}"
        if key not in base:
            valid = ", ".join(str(k) for k in base.keys())
            where = f"in section '{prefix[:-1]}'" if prefix else "at the top level"
            raise ConfigError(f"unknown config key '{dotted}' ({source}); valid keys {where}: {valid}")
        if isinstance(base[key], DictConfig):
            if not isinstance(update[key], DictConfig):
                raise ConfigError(f"config key '{dotted}' ({source}) must be a section, not a value")
            _check_keys(base[key], update[key], prefix=f"{dotted}.", source=source)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- validation -----------------------------------------------------------------------------------------

Check = Callable[[Any], str | None]


def _int(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            return "must be an integer" + (" or null" if nullable else "")
        if lo is not None and v < lo:
            return f"must be at least {lo}"
        if hi is not None and v > hi:
            return f"must be at most {hi}"
        return None

    return check


def _float(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "must be a number"
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return f"must be {'greater than' if lo_open else 'at least'} {lo}"
        if hi is not None and v > hi:
            return f"must be at most {hi}"
        return None

    return check


def _choice(options: Iterable[str]) -> Check:
    options = tuple(options)
    return lambda v: None if v in options else f"must be one of: {', '.join(options)}"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _str(nullable: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        return None if isinstance(v, str) and v else "must be a non-empty string"

    return check


def _layers(v: Any) -> str | None:
    if not isinstance(v, (list, ListConfig)) or not v:
        return "must be a non-empty list such as [layer1, layer2, layer3]"
    if any(layer not in LAYERS for layer in v):
        return f"may only hold {', '.join(LAYERS)}"
    if list(v) != sorted(set(v)):
        return "must list distinct layers from shallow to deep"
    return None


def _image_size(v: Any) -> str | None:
    problem = _int(lo=32)(v)
    if problem is None and v % 32:
        return "must be a positive multiple of 32 (the backbone's stride)"
    return problem


def max_num_workers() -> int:
    """Most data-loading workers allowed here: cpu_count - 2 on Linux, none elsewhere."""
    if not sys.platform.startswith("linux"):
        return 0
    return max((os.cpu_count() or 1) - 2, 0)


def _num_workers(v: Any) -> str | None:
    problem = _int(lo=0)(v)
    if problem:
        return problem
    if v and not sys.platform.startswith("linux"):
        return "data-loading workers are only supported on Linux; use 0"
    limit = max_num_workers()
    if v > limit:
        return f"is {v} but at most {limit} is allowed here (cpu_count {os.cpu_count()} - 2)"
    return None


_CHECKS: dict[str, Check] = {
    "model.name": _choice(MODEL_NAMES),
    "model.backbone": _choice(BACKBONES),
    "model.backbone_weights": _str(),
    "model.layers": _layers,
    "model.num_features": _int(lo=1, nullable=True),
    "model.covariance_epsilon": _float(lo=0.0, lo_open=True),
    "model.blur_sigma": _float(lo=0.0),
    "model.projection_dim": _int(lo=1, nullable=True),
    "model.coreset_ratio": _float(lo=0.0, hi=1.0, lo_open=True),
    "model.coreset_projection_dim": _int(lo=0),
    "model.num_neighbors": _int(lo=1),
    "model.memory_budget_mb": _int(lo=1),
    "model.search_pruning_dim": _int(lo=0),
    "dataset.root": _str(nullable=True),
    "dataset.image_size": _image_size,
    "dataset.batch_size": _int(lo=1),
    "dataset.num_workers": _num_workers,
    "dataset.calibration_split": _float(lo=0.0, hi=0.9, lo_open=True),
    "threshold.fallback_sigma": _float(lo=0.0),
    "visualization.report_images": _bool,
    "visualization.save_heatmap": _bool,
    "visualization.save_segmentation": _bool,
    "visualization.only_wrong": _bool,
    "visualization.heatmap_alpha": _float(lo=0.0, hi=1.0),
    "report.enabled": _bool,
    "report.examples": _int(lo=0, hi=50),
    "report.pixel_sample": _int(lo=0),
    "project.seed": _int(lo=0, hi=2**32 - 1),
    "project.result_path": _str(),
    "trainer.accelerator": _choice(ACCELERATORS),
}


def validate_config(cfg: DictConfig) -> DictConfig:
    """Check every known key's type and range; raise ConfigError naming the first bad key."""
    if OmegaConf.select(cfg, "model.backbone_weights") is None:
        cfg.model.backbone_weights = "none"
    for key, check in _CHECKS.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"config key '{key}' cannot be resolved: {_first_line(exc)}") from exc
        if value is None and OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            continue  # key belongs to the other model
        problem = check(value)
        if problem:
            raise ConfigError(f"config key '{key}' {problem} (got {value!r})")
    return cfg
