"""Errors a user can fix, and the two helpers that turn problems into one-line messages.

The CLI prints every :class:`HamachoError` as one ``Error: ...`` line, without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class HamachoError(Exception):
    """Base class of every error caused by input, configuration or environment."""


class ConfigError(HamachoError):
    """A configuration key or value is invalid."""


class DatasetError(HamachoError):
    """The dataset folder, an image or a mask cannot be used."""


class BackboneError(HamachoError):
    """Backbone weights cannot be found, downloaded or loaded."""


class ModelFileError(HamachoError):
    """A model file is missing, foreign, corrupt or from a newer version."""


class Interrupted(HamachoError):
    """The run was stopped on request (Ctrl-C, SIGTERM, or a cancelled job).

    Args:
        message: What was stopped and what it left behind.
        signum: The signal that asked for the stop, if one did.
    """

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's text (its type name when it has none), at most ``limit`` chars.

    Args:
        exc: Any exception.
        limit: Longest text returned; longer lines are cut and end with an ellipsis.

    Returns:
        One line, never empty.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def summarize(items: Sequence[str], limit: int = 10, separator: str = "; ") -> str:
    """The first ``limit`` items joined, then ``and N more`` for the rest.

    Args:
        items: Texts to list.
        limit: Most items shown.
        separator: Between items (and before ``and N more``).

    Returns:
        E.g. ``a; b; and 3 more``.
    """
    shown = separator.join(items[:limit])
    rest = len(items) - limit
    return f"{shown}{separator}and {rest} more" if rest > 0 else shown
