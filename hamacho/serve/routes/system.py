"""Health, version, auth and form options."""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from fastapi import APIRouter

from hamacho import __version__
from hamacho.serve.deps import ServiceDep, SessionDep
from hamacho.serve.job_catalog import active_counts

open_router = APIRouter(tags=["system"])
router = APIRouter(tags=["system"])


@open_router.get("/health")
def health(service: ServiceDep, session: SessionDep) -> dict[str, Any]:
    """Liveness and readiness: the database answers, jobs queued and running, the models this replica holds
    in memory and its id (no token needed)."""
    return {"status": "ok", "database": "ok", "jobs": active_counts(session),
            "models_loaded": len(service.cache.loaded()), "replica": service.replica.id}


@open_router.get("/auth")
def auth(service: ServiceDep) -> dict[str, bool]:
    """Whether API calls need a token (the UI asks for it once when they do)."""
    return {"required": bool(service.config.token)}


@router.get("/version")
def version() -> dict[str, str | None]:
    """Versions of Hamacho, the API, Python and (when installed) PyTorch."""
    try:
        torch_version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {"hamacho": __version__, "api": "v1", "python": platform.python_version(), "torch": torch_version}


@router.get("/options")
def options() -> dict[str, Any]:
    """The models, backbones and every model's settings (key, type, default, bounds, help, form label) and
    defaults, derived from the settings classes, and whether this server can train (no PyTorch: no)."""
    from hamacho.config import default_settings, settings_to_dict
    from hamacho.config_reference import describe_models
    from hamacho.extras import training_unavailable

    described = describe_models()
    names = [model["name"] for model in described["models"]]
    reason = training_unavailable()
    return {**described, "defaults": {name: settings_to_dict(default_settings(name)) for name in names},
            "training": {"available": reason is None, "reason": reason}}
