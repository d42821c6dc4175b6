"""Start the service: check the extra is installed and the bind is safe, then run uvicorn."""

from __future__ import annotations

import importlib.util
from typing import Any

import click

from hamacho.errors import ConfigError
from hamacho.serve.service_config import LOOPBACK_HOSTS, ServiceConfig

SERVE_PACKAGES = ("fastapi", "uvicorn", "sqlalchemy", "multipart")


def run_server(host: str, port: int, **options: Any) -> None:
    """Run ``hamacho serve`` until Ctrl-C (or SIGTERM).

    Args:
        host: Address to bind; any but the loopback needs a token.
        port: TCP port.
        options: :class:`~hamacho.serve.service_config.ServiceConfig` fields.

    Raises:
        ConfigError: A missing package, an open bind without a token, or a database that cannot be opened.
    """
    missing = [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"hamacho serve needs {', '.join(missing)}: pip install 'hamacho[serve]'")
    if host not in LOOPBACK_HOSTS and not options.get("token"):
        raise ConfigError(f"binding to {host} lets other machines in: give a token (--token or HAMACHO_TOKEN)")
    # OpenMP waits passively (set when hamacho was imported, before torch; the training workers inherit it):
    # spinning threads made a 2-thread forward take 560 ms instead of 60 ms beside a training job (PaDiM
    # resnet18, 256 px, 2 cores).
    import uvicorn

    from hamacho.serve.app import create_app

    config = ServiceConfig(**options)
    app = create_app(config)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"Hamacho service on http://{shown}:{port}/ (API docs /docs), data in {config.data_dir}"
               + (" (token required)" if config.token else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=15)
