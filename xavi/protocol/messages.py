"""Typed records for the memberlist 0.2.2 gossip messages.

Each record mirrors one Go struct from memberlist's ``net.go``. The Python
field names are snake_case; the wire keys stay the Go field names, and
``xavi.protocol.codec`` maps between the two (see ``WIRE_FIELDS`` there).

Invariants:
- Records are immutable value objects (frozen dataclasses with slots), so
  the SWIM state machine can share them between actors without copying.
- Addresses are raw IP bytes as Go's ``net.IP`` is written by memberlist:
  4 bytes for IPv4 once memberlist has called ``To4()``, else 16 bytes.
- ``vsn`` tuples hold six small integers in memberlist's order:
  protocol min, max, current, then delegate min, max, current.
- Integer widths follow Go: sequence numbers and incarnations are uint32,
  ports are uint16, version bytes are uint8. The codec checks the ranges
  when it encodes and when it decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "Ack",
    "Alive",
    "Dead",
    "ErrResp",
    "IndirectPing",
    "Message",
    "MessageType",
    "Nack",
    "NodeStateKind",
    "Ping",
    "PushNodeState",
    "PushPull",
    "Suspect",
    "User",
    "Vsn",
]


class MessageType(IntEnum):
    """First byte of every memberlist message. The numbers are the protocol."""

    PING = 0
    INDIRECT_PING = 1
    ACK_RESP = 2
    SUSPECT = 3
    ALIVE = 4
    DEAD = 5
    PUSH_PULL = 6
    COMPOUND = 7
    USER = 8
    COMPRESS = 9
    ENCRYPT = 10
    NACK_RESP = 11
    HAS_CRC = 12
    ERR = 13
    # Label header from memberlist releases after 0.2.2. It is never the
    # first byte of an encrypted payload, so a 0.2.2 peer rejects it.
    HAS_LABEL = 244


class NodeStateKind(IntEnum):
    """Node state as memberlist 0.2.2 sends it in push/pull (``NodeStateType``)."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    # A node that announced its own departure. memberlist 0.2.2 stores it
    # locally and sends it in push/pull node states like the others.
    LEFT = 3


# Protocol min, max, current, delegate min, max, current.
Vsn = tuple[int, int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe of ``node``. The source fields ask for a direct reply."""

    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Request that the receiver probe ``node`` at ``target``:``port`` for us."""

    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """Reply to a ping with the same ``seq_no``. ``payload`` is delegate data."""

    seq_no: int
    payload: bytes = b""


@dataclass(frozen=True, slots=True)
class Nack:
    """Reply from an indirect prober whose target sent no ack in time."""

    seq_no: int


@dataclass(frozen=True, slots=True)
class Suspect:
    """Gossip that ``from_node`` suspects ``node`` at ``incarnation``."""

    incarnation: int
    node: str
    from_node: str


@dataclass(frozen=True, slots=True)
class Alive:
    """Gossip that ``node`` is alive at ``incarnation``. Also sent on join."""

    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes
    vsn: Vsn


@dataclass(frozen=True, slots=True)
class Dead:
    """Gossip that ``node`` is dead. ``from_node == node`` means it left."""

    incarnation: int
    node: str
    from_node: str


@dataclass(frozen=True, slots=True)
class User:
    """Opaque delegate message. Its body is the raw payload, not msgpack."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ErrResp:
    """Error text that a stream peer returns instead of the expected reply."""

    error: str


@dataclass(frozen=True, slots=True)
class PushNodeState:
    """One member's state in a push/pull exchange."""

    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    state: NodeStateKind
    vsn: Vsn


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full state exchange over a stream: every known member plus delegate state."""

    nodes: tuple[PushNodeState, ...]
    user_state: bytes = b""
    join: bool = False


Message = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | User | ErrResp
