"""DiscoveryActor: decides where this host's dependent containers find each provider.

Rule: a provider enabled on this host is reached by its container name on the
``xavi`` network (``xavi-postgres:5432``). Remote providers come from gossip
membership; until the gossip layer reports members, services not enabled
locally have no location, and dependents get no ``*_HOST`` for them.
It publishes :class:`ServiceLocations` only when the answer changes.
"""

from __future__ import annotations

from typing import Any

import pykka

from xavi import log
from xavi.actors.base import XaviActor
from xavi.actors.messages import ConfigChanged, ServiceLocations
from xavi.services import (
    POSTGRES_CONTAINER_PORT,
    PROVIDERS,
    VALKEY_CONTAINER_PORT,
    Location,
    container_name,
)

CONTAINER_PORTS = {"postgres": POSTGRES_CONTAINER_PORT, "valkey": VALKEY_CONTAINER_PORT}


class DiscoveryActor(XaviActor):
    """Publishes service locations for this host."""

    subscriptions = (ConfigChanged,)

    def __init__(self, supervisor: pykka.ActorRef[Any] | None) -> None:
        super().__init__("discovery", supervisor)
        self.locations: dict[str, Location] | None = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, ConfigChanged):
            self._decide(message.config.services, message.config.cluster.node_name)
            return None
        return super().handle(message)

    def _decide(self, local_services: tuple[str, ...], node: str) -> None:
        locations = {
            service: Location(host=container_name(service), port=CONTAINER_PORTS[service],
                              local=True, node=node)
            for service in PROVIDERS
            if service in local_services
        }
        if locations == self.locations:
            return
        self.locations = locations
        for service in PROVIDERS:
            if service not in locations:
                log.warning("service_missing", service=service,
                            reason="not enabled on this host and no remote provider known")
        log.info("service_locations", **{s: f"{l.host}:{l.port}" for s, l in locations.items()})
        self.publish(ServiceLocations(locations=locations))

    def status(self) -> dict[str, Any]:
        return {
            "locations": {
                s: {"host": l.host, "port": l.port, "local": l.local, "node": l.node}
                for s, l in (self.locations or {}).items()
            }
        }
