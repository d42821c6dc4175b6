"""Every configuration key, described for people, from the settings classes alone (no torch).

The settings dataclasses (:mod:`hamacho.settings`, :mod:`hamacho.models.params`) are the one home of each
key's type, default, bounds, help, option and form label. This module renders them:

* :func:`render_yaml`: ``configs/<model>.yaml``, every default with its help as a comment;
* :func:`render_reference`: docs/config-reference.md, a table per section;
* :func:`describe_models`: the models and their keys as plain data (the service's ``/options``, the web form).

``python -m hamacho.config_reference`` writes the YAML files and the reference after a change to a settings
class; ``--check`` only says whether they are up to date (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hamacho.models.registry import get_spec, model_names
from hamacho.settings import BACKBONES, ModelParams, SettingInfo, Settings, iter_settings, section_help

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 110
COMMENT_COLUMN = 33
YAML_HEADER = """\
# Generated from the settings classes by `python -m hamacho.config_reference`: change those, not this file.
# Every key can be changed in a YAML file passed with `--config FILE` (only the keys you change are needed)
# or on the command line as `key=value` after the options, e.g. `hamacho train ... dataset.batch_size=16`.
# Named options of `hamacho train` map to the keys noted beside them.
# Precedence, lowest first: this file, --config FILE, named options, key=value overrides.
# The effective configuration is saved beside the results as config.yaml and inside the model file.
"""


def model_settings(name: str) -> list[SettingInfo]:
    """Every key of a model's configuration, with its default for that model, in declaration order."""
    return list(iter_settings(Settings(model=get_spec(name).params())))


def yaml_value(value: Any) -> str:
    """A default as YAML (flow style for lists; strings quoted only where YAML needs it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, str):
        plain = value and value.replace("_", "").replace("-", "").replace(".", "").replace("/", "").isalnum()
        reserved = value.lower() in ("null", "true", "false", "yes", "no", "on", "off", "~")
        return value if plain and not reserved and not value[0].isdigit() else json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def _comment(info: SettingInfo) -> str:
    return f"{info.option}. {info.help}" if info.option else info.help


def _yaml_lines(section: Any, indent: int) -> list[str]:
    lines = []
    described = {info.key: info for info in iter_settings(section)}
    for item in fields(section):
        value = getattr(section, item.name)
        pad = " " * indent
        if is_dataclass(value):
            lines += _with_comment(f"{pad}{item.name}:", section_help(value))
            lines += _yaml_lines(value, indent + 2)
            continue
        info = described[item.name]
        lines += _with_comment(f"{pad}{item.name}: {yaml_value(info.default)}", _comment(info))
    return lines


def _with_comment(text: str, comment: str) -> list[str]:
    if not comment:
        return [text]
    column = max(COMMENT_COLUMN, len(text) + 1)
    wrapped = textwrap.wrap(comment, WIDTH - column - 4) or [""]
    first = f"{text.ljust(column)}# {wrapped[0]}"
    return [first] + [f"{' ' * column}#   {line}" for line in wrapped[1:]]


def render_yaml(name: str) -> str:
    """``configs/<name>.yaml``: the model's defaults, each with its help as a comment."""
    spec = get_spec(name)
    settings = Settings(model=spec.params())
    lines = [f"# Hamacho defaults for {spec.summary}", *YAML_HEADER.splitlines()]
    for item in fields(settings):
        section = getattr(settings, item.name)
        lines.append("")
        lines += _with_comment(f"{item.name}:", section_help(section) if item.name != "model" else "")
        lines += _yaml_lines(section, 2)
    return "\n".join(lines) + "\n"


def _allowed(info: SettingInfo) -> str:
    if info.choices is not None and len(info.choices) <= 8:
        return "one of " + ", ".join(f"`{c}`" for c in info.choices)
    if info.choices is not None:
        return "a name from the list in [models.md](models.md#backbones)"
    bounds = []
    if info.minimum is not None:
        bounds.append(f">= {info.minimum}")
    if info.exclusive_minimum is not None:
        bounds.append(f"> {info.exclusive_minimum}")
    if info.maximum is not None:
        bounds.append(f"<= {info.maximum}")
    kind = {"any": "see meaning", "list": "list", "str": "text", "bool": "true/false", "int": "integer",
            "float": "number"}.get(info.type, info.type)
    return f"{kind}{' ' + ', '.join(bounds) if bounds else ''}{', or null' if info.nullable and kind != 'see meaning' else ''}"


def _row(info: SettingInfo, key: str | None = None) -> str:
    option = f"`{info.option}`" if info.option else ""
    cells = [f"`{key or info.key}`", f"`{yaml_value(info.default)}`", _allowed(info), option,
             info.help.replace("|", "\\|")]
    return "| " + " | ".join(cells) + " |"


def render_reference() -> str:
    """docs/config-reference.md: every key of every section, per model for the ``model`` section."""
    header = "| key | default | allowed | option | meaning |\n|---|---|---|---|---|"
    out = ["# Configuration reference", "",
           "Generated from the settings classes (`hamacho/settings.py`, `hamacho/models/params.py`) by",
           "`python -m hamacho.config_reference`; how to set these keys: [config.md](config.md).", ""]
    for name in model_names():
        spec = get_spec(name)
        common = {item.name for item in fields(ModelParams)}
        out += [f"## `model` for {spec.display_name} (`--model {name}`)", "", spec.summary, "", header]
        infos = list(iter_settings(spec.params()))
        out += [_row(i, f"model.{i.key}") for i in infos if i.key in common]
        out += [_row(i, f"model.{i.key}") for i in infos if i.key not in common]
        out.append("")
    settings = Settings()
    for item in fields(settings):
        if item.name == "model":
            continue
        section = getattr(settings, item.name)
        out += [f"## `{item.name}`", "", section_help(section), "", header]
        out += [_row(i) for i in iter_settings(section, f"{item.name}.")]
        out.append("")
    return "\n".join(out)


def describe_models() -> dict[str, Any]:
    """The models, the backbones and every key of each model's configuration, as plain data."""
    return {
        "models": [{"name": name, "display_name": get_spec(name).display_name, "summary": get_spec(name).summary}
                   for name in model_names()],
        "backbones": list(BACKBONES),
        "settings": {name: [info.as_dict() for info in model_settings(name)] for name in model_names()},
    }


def generated_files() -> dict[Path, str]:
    """Every file rendered here, by path in the repository."""
    files = {ROOT / "configs" / f"{name}.yaml": render_yaml(name) for name in model_names()}
    files[ROOT / "docs" / "config-reference.md"] = render_reference()
    return files


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) configs/*.yaml and docs/config-reference.md."""
    parser = argparse.ArgumentParser(prog="python -m hamacho.config_reference", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    files = generated_files()
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run python -m hamacho.config_reference)", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
