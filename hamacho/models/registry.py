"""The model registry: the one place that knows which models exist.

A model is a :class:`ModelSpec`: its name, display name, typed parameters dataclass (defaults, checks
and help of its ``model`` section) and builder. The built-in models are registered here with their
parameters from :mod:`hamacho.models.params`, which needs no torch, and their builders named as
``"module:function"``, imported on first use: listing models, their parameters and defaults (CLI help,
option checks, the service's ``/options``, the docs) never imports torch or the models' code. Other code
(tests, plug-ins) may register more models at run time.

Adding a model: write ``hamacho/models/<name>.py`` (a :class:`~hamacho.models.base.AnomalyModel`
subclass and its builder), its parameters class in :mod:`hamacho.models.params`, and one
:func:`register` call below; then ``python -m hamacho.config_reference`` writes its
``configs/<name>.yaml`` and the docs' reference. Nothing else lists model names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hamacho.errors import ConfigError
from hamacho.models.params import PadimParams, PatchcoreParams

DEFAULT_MODEL = "padim"


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of Hamacho needs to know about one model.

    Attributes:
        name: Value of ``model.name`` and ``--model``.
        display_name: How reports, forms and messages name it (``PaDiM``).
        params: Its :class:`~hamacho.settings.ModelParams` subclass: defaults, checks and help of ``model``.
        build: ``build(params, feature_extractor, image_size, seed)`` -> an untrained
            :class:`~hamacho.models.base.AnomalyModel`, or ``"module:function"`` naming it (imported on
            first use).
    """

    name: str
    display_name: str
    params: type
    build: Callable[..., Any] | str

    @property
    def summary(self) -> str:
        """One line on what the model is (its parameters class's docstring)."""
        return " ".join((self.params.__doc__ or "").strip().split("\n\n")[0].split())

    def builder(self) -> Callable[..., Any]:
        """The build function, imported when named as ``"module:function"``."""
        if callable(self.build):
            return self.build
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)


# The models shipped with Hamacho.
BUILTIN_MODELS = {spec.name: spec for spec in (
    ModelSpec(name="padim", display_name="PaDiM", params=PadimParams, build="hamacho.models.padim:build_padim"),
    ModelSpec(name="patchcore", display_name="PatchCore", params=PatchcoreParams,
              build="hamacho.models.patchcore:build_patchcore"),
)}
_SPECS: dict[str, ModelSpec] = {}  # registered (built-in ones on first use, others at run time)


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
    """Models shipped with Hamacho."""
    return sorted(BUILTIN_MODELS)


def model_names() -> list[str]:
    """Every model that can be trained: built-in and registered at run time, sorted."""
    return sorted(set(BUILTIN_MODELS) | set(_SPECS))


def get_spec(name: str) -> ModelSpec:
    """The spec of a model (built-in ones come back after :func:`unregister`).

    Raises:
        ConfigError: For a name no model has.
    """
    if name not in _SPECS and name in BUILTIN_MODELS:
        register(BUILTIN_MODELS[name])
    if name not in _SPECS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(model_names())}")
    return _SPECS[name]


def display_name(name: str) -> str:
    """The model's display name, or ``name`` itself when no such model is known here."""
    try:
        return get_spec(name).display_name
    except ConfigError:
        return name

