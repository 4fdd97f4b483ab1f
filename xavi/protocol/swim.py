"""Public API of Xavi's SWIM state machine: the memberlist 0.2.2 protocol without I/O.

Import from here. The modules behind it split the work by concern:

- ``node``: the ``Memberlist`` engine and its inputs (packets, push/pull,
  join, leave, metadata, ticks);
- ``probe``: failure detection rounds and indirect-ping relays;
- ``periodic``: gossip, push/pull and Xavi's seed rejoin;
- ``state``: the member table and memberlist's merge rules;
- ``member``: the local node's config, fault switches, table entries, and the
  push/pull version check;
- ``suspicion``, ``awareness``, ``broadcast``: Lifeguard's suspicion timers,
  the local health score, and the transmit-limited broadcast queue;
- ``timing``: memberlist's LAN, WAN and local presets;
- ``outputs``: the records the engine hands to its I/O shell;
- ``sim``: a deterministic in-memory network for many engines.

A shell's loop, in short::

    engine = Memberlist(MemberConfig(name, addr, port, meta), time.monotonic, random.Random())
    engine.join([(seed_host, seed_port)])
    while True:
        for output in engine.poll_outputs():
            ...  # SendPacket, StartPushPull, SendTcpPing, Event, UserMessage
        wait for a packet, a stream, or engine.next_deadline()
        engine.handle_packet(...) / engine.merge_remote_state(...) / engine.tick()
"""

from __future__ import annotations

from xavi.protocol.member import DEFAULT_VSN, Faults, MemberConfig, ProtocolVersionError
from xavi.protocol.node import Memberlist
from xavi.protocol.outputs import (
    Address,
    Event,
    EventKind,
    NodeInfo,
    Output,
    SendPacket,
    SendTcpPing,
    StartPushPull,
    UserMessage,
)
from xavi.protocol.timing import LAN, LOCAL, WAN, Timing

__all__ = [
    "DEFAULT_VSN",
    "LAN",
    "LOCAL",
    "WAN",
    "Address",
    "Event",
    "EventKind",
    "Faults",
    "MemberConfig",
    "Memberlist",
    "NodeInfo",
    "Output",
    "ProtocolVersionError",
    "SendPacket",
    "SendTcpPing",
    "StartPushPull",
    "Timing",
    "UserMessage",
]
