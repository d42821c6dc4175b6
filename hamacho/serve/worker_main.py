"""``hamacho worker``: a training worker for any machine that reaches the database and the shared data folder.

It runs the same loop as the one inside ``hamacho serve`` (:class:`~hamacho.serve.job_queue.JobRunner`) in
the foreground, prints one line per job it starts or ends, and on SIGTERM or Ctrl-C puts its jobs back in
the queue and exits with 0. It never changes the database's schema (``hamacho db upgrade`` or a replica
does), and refuses a data folder that is not the API's (:mod:`.data_marker`).
"""

from __future__ import annotations

import datetime as dt
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hamacho.errors import ConfigError

DEVICE_PATTERN = r"auto|cpu|cuda:\d{1,2}"


def check_device(device: str) -> str:
    """``auto``, ``cpu`` or ``cuda:N`` as given.

    Raises:
        ConfigError: Anything else.
    """
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise ConfigError(f"--device {device!r}: give auto, cpu or cuda:N (N: the GPU's index)")
    return device


def run_worker(database_url: str, data_dir: Path, device: str, jobs: int, lease_seconds: float,
               echo: Callable[[str], None]) -> int:
    """Run training jobs until SIGTERM or Ctrl-C; return how many were put back in the queue.

    Args:
        database_url: The service's database (PostgreSQL when several machines share it).
        data_dir: The shared data folder, as this machine mounts it.
        device: ``auto``, ``cpu`` or ``cuda:N``.
        jobs: Jobs run at once (each in its own process).
        lease_seconds: Lease of a claimed job; its heartbeat renews it every third of this.
        echo: Where the lines go.

    Raises:
        ConfigError: A bad device, an unreachable or unmigrated database, or a data folder that is not the API's.
    """
    from hamacho.serve.data_marker import check_data_folder
    from hamacho.serve.db import open_database
    from hamacho.serve.job_queue import JobRunner

    check_device(device)
    data_dir = Path(data_dir).expanduser().resolve()
    factory = open_database(database_url, migrate=False)
    check_data_folder(factory, data_dir)

    def report(line: str) -> None:
        echo(f"{dt.datetime.now().strftime('%H:%M:%S')} {line}")

    runner = JobRunner(factory, database_url, data_dir, jobs, lease_seconds, device, report)
    report(f"worker {runner.owner}: {jobs} job(s) at once on {device}, data in {data_dir}; waiting for jobs")
    stopping: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        runner.request_stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        runner.run()
    finally:
        held = len(runner.processes)
        runner.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report(f"worker stopped ({signal.Signals(stopping[0]).name if stopping else 'done'}); "
           f"{held} running job(s) put back in the queue")
    return held
