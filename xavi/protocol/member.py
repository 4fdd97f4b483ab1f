"""Member records: the local node's settings, fault switches, and any member's table entry.

``MemberConfig`` is what the I/O shell passes to the engine. ``NodeRecord`` is
the mutable entry that ``MemberTable`` keeps per member (memberlist's
``nodeState``); ``NodeInfo`` in ``outputs`` is its immutable snapshot.
``verify_protocol`` is the version check of a push/pull exchange.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from xavi.protocol.constants import (
    META_MAX_SIZE,
    PROTOCOL_VERSION_2_COMPATIBLE,
    PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_MIN,
    SERF_DELEGATE_VERSION_CURRENT,
    SERF_DELEGATE_VERSION_MAX,
    SERF_DELEGATE_VERSION_MIN,
)
from xavi.protocol.messages import NodeStateKind, PushNodeState, Vsn
from xavi.protocol.outputs import Address, NodeInfo
from xavi.protocol.timing import LAN, Timing

__all__ = [
    "DEFAULT_VSN",
    "Faults",
    "MemberConfig",
    "NodeRecord",
    "ProtocolVersionError",
    "addr_text",
    "verify_protocol",
]


# TODO(errors): move into xavi/protocol/errors.py, because that module contains the
# wire layer's exception tree and is owned by the codec work.
class ProtocolVersionError(ValueError):
    """A push/pull peer's protocol or delegate version range does not fit the cluster's."""


@lru_cache(maxsize=4096)
def addr_text(addr: bytes) -> str:
    """Return the text form of a raw 4- or 16-byte IP address, or "" if it is neither."""
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return ""


@dataclass(slots=True, eq=False)
class NodeRecord:
    """Mutable table entry for one member (memberlist's nodeState)."""

    name: str
    addr: bytes
    port: int
    meta: bytes
    vsn: Vsn
    incarnation: int = 0
    state: NodeStateKind = NodeStateKind.DEAD
    state_change: float = -math.inf
    """Clock time of the last state change; minus infinity for never."""

    @property
    def address(self) -> tuple[str, int]:
        """Host text and port of the member."""
        return (addr_text(self.addr), self.port)

    @property
    def protocol_max(self) -> int:
        """Highest memberlist protocol version the member understands."""
        return self.vsn[1]

    def dead_or_left(self) -> bool:
        """Return True for members in state DEAD or LEFT."""
        return self.state in (NodeStateKind.DEAD, NodeStateKind.LEFT)

    def info(self) -> NodeInfo:
        """Return an immutable snapshot."""
        return NodeInfo(
            self.name, self.addr, self.port, self.meta, self.state, self.incarnation, self.vsn
        )


# Protocol 1-5 speaking 2, and serf's delegate range 2-5 speaking 4.
DEFAULT_VSN: Vsn = (
    PROTOCOL_VERSION_MIN,
    PROTOCOL_VERSION_MAX,
    PROTOCOL_VERSION_2_COMPATIBLE,
    SERF_DELEGATE_VERSION_MIN,
    SERF_DELEGATE_VERSION_MAX,
    SERF_DELEGATE_VERSION_CURRENT,
)


@dataclass(frozen=True, slots=True)
class MemberConfig:
    """Identity and settings of the local node."""

    name: str
    """Node name, unique in the cluster."""
    addr: bytes
    """Advertised IP address as 4 or 16 raw bytes."""
    port: int
    """Advertised gossip port, UDP and TCP."""
    meta: bytes = b""
    """Initial metadata, at most 512 bytes."""
    timing: Timing = LAN
    """Timing preset; memberlist's LAN values by default."""
    vsn: Vsn = DEFAULT_VSN
    """Protocol min, max, current, then delegate min, max, current."""
    encrypt_overhead: int = 0
    """Bytes that encryption adds to a packet: 29 with a keyring (protocol >= 2), else 0."""
    seeds: tuple[Address, ...] = field(default=())
    """Seed peers for the periodic rejoin. ``join()`` adds its addresses too."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("node name must not be empty")
        if len(self.meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(self.meta)} bytes, the limit is 512")
        if not addr_text(self.addr):
            raise ValueError(f"advertise address must be 4 or 16 bytes, got {len(self.addr)}")
        if not 0 < self.port < 65536:
            raise ValueError(f"advertise port must be 1-65535, got {self.port}")


@dataclass(slots=True)
class Faults:
    """Fault injection switches for tests and the control socket. All are off by default."""

    drop_packets: bool = False
    """Ignore every received packet, as if inbound UDP were blocked. Streams still work."""
    mute_acks: bool = False
    """Send no ack for any ping, over UDP or TCP, so probers suspect us while our gossip flows."""
    stall: bool = False
    """Fire no timer, like a hung process; ``next_deadline()`` returns None meanwhile.
    Overdue timers fire once when this is cleared."""


def verify_protocol(remote: Sequence[PushNodeState], local: Sequence[NodeRecord]) -> None:
    """Raise ProtocolVersionError unless every alive member can talk to every other.

    The common range is the highest minimum and the lowest maximum over all
    alive members, local and remote, and every member's current version must
    fall inside it, dead ones included (memberlist's verifyProtocol).
    """
    alive_vsns = [e.vsn for e in remote if e.state == NodeStateKind.ALIVE]
    alive_vsns += [n.vsn for n in local if n.state == NodeStateKind.ALIVE]
    pmin = max((v[0] for v in alive_vsns), default=0)
    pmax = min((v[1] for v in alive_vsns), default=255)
    dmin = max((v[3] for v in alive_vsns), default=0)
    dmax = min((v[4] for v in alive_vsns), default=255)
    everyone = [(e.name, e.vsn) for e in remote] + [(n.name, n.vsn) for n in local]
    for name, vsn in everyone:
        if not pmin <= vsn[2] <= pmax:
            raise ProtocolVersionError(
                f"node {name!r} speaks protocol version {vsn[2]}, outside the cluster's "
                f"common range [{pmin}, {pmax}]"
            )
        if not dmin <= vsn[5] <= dmax:
            raise ProtocolVersionError(
                f"node {name!r} speaks delegate protocol version {vsn[5]}, outside the "
                f"cluster's common range [{dmin}, {dmax}]; set the same delegate "
                f"protocol range on every node"
            )
