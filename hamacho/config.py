"""Configuration: typed defaults + user YAML + command-line overrides -> validated :class:`Settings`.

The defaults are the dataclasses of :mod:`hamacho.settings` and each model's parameters class (see
:mod:`hamacho.models.registry`); ``configs/<model>.yaml`` documents them. Values are merged with
OmegaConf structured configs, which enforce the types; :func:`hamacho.settings.validate` enforces
bounds and choices. Every problem is one :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hamacho.errors import ConfigError, first_line
from hamacho.models.registry import DEFAULT_MODEL, get_spec
from hamacho.settings import (
    ModelParams,
    Settings,
    check_framing,
    iter_settings,
    max_num_workers,
    type_words,
    validate,
)

__all__ = [
    "build_config",
    "default_settings",
    "load_yaml",
    "max_num_workers",
    "settings_from_dict",
    "settings_to_dict",
]


# Keys earlier versions wrote into model files that no longer exist (their model files still load).
RETIRED_KEYS = frozenset({"threshold.fallback_sigma"})  # replaced by threshold.target_fpr (good-image rule)


def default_settings(model_name: str) -> Settings:
    """The defaults of one model, as typed settings.

    Raises:
        ConfigError: For an unknown model name.
    """
    return Settings(model=get_spec(model_name).params())


def load_yaml(path: str | Path) -> DictConfig:
    """Read a user YAML file, refusing anything that is not a readable mapping."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config path is a folder, expected a YAML file: {path}")
    try:
        loaded = OmegaConf.load(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {path} is not valid YAML: {first_line(exc)}") from exc
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
        raise ConfigError(f"cannot parse overrides {' '.join(items)}: {first_line(exc)}") from exc


def merge_checked(base: DictConfig, update: Mapping | DictConfig, source: str) -> DictConfig:
    """Merge ``update`` into the structured ``base``, refusing unknown keys and values of the wrong type.

    Args:
        base: Structured config holding every valid key.
        update: Values to apply.
        source: Where ``update`` came from, for error messages.

    Returns:
        A new merged config.
    """
    update = update if isinstance(update, DictConfig) else OmegaConf.create(dict(update))
    _check_keys(base, update, prefix="", source=source)
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as exc:
        key = str(getattr(exc, "full_key", "") or "")
        value = OmegaConf.select(update, key, default=None) if key else None
        raise ConfigError(f"config key '{key}' {_expected(base, key)} (got {value!r}; {source})") from exc


def build_config(
    model_name: str | None,
    config_file: str | Path | None = None,
    options: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Assemble and validate the effective training configuration.

    Precedence, lowest first: the model's defaults, ``config_file``, ``options``, ``overrides``.

    Args:
        model_name: Model chosen on the command line, or None to take it from the config file (else padim).
        config_file: Optional user YAML.
        options: Dotted keys set by named command-line options (None values are skipped).
        overrides: ``key=value`` strings, applied last.

    Returns:
        The validated settings.
    """
    user = load_yaml(config_file) if config_file else OmegaConf.create({})
    file_model = OmegaConf.select(user, "model.name", default=None)
    name = model_name or file_model or DEFAULT_MODEL
    if model_name and file_model and model_name != file_model:
        raise ConfigError(f"--model {model_name} contradicts model.name: {file_model} in {config_file}")
    cfg = OmegaConf.structured(default_settings(str(name)))
    cfg = merge_checked(cfg, user, source=str(config_file))
    dotted = [f"{key}={_yaml_scalar(value)}" for key, value in (options or {}).items() if value is not None]
    cfg = merge_checked(cfg, OmegaConf.from_dotlist(dotted), "options")
    cfg = merge_checked(cfg, parse_overrides(overrides), source="command line")
    if cfg.model.name != name:
        raise ConfigError(f"model.name cannot be changed by an override; use --model {cfg.model.name}")
    return _finish(cfg, resolve_layers=True)


def settings_from_dict(data: Mapping[str, Any], source: str, generic_model: bool = False) -> Settings:
    """Rebuild validated settings from :func:`settings_to_dict`'s output (a model file's ``config``).

    Keys missing from ``data`` (written by an older version) take today's defaults; keys an older version
    wrote that no longer exist (:data:`RETIRED_KEYS`) are dropped.

    Args:
        data: The stored configuration.
        source: Where it comes from, for error messages.
        generic_model: Keep only the ``model`` keys every model has (:class:`~hamacho.settings.ModelParams`),
            without importing the model's code (and torch): for exported models, whose own parameters
            live in their graph (and stay readable in their metadata).

    Raises:
        ConfigError: For an unknown model, unknown keys or invalid values.
    """
    name = (data.get("model") or {}).get("name")
    if not isinstance(name, str):
        raise ConfigError(f"{source} names no model")
    data = {section: ({k: v for k, v in values.items() if f"{section}.{k}" not in RETIRED_KEYS}
                      if isinstance(values, Mapping) else values) for section, values in data.items()}
    if generic_model:
        common = {item.name for item in dataclasses.fields(ModelParams)}
        data = {**data, "model": {k: v for k, v in data["model"].items() if k in common}}
        base = Settings(model=ModelParams(name=name))
    else:
        base = default_settings(name)
    return _finish(merge_checked(OmegaConf.structured(base), OmegaConf.create(dict(data)), source),
                   resolve_layers=not generic_model)


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain, JSON-serialisable dict of the settings (for the model file and config.yaml)."""
    return dataclasses.asdict(settings)


def _finish(cfg: DictConfig, resolve_layers: bool) -> Settings:
    settings: Settings = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    _parse_text_values(settings)
    if settings.model.backbone_weights is None:
        settings.model.backbone_weights = "none"
    validate(settings)
    check_framing(settings.dataset)
    if settings.threshold.method == "manual" and settings.threshold.image is None:
        raise ConfigError("threshold.method manual needs threshold.image, the raw image threshold "
                          "(threshold.pixel is optional)")
    if settings.threshold.method == "balanced" and settings.threshold.synthetic_images == 0:
        raise ConfigError("threshold.method balanced needs threshold.synthetic_images > 0: the threshold is "
                          "placed between the good images' scores and those of synthetic defects")
    if resolve_layers:
        _resolve_layers(settings.model)
    return settings


def _parse_text_values(settings: Settings) -> None:
    """Text given for a key that has its own parser (sizes: ``256x320``) becomes its value, wherever it came
    from (a YAML file, ``key=value``, a service job's parameters)."""
    for info in iter_settings(settings):
        section_key, _, name = info.key.rpartition(".")
        section = settings
        for part in section_key.split("."):
            section = getattr(section, part)
        value = getattr(section, name)
        if info.parse is not None and isinstance(value, str):
            try:
                setattr(section, name, info.parse(value))
            except ValueError as exc:
                raise ConfigError(f"config key '{info.key}' {exc}") from exc


def _resolve_layers(params: ModelParams) -> None:
    """``layers: null`` -> the backbone's layers at the model's strides; given layers must exist, in order."""
    from hamacho.models.backbone import check_layers, default_layers

    if params.layers is None:
        params.layers = default_layers(params.backbone, type(params).LAYER_STRIDES)
        return
    problem = check_layers(params.backbone, params.layers)
    if problem:
        raise ConfigError(f"config key 'model.layers' {problem} (got {params.layers})")


def _yaml_scalar(value: Any) -> str:
    """Render a value for a dotlist so that paths and strings survive YAML parsing."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def _check_keys(base: DictConfig, update: DictConfig, prefix: str, source: str) -> None:
    for key in update:
        dotted = f"{prefix}{key}"
        if key not in base:
            valid = ", ".join(str(k) for k in base)
            where = f"in section '{prefix[:-1]}'" if prefix else "at the top level"
            raise ConfigError(f"unknown config key '{dotted}' ({source}); valid keys {where}: {valid}")
        if isinstance(base[key], DictConfig):
            if not isinstance(update[key], DictConfig):
                raise ConfigError(f"config key '{dotted}' ({source}) must be a section, not a value")
            _check_keys(base[key], update[key], prefix=f"{dotted}.", source=source)


def _expected(base: DictConfig, key: str) -> str:
    """What a key's declared type asks for, in words."""
    section, _, name = key.rpartition(".")
    node = OmegaConf.select(base, section) if section else base
    object_type = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if object_type is not None and dataclasses.is_dataclass(object_type):
        for item in dataclasses.fields(object_type):
            if item.name == name:
                return type_words(item.type)
    return "has a value of the wrong type"
