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


@dataclass(frozen=True)
class ServiceHealth:
    """A ContainerActor's report on its service."""

    service: str
    running: bool
    healthy: bool
    container_id: str | None = None


RETAINED_TYPES: tuple[type, ...] = (ConfigChanged, SecretsLoaded, ServiceLocations)
"""Bus messages whose latest value is replayed to a (re)started subscriber."""


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
    """Liveness probe; a live actor answers ``True``."""


@dataclass(frozen=True)
class GetStatus:
    """Ask an actor for a dict describing its state."""


@dataclass(frozen=True)
class Tick:
    """A timer fired; ``name`` says which."""

    name: str = "tick"


@dataclass(frozen=True)
class RestartChild:
    """A backoff delay has passed: start the named child again."""

    name: str


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
