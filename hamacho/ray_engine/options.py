"""What ``--engine ray`` is told: where the cluster is and how many actors of what size score the images."""

from __future__ import annotations

from dataclasses import dataclass

from hamacho.errors import ConfigError


@dataclass(frozen=True)
class RayOptions:
    """The Ray engine's options (the CLI's ``--ray-address``, ``--actors``, ``--cpus-per-actor``, ...).

    Attributes:
        address: ``None`` to start a Ray on this machine (or join ``RAY_ADDRESS`` when it is set), ``auto``
            for the cluster that ``ray start`` runs on this machine, ``HOST:PORT`` for a cluster's head
            (its GCS port, 6379 unless changed), or ``ray://HOST:10001`` for Ray Client.
        actors: Scoring actors, each holding the model once; None: as many as the cluster's CPUs (GPUs with
            ``gpus_per_actor``) allow.
        cpus_per_actor: CPUs Ray reserves for each actor (its PyTorch threads follow it).
        gpus_per_actor: GPUs Ray reserves for each actor; above 0 the actors run the model on their GPU.
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ConfigError(f"--actors must be at least 1, got {self.actors}")
        if self.cpus_per_actor <= 0:
            raise ConfigError(f"--cpus-per-actor must be above 0, got {self.cpus_per_actor}")
        if self.gpus_per_actor < 0:
            raise ConfigError(f"--gpus-per-actor must be 0 or more, got {self.gpus_per_actor}")
        if self.address is not None and not self.address.strip():
            raise ConfigError("--ray-address is empty (use auto, HOST:PORT or ray://HOST:10001)")

    @property
    def device(self) -> str:
        """Where an actor runs the model: ``auto`` (its GPU) with GPUs reserved, else ``cpu``."""
        return "auto" if self.gpus_per_actor > 0 else "cpu"
