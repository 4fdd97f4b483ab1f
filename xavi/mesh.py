"""What Xavi nodes tell each other through gossip metadata, and how a host picks providers.

Metadata: each node's memberlist metadata is serf's tag encoding (a ``0xff``
byte, then a msgpack map of strings; at most 512 bytes), so ``serf members``
lists Xavi nodes with their tags. Xavi's tags:

- ``xavi``: the agent's version; marks the member as a Xavi node.
- ``services``: the enabled services that run and are healthy on the node,
  each with the host port it is published on at the node's advertised address,
  as ``postgres=5432,valkey=6379`` (sorted; empty when none).

Choice (pure, so every host computes the same answer from the same
membership): a provider enabled on this host is used locally, by container
name. Otherwise, among live remote members (alive or suspect) that advertise
the service, the one with the highest rendezvous hash of
``service + node name`` wins. A node that does not provide the service never
changes the answer when it joins or leaves, and a provider joining moves the
answer only when it wins the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from xavi.services import PROVIDERS, Location, container_name

TAG_VERSION = "xavi"
TAG_SERVICES = "services"
LIVE_STATES = ("alive", "suspect")
CONTAINER_PORTS = {"postgres": 5432, "valkey": 6379}
"""Ports of the providers inside the ``xavi`` network, used for local locations."""


@dataclass(frozen=True)
class Member:
    """One mesh member as the gossip layer reports it."""

    name: str
    address: str
    """Advertised IP address."""
    port: int
    """Gossip port."""
    state: str
    """``alive``, ``suspect``, ``dead`` or ``left``."""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def services(self) -> dict[str, int]:
        """Return the healthy services the member advertises, with their published ports."""
        return parse_services_tag(self.tags.get(TAG_SERVICES, ""))

    @property
    def is_xavi(self) -> bool:
        """Whether the member is a Xavi agent (other memberlist nodes may share the mesh)."""
        return TAG_VERSION in self.tags


@dataclass(frozen=True)
class Membership:
    """The local GossipActor's view of the mesh, published on every change."""

    local: str
    """The local node's name."""
    members: tuple[Member, ...]


def format_services_tag(services: Mapping[str, int]) -> str:
    """Return the ``services`` tag value for healthy services and their ports."""
    return ",".join(f"{name}={port}" for name, port in sorted(services.items()))


def parse_services_tag(value: str) -> dict[str, int]:
    """Parse a ``services`` tag written by any node; malformed entries are skipped."""
    services = {}
    for item in value.split(","):
        name, sep, port = item.partition("=")
        if sep and name in PROVIDERS and port.isdigit() and 0 < int(port) < 65536:
            services[name] = int(port)
    return services


def rendezvous_score(service: str, node: str) -> bytes:
    """Return the rendezvous hash that ranks ``node`` as a provider of ``service``."""
    return hashlib.sha256(f"{service}\0{node}".encode()).digest()


def choose_locations(
    local_node: str,
    local_services: Iterable[str],
    members: Iterable[Member],
) -> dict[str, Location]:
    """Return, for each provider service, where this host reaches it; absent when nowhere."""
    enabled = set(local_services)
    candidates: dict[str, list[Member]] = {service: [] for service in PROVIDERS}
    for member in members:
        if member.name == local_node or member.state not in LIVE_STATES:
            continue
        for service in member.services:
            candidates[service].append(member)

    locations = {}
    for service in PROVIDERS:
        if service in enabled:
            locations[service] = Location(host=container_name(service),
                                          port=CONTAINER_PORTS[service], local=True,
                                          node=local_node)
            continue
        providers = candidates[service]
        if not providers:
            continue
        best = max(providers, key=lambda m: rendezvous_score(service, m.name))
        locations[service] = Location(host=best.address, port=best.services[service],
                                      local=False, node=best.name)
    return locations
