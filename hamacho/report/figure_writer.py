"""Report figures: each PNG is written to ``report/`` beside the page and embedded in it as base64."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from hamacho.files import atomic_write_bytes

FIGURE_DIR = "report"


class FigureWriter:
    """Writes each PNG figure to ``report/`` and returns the ``<figure>`` that embeds it in the page.

    Args:
        folder: The ``report/`` folder beside report.html.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[str] = []

    def add(self, name: str, png: bytes, alt: str, caption: str = "", css: str = "") -> str:
        """Write ``report/<name>`` (atomically) and return its ``<figure>``; ``caption`` is HTML."""
        atomic_write_bytes(self.folder / name, png)
        self.written.append(name)
        data = base64.b64encode(png).decode("ascii")
        text = f"<figcaption>{caption}</figcaption>" if caption else ""
        return (f'<figure class="{css}" data-file="{FIGURE_DIR}/{name}"><img src="data:image/png;base64,{data}" '
                f'alt="{escape(alt)}">{text}</figure>')

    def remove_stale(self) -> None:
        """Delete PNGs of an earlier report that this one did not write again."""
        for path in self.folder.glob("*.png"):
            if path.name not in self.written:
                path.unlink(missing_ok=True)
