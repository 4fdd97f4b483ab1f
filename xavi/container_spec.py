"""Records of what Xavi wants from Docker and what Docker reports, and Xavi's labels.

Pure data, kept apart from :mod:`xavi.docker_api` so that modules which only
describe containers (and agents that run gossip only) do not import the
Docker SDK.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

LABEL_PREFIX = "org.tripleclabs.xavi"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_SERVICE = f"{LABEL_PREFIX}.service"
LABEL_NODE = f"{LABEL_PREFIX}.node"
LABEL_SPEC_HASH = f"{LABEL_PREFIX}.spec-hash"
NETWORK_NAME = "xavi"
DEFAULT_REGISTRY = "docker.io"


@dataclass(frozen=True)
class MountSpec:
    """A bind mount (``kind='bind'``, source is a host path) or a named volume."""

    source: str
    target: str
    kind: str = "bind"
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything Xavi decides about one container; its hash labels the container."""

    name: str
    service: str
    node: str
    image: str
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    mounts: tuple[MountSpec, ...] = ()
    ports: tuple[tuple[str, str, int], ...] = ()
    """Published ports as (container port like ``5432/tcp``, host IP, host port)."""
    memory_bytes: int | None = None
    nano_cpus: int | None = None
    healthcheck: tuple[str, ...] = ()
    """A ``CMD-SHELL`` test run every few seconds; empty for none."""

    def spec_hash(self) -> str:
        """Return a digest of the spec, without the limits (changed in place) and the node name."""
        data = asdict(self)
        data.pop("memory_bytes")
        data.pop("nano_cpus")
        # The node name is a label for people, not a property of the container:
        # renaming a node must not recreate its containers.
        data.pop("node")
        encoded = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:32]

    def labels(self) -> dict[str, str]:
        """Return the labels that mark the container as Xavi's."""
        return {
            LABEL_MANAGED: "true",
            LABEL_SERVICE: self.service,
            LABEL_NODE: self.node,
            LABEL_SPEC_HASH: self.spec_hash(),
        }


@dataclass(frozen=True)
class ContainerState:
    """What Docker reports about one container."""

    id: str
    name: str
    labels: dict[str, str]
    status: str
    """Docker's state: created, running, exited, dead, ..."""
    exit_code: int
    oom_killed: bool
    health: str | None
    memory_bytes: int
    nano_cpus: int
    started_at: str

    @property
    def managed(self) -> bool:
        """Whether the container carries Xavi's label."""
        return self.labels.get(LABEL_MANAGED) == "true"

    @property
    def running(self) -> bool:
        """Whether the container's process runs."""
        return self.status in ("running", "restarting")
