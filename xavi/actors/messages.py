"""Message records exchanged between Xavi's actors.

Events travel with ``tell`` through the supervisor's bus (:class:`Publish`),
which forwards each to the children subscribed to its type and retains the
latest of each retained type, so a restarted child gets the current facts at
once. ``ask`` is used only by the supervisor (pings, status) and the control
server, always with a timeout, and never toward an actor that may ask back:
two actors asking each other would deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xavi.config import Config
from xavi.mesh import Membership
from xavi.secrets import Secrets
from xavi.services import Location


# Facts published on the bus -------------------------------------------------


@dataclass(frozen=True)
class ConfigChanged:
    """A new valid config is in force."""

    config: Config
    generation: int
    """Counts valid configs loaded by this ConfigActor incarnation, from 1."""


@dataclass(frozen=True)
class SecretsLoaded:
    """The host's secrets, read from the secrets file."""

    secrets: Secrets = field(repr=False)


@dataclass(frozen=True)
class ServiceLocations:
    """Where each provider service is reached from this host; a missing key means no provider."""

    locations: dict[str, Location]
    missing: tuple[str, ...] = ()
    """Services no live host provides now; ``locations`` keeps their last good value."""


@dataclass(frozen=True)
class ServiceHealth:
    """A ContainerActor's report on its service."""

    service: str
    running: bool
    healthy: bool
    container_id: str | None = None

    @property
    def retain_key(self) -> str:
        """The bus keeps the latest report of each service, not just the latest report."""
        return self.service


RETAINED_TYPES: tuple[type, ...] = (
    ServiceLocations, ConfigChanged, SecretsLoaded, Membership, ServiceHealth,
)
"""Bus messages whose latest value is replayed to a (re)started subscriber, in this order.

ServiceLocations comes first so a restarted DiscoveryActor learns its last
answer (and the last good location of a missing service) before it decides anew.
"""


# Supervisor plumbing --------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    """Ask the supervisor to forward ``message`` to its subscribers."""

    message: Any
    sender: str


@dataclass(frozen=True)
class ChildFailed:
    """A child's ``on_receive`` raised; the child has stopped."""

    name: str
    error: str
    """The exception's class and message (never a secret)."""


@dataclass(frozen=True)
class Ping:
    """Liveness probe, to which a live actor replies ``True``."""


@dataclass(frozen=True)
class GetStatus:
    """Ask an actor for a dict describing its state."""


@dataclass(frozen=True)
class Tick:
    """A timer that fired, named by ``name``."""

    name: str = "tick"


@dataclass(frozen=True)
class RestartChild:
    """A backoff delay has passed: start the named child again."""

    name: str


@dataclass(frozen=True)
class Abandon:
    """A replacement instance runs: release resources at once, do nothing else, then stop."""


@dataclass(frozen=True)
class Retire:
    """The service is no longer enabled: remove its container (never its data) and stop."""


# Fault injection --------------------------------------------------------------


@dataclass(frozen=True)
class InjectCrash:
    """Make the receiving actor raise, as a bug would."""


@dataclass(frozen=True)
class InjectHang:
    """Make the receiving actor stop answering for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Inject:
    """Ask the supervisor to deliver a fault to the named child."""

    target: str
    fault: Any


@dataclass(frozen=True)
class InjectDockerFailure:
    """Make every Docker call of the receiving ContainerActor fail (``enabled``) or work again.

    The fault lives in the actor's DockerAdapter, so a restarted actor starts without it.
    """

    enabled: bool


@dataclass(frozen=True)
class InjectGossipFault:
    """Make the GossipActor drop or delay its outgoing packets; ``None`` keeps a setting as is."""

    drop_percent: float | None = None
    """Share of packets dropped at random, 0 to 100."""
    delay_ms: float | None = None
    """Delay added before each packet is sent, in milliseconds."""


# Control socket commands ------------------------------------------------------


@dataclass(frozen=True)
class GetChildRefs:
    """Ask the supervisor for the refs of its running children, keyed by child name."""


@dataclass(frozen=True)
class RestartContainer:
    """Stop and start the ContainerActor's container (same container, same ID).

    Sent with ``tell``: the stop can take Docker's whole stop timeout, so the
    actor stops the container in a helper thread and keeps answering pings.
    """

    reply: Any = None
    """A ``pykka.ThreadingFuture`` set with a dict: the result, or ``{"error": ...}``."""


@dataclass(frozen=True)
class KeyringChanged:
    """The gossip keyring in the secrets file changed (installed, primary or removed key)."""

    secrets: Secrets = field(repr=False)
    """``cluster_key`` is the primary key; ``extra_cluster_keys`` also decrypt."""
