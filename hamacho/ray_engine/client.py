"""``--ray-address ray://HOST:10001``: the run's driver on the cluster, for a machine outside it.

Ray Data's streaming executor needs a Ray worker of its own, which a Ray Client connection is not. So through
Ray Client the whole run (:func:`hamacho.ray_engine.run.run_ray_inference`: opening the model, the pipeline,
the checkpoint, results.csv, results.parquet, the report) is one task on the cluster's head node, reserving
no CPU, that uses the cluster as a local driver would; this command waits for it, forwards Ctrl-C (the task
saves what was scored and stops, as a local run does) and prints its one-line messages and outcome. Every path
(model, images, save path) is therefore the cluster's: a shared mount.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hamacho.errors import Interrupted
from hamacho.inference import InferenceRequest
from hamacho.progress import RunControl
from hamacho.ray_engine.connection import ray_failure, ray_session
from hamacho.ray_engine.options import RayOptions

POLL_SECONDS = 0.5  # how often the wait looks at Ctrl-C
STOP_SECONDS = 120.0  # how long a stopped task may take to save what it scored
HEAD = "node:__internal_head__"  # Ray's resource of the head node


def _run_on_cluster(request: InferenceRequest, options: RayOptions, resume: bool) -> tuple[Any, list[str]]:
    """The task: the run, as a driver on the cluster; returns its result and its messages."""
    from hamacho.ray_engine.run import run_ray_inference

    messages: list[str] = []
    result = run_ray_inference(request, options, resume, log=messages.append)
    return result, messages


def run_through_client(request: InferenceRequest, options: RayOptions, resume: bool, control: RunControl,
                       log: Callable[[str], None]) -> Any:
    """Run :func:`~hamacho.ray_engine.run.run_ray_inference` as a task on the head node of the cluster at
    ``options.address`` (``ray://``), and return its result (``control`` and ``log`` stay here).

    Raises:
        HamachoError: What the run raised (one line), or :class:`~hamacho.errors.Interrupted` after Ctrl-C.
    """
    import ray

    control.stop_note = ("what was scored is saved in the save path's results.parts on the cluster; the same "
                         "command with --resume scores the rest")
    with ray_session(options.address):
        task = ray.remote(num_cpus=0, max_retries=0, resources={HEAD: 0.001})(_run_on_cluster)
        on_cluster = replace(options, address=None)  # the task uses the cluster it runs in
        ref = task.remote(request, on_cluster, resume)
        try:
            with control.phase("inference on the cluster", bar=False):
                while not ray.wait([ref], timeout=POLL_SECONDS)[0]:
                    control.check()
            result, messages = ray.get(ref)
        except Interrupted:
            ray.cancel(ref)  # a KeyboardInterrupt in the task: it saves what was scored, then stops
            ray.wait([ref], timeout=STOP_SECONDS)
            raise
        except Exception as exc:  # the run's own error (a HamachoError too), carried by Ray's
            raise ray_failure(exc, "what was scored is saved on the cluster; --resume continues") from exc
    for message in messages:
        log(message)
    return result
