"""The model registry: the one place that knows which models exist.

Each model is one module, ``hamacho/models/<name>.py``, that calls :func:`register` with a
:class:`ModelSpec` (display name, typed parameters dataclass, builder), plus its commented defaults in
``configs/<name>.yaml``. The packaged YAML files name the built-in models, so listing them (for
``hamacho train --help`` and option checks) imports neither torch nor the model code; a model's module
is imported the first time its spec is asked for. Other code (tests, plug-ins) may register more
models at run time.

Adding a model: write ``hamacho/models/<name>.py`` (a :class:`~hamacho.models.base.AnomalyModel`
subclass, a :class:`~hamacho.settings.ModelParams` subclass, a ``register(...)`` call) and
``configs/<name>.yaml``. Nothing else lists model names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from hamacho.errors import ConfigError

DEFAULT_MODEL = "padim"


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of Hamacho needs to know about one model.

    Attributes:
        name: Value of ``model.name`` and ``--model``.
        display_name: How reports and messages name it (``PaDiM``).
        params: Its :class:`~hamacho.settings.ModelParams` subclass: defaults and checks of ``model``.
        build: ``build(params, feature_extractor, image_size, seed)`` -> an untrained
            :class:`~hamacho.models.base.AnomalyModel`.
        config_file: Its commented defaults; None for the packaged ``configs/<name>.yaml``.
    """

    name: str
    display_name: str
    params: type
    build: Callable[..., Any]
    config_file: Path | None = None

    def config_text(self) -> str:
        """The commented YAML of this model's defaults."""
        if self.config_file is not None:
            return Path(self.config_file).read_text(encoding="utf-8")
        return resources.files("hamacho.configs").joinpath(f"{self.name}.yaml").read_text(encoding="utf-8")


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Make a model known by its name (registering the same name again replaces it).

    Returns:
        The spec, so a module can write ``SPEC = register(ModelSpec(...))``.
    """
    if not spec.name.isidentifier():
        raise ValueError(f"model name {spec.name!r} must be a Python identifier")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a model registered at run time (built-in models come back on their next use)."""
    _SPECS.pop(name, None)


def builtin_model_names() -> list[str]:
    """Models shipped with Hamacho: one per packaged ``configs/<name>.yaml``."""
    folder = resources.files("hamacho.configs")
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def model_names() -> list[str]:
    """Every model that can be trained: built-in and registered at run time, sorted."""
    return sorted(set(builtin_model_names()) | set(_SPECS))


def get_spec(name: str) -> ModelSpec:
    """The spec of a model, importing its module on first use.

    Raises:
        ConfigError: For a name no model has.
    """
    if name not in _SPECS and name in builtin_model_names():
        importlib.import_module(f"hamacho.models.{name}")
    if name not in _SPECS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(model_names())}")
    return _SPECS[name]


def display_name(name: str) -> str:
    """The model's display name, or ``name`` itself when no such model is known here."""
    try:
        return get_spec(name).display_name
    except (ConfigError, ImportError):
        return name
