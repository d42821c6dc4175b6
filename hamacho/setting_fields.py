"""What one setting is: a dataclass field whose metadata holds its checks and its description.

Every configuration key is declared once, as a field of a settings dataclass (:mod:`hamacho.settings`,
:mod:`hamacho.models.params`) made with :func:`setting`: its type, default, bounds, choices, help text,
and, for the few keys that have them, its named ``hamacho train`` option and its place in the web UI's
training form. Everything else is derived from there: validation (:func:`validate`), the CLI's options
(:mod:`hamacho.cli`), the service's ``/options`` and job schema, the web form, ``configs/<model>.yaml``
and docs/config-reference.md (:mod:`hamacho.config_reference`).

No torch, no omegaconf: the CLI reads these before parsing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from hamacho.errors import ConfigError

Check = Callable[[Any], "str | None"]
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Za-z])")


def setting(
    default: Any = MISSING,
    *,
    help: str = "",
    default_factory: Callable[[], Any] | Any = MISSING,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    choices: Sequence[str] | None = None,
    nonempty: bool = False,
    check: Check | None = None,
    option: str | None = None,
    parse: Callable[[str], Any] | None = None,
    label: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A settings field with its checks (``None`` values are not checked) and its description.

    Args:
        default: The default value.
        help: What the key does, for people: its first sentence is the short form (web form notes, CLI
            epilog); the whole text goes to the CLI option, the YAML comment and the docs.
        default_factory: For mutable defaults (lists).
        at_least: Smallest allowed value.
        above: The value must be greater than this.
        at_most: Largest allowed value.
        choices: Allowed strings.
        nonempty: Strings must not be empty.
        check: Further check, returning what is wrong (``"must be ..."``) or None.
        option: Its named ``hamacho train`` option (``--image-size``); a bool key's ``--no-...`` option
            sets it false.
        parse: How that option's text becomes a value (default: by the field's type).
        label: Its label in the web UI's training form (keys without one go under "More settings").
        metavar: How the option's value is shown in ``--help``.
    """
    metadata = {"at_least": at_least, "above": above, "at_most": at_most, "choices": choices,
                "nonempty": nonempty, "check": check, "help": " ".join(help.split()), "option": option,
                "parse": parse, "label": label, "metavar": metavar}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _problem(value: Any, meta: dict[str, Any]) -> str | None:
    """What is wrong with a value, by its field's metadata, or None."""
    if value is None:
        return None
    if meta.get("choices") is not None and value not in meta["choices"]:
        return f"must be one of: {', '.join(meta['choices'])}"
    if meta.get("nonempty") and value == "":
        return "must be a non-empty string"
    if meta.get("at_least") is not None and value < meta["at_least"]:
        return f"must be at least {meta['at_least']}"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be greater than {meta['above']}"
    if meta.get("at_most") is not None and value > meta["at_most"]:
        return f"must be at most {meta['at_most']}"
    check = meta.get("check")
    return check(value) if check is not None else None


def validate(section: Any, prefix: str = "") -> None:
    """Check every field of a settings dataclass (recursively) against its bounds.

    Raises:
        ConfigError: Naming the first bad key, what it must be, and the value given.
    """
    for item in fields(section):
        value = getattr(section, item.name)
        key = f"{prefix}{item.name}"
        if is_dataclass(value):
            validate(value, f"{key}.")
            continue
        problem = _problem(value, dict(item.metadata))
        if problem:
            raise ConfigError(f"config key '{key}' {problem} (got {value!r})")


def type_words(annotation: Any) -> str:
    """How a value of a field's declared type is described in an error, e.g. ``must be an integer``."""
    text = str(annotation).replace("typing.", "")
    nullable = " or null" if "None" in text else ""
    for name, words in (("bool", "must be true or false"), ("int", "must be an integer"),
                        ("float", "must be a number"), ("list", "must be a list"), ("str", "must be a string")):
        if text.startswith(name):
            return words + nullable
    return f"must be of type {text}"


@dataclass(frozen=True)
class SettingInfo:
    """One configuration key as people see it.

    Attributes:
        key: Dotted key, e.g. ``dataset.image_size``.
        type: ``bool``, ``int``, ``float``, ``str``, ``list`` or ``any`` (sizes, crops: see the help).
        nullable: Whether null is allowed.
        default: The default value (plain data).
        help: What it does.
        choices: Allowed strings, or None.
        minimum: Smallest allowed value (inclusive), or None.
        exclusive_minimum: The value must be greater than this, or None.
        maximum: Largest allowed value, or None.
        option: Named ``hamacho train`` option, or None.
        label: Label in the web form, or None (then it is a "More settings" key).
        metavar: How the option's value is shown.
        parse: Parser of the option's text, or None.
    """

    key: str
    type: str
    nullable: bool
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    option: str | None = None
    label: str | None = None
    metavar: str | None = None
    parse: Callable[[str], Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def summary(self) -> str:
        """The help's first sentence (a full stop before a word ends it; ``e.g.`` does not)."""
        return first_sentence(self.help)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description (``/options``)."""
        return {"key": self.key, "type": self.type, "nullable": self.nullable, "default": self.default,
                "help": self.help, "summary": self.summary,
                "choices": list(self.choices) if self.choices is not None else None, "minimum": self.minimum,
                "exclusive_minimum": self.exclusive_minimum, "maximum": self.maximum, "option": self.option,
                "label": self.label}


def first_sentence(text: str) -> str:
    """The first sentence of a help text."""
    return _SENTENCE_END.split(text, maxsplit=1)[0].rstrip(".") + "." if text else ""


def _type_name(annotation: Any) -> tuple[str, bool]:
    """(base type name, nullable) of a field annotation (strings under ``from __future__ import annotations``)."""
    text = str(annotation).replace("typing.", "").replace(" ", "")
    nullable = "None" in text or "Optional" in text
    for name in ("bool", "int", "float", "str", "list"):
        if text.startswith((name, f"Optional[{name}")):
            return name, nullable
    return "any", True


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if is_dataclass(value) else value


def iter_settings(section: Any, prefix: str = "") -> Iterator[SettingInfo]:
    """Every key of a settings dataclass instance (recursively), in declaration order."""
    for item in fields(section):
        value = getattr(section, item.name)
        key = f"{prefix}{item.name}"
        if is_dataclass(value):
            yield from iter_settings(value, f"{key}.")
            continue
        meta = dict(item.metadata)
        kind, nullable = _type_name(item.type)
        yield SettingInfo(
            key=key, type=kind, nullable=nullable, default=_plain(value), help=meta.get("help", ""),
            choices=tuple(meta["choices"]) if meta.get("choices") else None, minimum=meta.get("at_least"),
            exclusive_minimum=meta.get("above"), maximum=meta.get("at_most"), option=meta.get("option"),
            label=meta.get("label"), metavar=meta.get("metavar"), parse=meta.get("parse"))


def section_help(section: Any) -> str:
    """A settings section's description: the first paragraph of its class docstring."""
    doc = type(section).__doc__ or ""
    return " ".join(doc.strip().split("\n\n")[0].split())

