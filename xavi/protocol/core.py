"""Shared state and helpers of the engine's parts (``Memberlist`` and its mixins).

``EngineCore`` declares the attributes that ``Memberlist.__init__`` sets and
implements what both the probe and the periodic parts use: the timer heap,
sequence numbers, and ``_send``, which fills a packet with piggybacked
broadcasts as memberlist's ``sendMsg`` does (``net.go``).
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Callable

from xavi.protocol.awareness import Awareness
from xavi.protocol.constants import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD,
    PROTOCOL_VERSION_CRC,
)
from xavi.protocol.member import Faults, MemberConfig
from xavi.protocol.messages import Message
from xavi.protocol.outputs import Address, Output, SendPacket
from xavi.protocol.state import MemberTable
from xavi.protocol.timing import Timing

__all__ = ["EngineCore", "TimerEntry", "TimerKind"]

# Timer heap entry: due time, insertion number (ties fire in order), kind, key.
TimerEntry = tuple[float, int, int, object]


class TimerKind(enum.IntEnum):
    """Kinds of entries in the engine's timer heap."""

    PROBE_TICK = 0
    GOSSIP_TICK = 1
    PUSH_PULL_TICK = 2
    REJOIN_TICK = 3
    PROBE_INDIRECT = 4
    PROBE_DEADLINE = 5
    PROBE_TCP_GRACE = 6
    RELAY_EXPIRY = 7
    SUSPICION = 8


class EngineCore:
    """Attributes and helpers shared by the engine's parts."""

    config: MemberConfig
    timing: Timing
    clock: Callable[[], float]
    rng: random.Random
    encode: Callable[[Message], bytes]
    awareness: Awareness
    table: MemberTable
    address: Address
    _outputs: list[Output]
    _timers: list[TimerEntry]
    _timer_seq: int
    _seq_no: int
    _seeds: list[Address]
    faults: Faults

    @property
    def name(self) -> str:
        """Local node name."""
        return self.config.name

    def _schedule(self, when: float, kind: int, key: object) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, key))

    def _next_seq_no(self) -> int:
        self._seq_no = (self._seq_no + 1) & 0xFFFFFFFF
        return self._seq_no

    def _send(self, addr: Address, message: Message, node_name: str = "") -> None:
        """Send one message and fill the rest of the packet with queued broadcasts."""
        encoded = self.encode(message)
        budget = self.timing.udp_buffer_size - len(encoded) - COMPOUND_HEADER_OVERHEAD
        budget -= self.config.encrypt_overhead
        extra = self.table.broadcasts.get_broadcasts(COMPOUND_OVERHEAD, budget)
        # memberlist looks the receiver up by the bare IP text, which finds a
        # member only when node names are IP addresses.
        named = self.table.by_name.get(addr[0])
        crc = named is not None and named.protocol_max >= PROTOCOL_VERSION_CRC
        messages = (message, *(item.message for item in extra))
        encodings = (encoded, *(item.encoded for item in extra))
        self._outputs.append(SendPacket(addr, messages, encodings, node_name, crc))
