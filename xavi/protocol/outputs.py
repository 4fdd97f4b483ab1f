"""Records that the SWIM engine hands to its I/O shell, and the member snapshot.

The engine (``xavi.protocol.node.Memberlist``) never touches a socket. Each
call that changes its state may queue output records, which the shell drains
with ``poll_outputs()`` and carries out in order:

- ``SendPacket``: send one UDP packet holding ``messages``. The shell encodes
  them (``encoded`` holds the bytes where the engine already has them), wraps
  two or more in a compound message, adds a CRC when ``crc`` is set, and
  compresses and encrypts as configured.
- ``StartPushPull``: open a TCP stream to ``addr``, send
  ``engine.local_state(join)``, read the peer's answer and pass it to
  ``engine.merge_remote_state``. On any failure call
  ``engine.push_pull_failed``.
- ``SendTcpPing``: open a TCP stream, send ``ping``, wait for an ack with the
  same sequence number until ``deadline``, and report with
  ``engine.handle_tcp_ping_result``.
- ``Event``: membership change for the application.
- ``UserMessage``: opaque delegate payload that arrived in a packet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from xavi.protocol.messages import Message, NodeStateKind, Ping, Vsn

__all__ = [
    "Address",
    "Event",
    "EventKind",
    "NodeInfo",
    "Output",
    "SendPacket",
    "SendTcpPing",
    "StartPushPull",
    "UserMessage",
]

# Host (IP address text) and port of a peer.
Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Snapshot of one member as this engine sees it."""

    name: str
    """Node name, unique in the cluster."""
    addr: bytes
    """Advertised IP address, 4 or 16 raw bytes."""
    port: int
    """Advertised gossip port (UDP and TCP)."""
    meta: bytes
    """Application metadata, at most 512 bytes."""
    state: NodeStateKind
    """ALIVE, SUSPECT, DEAD, or LEFT for a member that announced its departure."""
    incarnation: int
    """Latest incarnation number seen for the member."""
    vsn: Vsn
    """Protocol min, max, current, then delegate min, max, current."""


class EventKind(Enum):
    """Membership changes, as memberlist's EventDelegate and ConflictDelegate report them."""

    JOIN = "join"
    """A member became alive after being unknown, dead or left."""
    LEAVE = "leave"
    """A member was declared dead (state DEAD) or announced its departure (state LEFT)."""
    UPDATE = "update"
    """A live member changed its metadata."""
    CONFLICT = "conflict"
    """Another address claims a known member's name. The claim was rejected."""


@dataclass(frozen=True, slots=True)
class Event:
    """Membership change."""

    kind: EventKind
    """What happened."""
    node: NodeInfo
    """The member after the change. For CONFLICT, the member as known before the claim."""
    other: NodeInfo | None = None
    """For CONFLICT only: the rejected claim."""


@dataclass(frozen=True, slots=True)
class SendPacket:
    """One UDP packet to send."""

    addr: Address
    """Destination host and port."""
    messages: tuple[Message, ...]
    """Messages in order. Two or more go into one compound message."""
    encoded: tuple[bytes | None, ...]
    """Encoded form of each message where the engine has it, else None."""
    node: str = ""
    """Name of the destination member, empty when not known."""
    crc: bool = False
    """True to add a CRC header, as memberlist does for members with protocol max >= 5."""


@dataclass(frozen=True, slots=True)
class StartPushPull:
    """Request for a full state exchange over TCP."""

    addr: Address
    """Peer to connect to."""
    join: bool
    """True when this exchange joins (or rejoins) a cluster."""
    node: str = ""
    """Name of the peer, empty for a seed address."""


@dataclass(frozen=True, slots=True)
class SendTcpPing:
    """Fallback probe over TCP, sent beside the indirect probes."""

    addr: Address
    """Member to connect to."""
    ping: Ping
    """Ping to send. A matching ack proves the member is up."""
    deadline: float
    """Engine clock time by which the result must be reported."""
    node: str = ""
    """Name of the probed member."""


@dataclass(frozen=True, slots=True)
class UserMessage:
    """Delegate payload that arrived inside a packet."""

    payload: bytes
    """The payload as sent, without its type byte."""
    sender: Address
    """Source address of the packet."""


Output = SendPacket | StartPushPull | SendTcpPing | Event | UserMessage
