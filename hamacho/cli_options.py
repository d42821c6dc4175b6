"""``hamacho train``'s options, derived from the settings classes (:mod:`hamacho.setting_fields`).

Every setting with a named option becomes a click option with that setting's help, type or parser, and
its default per model; ``--model`` lists the registry's models; the help ends with each model's own keys.
Nothing here lists a key, a default or a model by hand. No torch: ``hamacho --help`` stays light.
"""

from __future__ import annotations

from typing import Any

import click

from hamacho.models.registry import model_names
from hamacho.settings import SettingInfo


class ModelChoice(click.Choice):
    """``--model``: the registry's model names, looked up when the option is used (not at import)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(model_names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ assigns it; the registry is the source
        pass


class SettingValue(click.ParamType):
    """A named option's value, read by its setting's own parser (e.g. sizes: ``256``, ``256x320``)."""

    def __init__(self, info: SettingInfo) -> None:
        self.info = info
        self.name = info.metavar or info.type

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.info.parse(value)  # type: ignore[misc]
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def named_settings() -> list[tuple[SettingInfo, dict[str, Any]]]:
    """The settings that have a named ``hamacho train`` option, each with its default per model."""
    from hamacho.config_reference import model_settings

    found: dict[str, tuple[SettingInfo, dict[str, Any]]] = {}
    for name in model_names():
        for info in model_settings(name):
            if info.option and info.key != "model.name":
                found.setdefault(info.key, (info, {}))[1][name] = info.default
    # where the data is first, then the model, then the rest (each in declaration order)
    return sorted(found.values(), key=lambda item: not item[0].key.startswith("dataset."))


def _option_param(info: SettingInfo) -> str:
    return "setting_" + info.key.replace(".", "__")


def _default_text(defaults: dict[str, Any]) -> str:
    from hamacho.config_reference import yaml_value

    values = {yaml_value(v) for v in defaults.values()}
    if values == {"null"}:
        return ""
    if len(values) == 1:
        return f" [{values.pop()}]"
    return " [" + ", ".join(f"{model}: {yaml_value(v)}" for model, v in defaults.items()) + "]"


def setting_options(command: Any) -> Any:
    """Add a click option for every setting with a named option (:func:`named_settings`)."""
    for info, defaults in reversed(named_settings()):
        param = _option_param(info)
        if info.type == "bool" and info.option.startswith("--no-"):
            option = click.option(info.option, param, is_flag=True, default=False,
                                  help=f"{info.help} ({info.key}=false)")
        else:
            kind = (click.Choice(info.choices) if info.choices else SettingValue(info) if info.parse
                    else {"int": click.INT, "float": click.FLOAT}.get(info.type, click.STRING))
            option = click.option(info.option, param, type=kind, default=None, metavar=info.metavar,
                                  help=f"{info.help} ({info.key}){_default_text(defaults)}")
        command = option(command)
    return command


def option_values(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys of the named options given (None: not given; ``--no-...`` flags set false)."""
    options = {}
    for info, _ in named_settings():
        value = values.pop(_option_param(info))
        if info.type == "bool" and info.option.startswith("--no-"):
            value = False if value else None
        options[info.key] = value
    return options


class TrainCommand(click.Command):
    """``hamacho train``, whose help ends with each model's own keys, read from the registry when shown."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from hamacho.config_reference import model_settings, yaml_value
        from hamacho.models.registry import get_spec

        common = {info.key for info in model_settings(model_names()[0]) if not info.key.startswith("model.")}
        with formatter.section("Each model's own keys (set as key=value; every key: docs/config-reference.md)"):
            for name in model_names():
                own = [info for info in model_settings(name) if info.key not in common and info.key not in (
                    "model.name", "model.backbone", "model.backbone_weights")]
                formatter.write_text(f"{name} ({get_spec(name).display_name}):")
                with formatter.indentation():
                    formatter.write_dl([(f"{info.key}={yaml_value(info.default)}", info.summary) for info in own])


ENGINES = ("local", "ray")
RAY_ONLY = {"ray_address": "--ray-address", "actors": "--actors", "cpus_per_actor": "--cpus-per-actor",
            "gpus_per_actor": "--gpus-per-actor", "resume": "--resume"}


def engine_options(command: Any) -> Any:
    """``hamacho inference``'s engine options: this process, or a pool of Ray actors (docs/inference.md)."""
    options = [
        click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                     help="local: score in this process; ray: on a pool of Ray actors, on this machine or a "
                          "cluster (pip install 'hamacho[ray]'; docs/inference.md, \"On a cluster\")."),
        click.option("--ray-address", metavar="ADDRESS",
                     help="With --engine ray: auto (the cluster `ray start` runs here), HOST:PORT of a head node, "
                          "or ray://HOST:10001 (Ray Client) [a new local Ray; RAY_ADDRESS when set]."),
        click.option("--actors", type=click.IntRange(1), metavar="N",
                     help="With --engine ray: scoring actors, each holding the model once [as many as the "
                          "cluster's CPUs, or GPUs, hold]."),
        click.option("--cpus-per-actor", type=click.FloatRange(0, min_open=True), metavar="C",
                     help="With --engine ray: CPUs reserved for each actor [1]."),
        click.option("--gpus-per-actor", type=click.FloatRange(0), metavar="G",
                     help="With --engine ray: GPUs reserved for each actor; the model then runs on it [0]."),
        click.option("--resume", is_flag=True, default=None,
                     help="With --engine ray: continue the unfinished run in the output folder, scoring only "
                          "the images it lacks."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def ray_options(engine: str, values: dict[str, Any]) -> tuple[Any, bool]:
    """The :class:`~hamacho.ray_engine.options.RayOptions` of ``--engine ray`` (None for the local engine), and
    whether to resume.

    Args:
        engine: ``local`` or ``ray``.
        values: The engine options' values by parameter name (None where not given); they are removed.

    Raises:
        click.UsageError: A Ray option given with the local engine.
    """
    from hamacho.ray_engine.options import RayOptions

    given = {name: values.pop(name) for name in RAY_ONLY}
    if engine != "ray":
        named = [RAY_ONLY[name] for name, value in given.items() if value is not None]
        if named:
            raise click.UsageError(f"{' and '.join(named)} need{'s' if len(named) == 1 else ''} --engine ray")
        return None, False
    return RayOptions(address=given["ray_address"], actors=given["actors"],
                      cpus_per_actor=1.0 if given["cpus_per_actor"] is None else given["cpus_per_actor"],
                      gpus_per_actor=given["gpus_per_actor"] or 0.0), bool(given["resume"])
