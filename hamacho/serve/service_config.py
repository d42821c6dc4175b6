"""Settings of a running service (from ``hamacho serve`` options and environment variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hamacho.errors import ConfigError


def offline_from_environment() -> bool:
    """``HAMACHO_OFFLINE`` set to anything but empty or 0: the service never tries the network."""
    return os.environ.get("HAMACHO_OFFLINE", "") not in ("", "0")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MiB = 1024 * 1024


def resolve_server_path(path: str | Path) -> Path:
    """A server-side path as the file system reads it: ``~`` expanded, absolute, symlinks and ``..`` resolved.

    The one reading of both the allowed roots (``--allow-path``) and the paths clients send, so that a path
    is inside a root exactly when its resolved form is (``..`` included: it is resolved, not refused). The
    path need not exist.

    Raises:
        ConfigError: An empty path, one with a NUL character, or one that cannot be resolved (a symlink loop).
    """
    text = str(path)
    if not text.strip() or "\x00" in text:
        raise ConfigError(f"{text!r} is not a path (empty, or with a NUL character)")
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError) as exc:
        raise ConfigError(f"{text}: cannot be resolved ({exc})") from exc


@dataclass
class ServiceConfig:
    """How the service runs.

    Attributes:
        data_dir: Database (SQLite default), images, models and results live here.
        database_url: SQLAlchemy URL; default ``sqlite:///<data_dir>/hamacho.db``.
        token: When set, every API call needs ``Authorization: Bearer <token>``.
        workers: Training jobs that run at once in this process's worker (each in its own process); 0 for an
            API-only replica (``hamacho worker`` processes train).
        lease_seconds: Lease of a claimed training job, renewed by its heartbeat; a job whose worker died
            is queued again once it runs out.
        orphan_grace_seconds: Files without a row are removed at start-up only once this old (another
            replica may be writing younger ones).
        max_loaded: Models kept in memory; the least recently used is unloaded first.
        sync_seconds: Between two syncs of this replica with the database (its heartbeat; models unloaded or
            deleted on another replica leave this one's memory, kept ones are loaded: ``replicas.py``).
        max_file_bytes: Largest uploaded file.
        max_request_bytes: Largest request body.
        max_pixels: Largest image (width x height) accepted; larger ones are refused before decoding.
        allowed_roots: Folders that server-side paths (images, model imports) must lie in; resolved with
            :func:`resolve_server_path`, like the paths themselves.
        keep_unsaved: Unsaved predictions whose pictures stay available.
        device: Where models run (``auto``: a GPU when there is one).
        offline: Never try the network: a job asking for ImageNet weights that are not in the torch hub cache is
            refused when queued (default: ``HAMACHO_OFFLINE``; without it one HEAD request tells).
    """

    data_dir: Path = field(default_factory=lambda: Path("hamacho-data"))
    database_url: str | None = None
    token: str | None = None
    workers: int = 1
    lease_seconds: float = 60.0
    orphan_grace_seconds: float = 900.0
    max_loaded: int = 2
    sync_seconds: float = 2.0
    max_file_bytes: int = 50 * MiB
    max_request_bytes: int = 500 * MiB
    max_pixels: int = 50_000_000
    allowed_roots: list[Path] = field(default_factory=list)
    keep_unsaved: int = 200
    device: str = "auto"
    offline: bool = field(default_factory=offline_from_environment)

    def __post_init__(self) -> None:
        """Resolve the data folder and the allowed roots.

        Raises:
            ConfigError: A root that is not a path (see :func:`resolve_server_path`).
        """
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if not self.allowed_roots:
            self.allowed_roots = [self.data_dir / "import"]
        self.allowed_roots = [resolve_server_path(root) for root in self.allowed_roots]

    @property
    def url(self) -> str:
        """The database URL in use."""
        return self.database_url or f"sqlite:///{self.data_dir / 'hamacho.db'}"
