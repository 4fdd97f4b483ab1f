"""DiscoveryActor: decides where this host's dependent containers find each provider.

Inputs are the config (which services run locally) and the gossip
membership (which live hosts advertise which healthy services). The choice is
:func:`xavi.mesh.choose_locations`: local first, else a stable rendezvous
choice among live remote providers, identical on every host for the same
membership.

It publishes :class:`ServiceLocations` only when the answer changes, so the
app and the backup bot are recreated only then. While no live host provides a
service, the last good location stays in the published answer (the dependent
container keeps its values instead of flapping) and the service is listed as
missing, logged once per change and shown by ``status``.
"""

from __future__ import annotations

from typing import Any

import pykka

from xavi import log
from xavi.actors.base import XaviActor
from xavi.actors.messages import ConfigChanged, ServiceLocations
from xavi.mesh import Member, Membership, choose_locations
from xavi.services import DEPENDENTS, PROVIDERS, Location


class DiscoveryActor(XaviActor):
    """Publishes service locations for this host."""

    subscriptions = (ServiceLocations, ConfigChanged, Membership)

    def __init__(self, supervisor: pykka.ActorRef[Any] | None) -> None:
        super().__init__("discovery", supervisor)
        self.node = ""
        self.local_services: tuple[str, ...] | None = None
        self.members: tuple[Member, ...] = ()
        self.published: ServiceLocations | None = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, ConfigChanged):
            self.node = message.config.cluster.node_name
            self.local_services = message.config.services
            self._decide()
        elif isinstance(message, ServiceLocations):
            # The bus replays the last answer to a restarted instance before
            # anything else; keeping it preserves the last good locations.
            if self.published is None:
                self.published = message
        elif isinstance(message, Membership):
            self.members = message.members
            self._decide()
        else:
            return super().handle(message)
        return None

    def _decide(self) -> None:
        if self.local_services is None:
            return
        fresh = choose_locations(self.node, self.local_services, self.members)
        previous = self.published.locations if self.published else {}
        locations: dict[str, Location] = dict(fresh)
        missing = []
        for service in PROVIDERS:
            if service in fresh:
                continue
            missing.append(service)
            if service in previous:
                locations[service] = previous[service]
        answer = ServiceLocations(locations=locations, missing=tuple(missing))
        if answer == self.published:
            return
        newly_missing = set(missing) - set(self.published.missing if self.published else ())
        self.published = answer
        # Only a host that runs a dependent (app, backup bot) is hurt by a missing
        # provider; a gossip-only or provider-only host just notes it.
        level = "WARNING" if set(DEPENDENTS) & set(self.local_services) else "DEBUG"
        for service in sorted(newly_missing):
            kept = locations.get(service)
            log.event(level, "service_missing", service=service,
                        reason="not enabled on this host and no live host advertises it",
                        keeping=f"{kept.host}:{kept.port}" if kept else "nothing")
        log.info("service_locations",
                 **{s: f"{loc.host}:{loc.port}" for s, loc in fresh.items()},
                 missing=",".join(missing) or "none")
        self.publish(answer)

    def status(self) -> dict[str, Any]:
        published = self.published
        return {
            "locations": {
                s: {"host": loc.host, "port": loc.port, "local": loc.local, "node": loc.node,
                    "missing": s in published.missing}
                for s, loc in (published.locations if published else {}).items()
            },
            "missing": list(published.missing) if published else [],
            "members": len(self.members),
        }
