"""Before a job is queued: can its worker get the backbone's ImageNet weights?

``imagenet`` means torchvision's file, read from the torch hub cache (``~/.cache/torch/hub/checkpoints``, or
``$TORCH_HOME``) or downloaded there. On an air-gapped server neither works, and the job would fail minutes
later in a worker; the API refuses it at once instead, naming the choices. A server started with ``--offline``
(or ``HAMACHO_OFFLINE=1``) never tries the network; otherwise one HEAD request (a few seconds at most, its
answer kept for :data:`PROBE_TTL` seconds) tells whether the file can be downloaded.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

PROBE_SECONDS = 3.0
PROBE_TTL = 600.0
_probes: dict[str, tuple[float, str | None]] = {}  # url -> (when, None or why it cannot be downloaded)


def cached_weights(url: str) -> Path:
    """Where torchvision keeps the file of ``url`` once downloaded (the torch hub cache)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _download_problem(url: str) -> str | None:
    """None when ``url`` answers a HEAD request, else the reason (kept for :data:`PROBE_TTL` seconds)."""
    cached = _probes.get(url)
    if cached is not None and time.monotonic() - cached[0] < PROBE_TTL:
        return cached[1]
    problem: str | None
    try:
        request = urllib.request.Request(url, method="HEAD")
        urllib.request.urlopen(request, timeout=PROBE_SECONDS).close()
        problem = None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
    _probes[url] = (time.monotonic(), problem)
    return problem


def imagenet_problem(backbone: str, offline: bool, roots: list[Path]) -> str | None:
    """Why a job with ``backbone_weights: imagenet`` would fail here (None: the weights can be had).

    Args:
        backbone: torchvision model name.
        offline: Never try the network (the server's ``--offline``).
        roots: The server's allowed folders, named in the answer as where a weights file may be put.
    """
    from hamacho.models.backbone import imagenet_weights

    try:
        url = imagenet_weights(backbone).url
    except (ValueError, KeyError):  # not a torchvision model name: the settings check reports it
        return None
    if cached_weights(url).is_file():
        return None
    reason = "this server is offline" if offline else _download_problem(url)
    if reason is None:
        return None
    where = ", ".join(str(root) for root in roots) or "an allowed folder"
    return (f"ImageNet weights for {backbone} are not on this server and cannot be downloaded ({reason}): choose a "
            f"weights file from the list (copy torchvision's {os.path.basename(urlparse(url).path)} into {where}), "
            "or 'none' for random weights (tests only)")
