"""Loaded by Python at start-up in processes that tests start with this folder on PYTHONPATH."""

import os

if os.environ.get("HAMACHO_PAUSE_AT"):
    import hamacho_pause_hook

    hamacho_pause_hook.install()
