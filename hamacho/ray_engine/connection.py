"""Joining Ray: the one-line refusals (no Ray installed, a cluster out of reach, nodes that cannot read the
files), starting or joining a cluster quietly, and sizing the actor pool to it.

Ray itself is imported inside the functions: this module is also imported on the cluster's nodes, where
:func:`probe_paths` runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from hamacho.data.decoding import _quiet_stderr  # the process's one switch of file descriptor 2
from hamacho.errors import HamachoError, first_line

CLIENT_ATTEMPTS = 3  # Ray Client's per-session server sometimes dies as it starts (below)
INSTALL_HINT = "pip install 'hamacho[ray]'"
REACH_SECONDS = 5.0  # a TCP connection to the head's port, before Ray is asked (it would retry for minutes)
PROBE_SECONDS = 180.0  # the nodes' answer to "can you read these files" (a busy node starts a worker first)
GCS_PORT = 6379  # Ray's default port of a head node
LOG_LEVEL = "RAY_BACKEND_LOG_LEVEL"  # Ray's core (C++) log level
NICENESS = "RAY_worker_niceness"  # the priority a local Ray gives its workers
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its tracebacks
RAISED_IN_ACTOR = re.compile(r"^hamacho(?:\.\w+)+\.(\w+Error): (.+)$", re.MULTILINE)  # a traceback's last line
SHARED_PATHS = "every node that runs actors needs the model and the images at the same paths (a shared mount)"


class RayEngineError(HamachoError):
    """Ray is missing, the cluster cannot be reached, or it cannot score these files."""


def require_ray() -> None:
    """Import Ray and Ray Data, or fail with one line saying how to install them.

    Raises:
        RayEngineError: When the ``ray`` extra is not installed.
    """
    try:
        import ray.data  # noqa: F401  (ray, pyarrow, pandas: the whole extra)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "ray"
        raise RayEngineError(f"--engine ray needs Ray Data ({missing} is not installed): {INSTALL_HINT}") \
            from exc


def head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that ``address`` connects to first, or None for ``auto``.

    Args:
        address: ``auto``, ``HOST``, ``HOST:PORT`` or ``ray://HOST:PORT``.

    Raises:
        RayEngineError: For a port that is not a number.
    """
    text = address.strip()
    if text == "auto":
        return None
    client = text.startswith("ray://")
    text = text.removeprefix("ray://")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not port:
        return host, 10001 if client else GCS_PORT
    if not port.isdigit():
        raise RayEngineError(f"--ray-address {address!r}: the port must be a number (auto, HOST:PORT or "
                             "ray://HOST:10001)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = REACH_SECONDS) -> None:
    """Fail fast, with one line, when nothing listens at the cluster's address.

    Raises:
        RayEngineError: When the head's port does not accept a connection within ``timeout`` seconds.
    """
    endpoint = head_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayEngineError(f"cannot reach the Ray cluster at {address}: {reason} (is it running? `ray status` "
                             "on its head node shows it)") from exc


def _quiet(ray: Any) -> None:
    """Ray's own log lines off the terminal: the CLI draws one progress bar and prints its one-line errors."""
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment (where the user set none), put back on exit."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update({name: value for name, value in values.items() if before[name] is None})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray, for the length of a run: the connection this process already has, or a new one.

    A new local Ray runs its workers at the priority of this process (Ray's default lowers them to
    niceness 15, which on a shared machine hands the cores to any other work: the local engine does not);
    a cluster keeps its own settings. Ray's core logs only fatal errors here: its warnings about Ray Data's
    own actors are not the user's business, and its failures are raised and shown as one line.

    Args:
        address: As :attr:`hamacho.ray_engine.options.RayOptions.address`. None: an existing connection of
            this process, else ``RAY_ADDRESS`` when set, else a new local Ray (shut down on exit).

    Raises:
        RayEngineError: The cluster cannot be reached or joined.
    """
    import ray

    if address is not None:
        check_reachable(address)
    if ray.is_initialized():
        if address is not None:
            raise RayEngineError("this process is already connected to Ray; leave out --ray-address to use that "
                                 "connection, or call ray.shutdown() first")
        _quiet(ray)
        yield
        return
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
        check_reachable(address)
    start = {} if address is not None else {"include_dashboard": False}
    environment = {LOG_LEVEL: "fatal"} if address is not None else {LOG_LEVEL: "fatal", NICENESS: "0"}
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        with _environment(environment), _quiet_stderr:
            _init(ray, address, start)
    except Exception as exc:  # ConnectionError, RuntimeError, version or token mismatches: all one line
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayEngineError(f"cannot start or join {where}: {first_line(exc)}") from exc
    finally:
        if sigterm is not None:  # ray.init installs its own SIGTERM handler; the run's stop requests come first
            signal.signal(signal.SIGTERM, sigterm)
    _quiet(ray)
    try:
        yield
    finally:
        ray.shutdown()


def _fits(resources: dict[str, float], cpus: float, gpus: float) -> bool:
    return resources.get("CPU", 0.0) >= cpus and resources.get("GPU", 0.0) >= gpus


def pool_size(actors: int | None, cpus: float, gpus: float, log: Any) -> int:
    """The number of scoring actors: ``actors``, or as many as the cluster's CPUs (GPUs) hold now.

    Raises:
        RayEngineError: GPUs asked for, none in the cluster, and no ``--actors`` to wait for them with.
    """
    import ray

    total = ray.cluster_resources()
    fit = int(total.get("GPU", 0.0) // gpus) if gpus > 0 else int(total.get("CPU", 0.0) // cpus)
    if actors is None:
        if fit < 1:
            what = f"{gpus:g} GPU" if gpus > 0 else f"{cpus:g} CPU"
            raise RayEngineError(f"no node of the Ray cluster has {what} for an actor now; give --actors N to wait "
                                 "for nodes an autoscaler adds, or ask for less per actor")
        return fit
    if actors > fit:
        log(f"note: the Ray cluster holds {fit} actor(s) of this size now; the other {actors - fit} start when "
            "nodes join (an autoscaler), or use fewer --actors")
    return actors


def probe_paths(paths: Sequence[str]) -> list[str]:
    """On a node: ``"path: reason"`` for each path that cannot be read here (a file's first byte, a folder).

    Args:
        paths: Files or folders, as the driver names them.
    """
    problems = []
    for path in paths:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as handle:
                    handle.read(1)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or type(exc).__name__}")
    return problems


def check_nodes_read(paths: Sequence[str], cpus: float, gpus: float, skip_own_node: bool = True) -> None:
    """Fail with one line unless every node that can host an actor reads ``paths``.

    Args:
        paths: The model (file or export folder) and an image or two, as absolute paths.
        cpus: CPUs of one actor (nodes with fewer run none and are not asked).
        gpus: GPUs of one actor.
        skip_own_node: Not asking the node this process runs on (it has read them already). Ray Client
            drivers are never on a node and always ask all.

    Raises:
        RayEngineError: Naming the first node and path that failed.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    own = None
    if skip_own_node and not ray.util.client.ray.is_connected():
        own = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes()
             if n.get("Alive") and n["NodeID"] != own and _fits(n["Resources"], cpus, gpus)]
    if not nodes:
        return
    probe = ray.remote(num_cpus=0, max_retries=1)(probe_paths)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        list(paths)) for n in nodes]
    try:
        answers = ray.get(refs, timeout=PROBE_SECONDS)
    except ray.exceptions.GetTimeoutError as exc:
        raise RayEngineError(f"the Ray cluster's nodes did not say within {PROBE_SECONDS:.0f} s whether they can "
                             "read the model and the images") from exc
    for node, problems in zip(nodes, answers):
        if problems:
            raise RayEngineError(f"node {node['NodeManagerAddress']} of the Ray cluster cannot read {problems[0]}; "
                                 f"{SHARED_PATHS}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (Ray's ``cause``, ``__cause__``, ``__context__``), each once."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack += [current.__context__, current.__cause__, getattr(current, "cause", None)]


def ray_failure(exc: BaseException, note: str) -> HamachoError:
    """A failure inside Ray as one line: the Hamacho error an actor raised (a model its node cannot open,
    say; Ray passes some only as the text of their traceback), else the first cause's first line, with
    ``note`` (what was saved)."""
    from hamacho import errors

    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, HamachoError) and type(cause).__module__.startswith("hamacho"):
            return cause
    for cause in causes:
        raised = RAISED_IN_ACTOR.findall(ANSI.sub("", str(cause)))
        if raised:
            name, message = raised[-1]
            kind = getattr(errors, name, None)
            return kind(message) if isinstance(kind, type) and issubclass(kind, HamachoError) else \
                RayEngineError(message)
    told = next((cause for cause in causes if str(cause).strip()), causes[-1])
    return RayEngineError(f"the Ray pipeline failed: {type(told).__name__}: {first_line(ANSI.sub('', str(told)))} "
                          f"({note})")



def _init(ray: Any, address: str | None, start: dict[str, Any]) -> None:
    """``ray.init``; through Ray Client, tried up to :data:`CLIENT_ATTEMPTS` times when the head's per-session
    server dies as it starts ("Initialization failure from server": ray-project/ray#63202, a gRPC race when the
    client proxy forks it, a few percent of connections; seen in this project's CI). Nothing has run on the
    cluster before a connection succeeds, so trying again is safe."""
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, **start)
            return
        except Exception as exc:  # ConnectionAbortedError, or a RuntimeError around it
            transient = "Initialization failure from server" in f"{exc} {exc.__cause__ or ''}"
            if not (address or "").startswith("ray://") or not transient or attempt == CLIENT_ATTEMPTS:
                raise
            ray.shutdown()
