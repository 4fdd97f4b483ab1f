"""Network model of the simulator: clock, event heap, links, and delivery of engine outputs.

``SimNetwork`` is the base of ``xavi.protocol.sim.Simulator``. It owns the
fake clock and the heap of pending actions, the per-link loss and the
partition, and it turns each engine's outputs into deliveries, as the
module docstring of ``sim`` describes. ``SimNode`` and ``SimStats`` are the
records it keeps per host and for the whole network.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from xavi.protocol import codec
from xavi.protocol.constants import COMPOUND_OVERHEAD, CRC_HEADER_SIZE
from xavi.protocol.member import MemberConfig, ProtocolVersionError
from xavi.protocol.messages import Message, PushPull, Vsn
from xavi.protocol.node import Memberlist
from xavi.protocol.outputs import (
    Address,
    Event,
    Output,
    SendPacket,
    SendTcpPing,
    StartPushPull,
)
from xavi.protocol.timing import LAN, Timing

__all__ = ["SIM_PORT", "SimNetwork", "SimNode", "SimStats"]


@functools.lru_cache(maxsize=1 << 16)
def _cached_encode(message: Message) -> bytes:
    # Thousands of engines re-broadcast equal alive messages during a join
    # storm; the records are frozen and hashable, so one encoding serves all.
    return codec.encode_message(message)


SIM_PORT = 7946

# Heap entry: time, insertion number (ties run in insertion order), action.
_HeapEntry = tuple[float, int, Callable[[], None]]


@dataclass(slots=True, eq=False)
class SimNode:
    """One simulated host."""

    name: str
    addr: bytes
    address: Address
    engine: Memberlist
    running: bool = True
    scheduled: float | None = None
    """Time of this node's pending tick entry in the heap, if any."""
    packets_sent: int = 0
    messages_sent: int = 0


@dataclass(slots=True)
class SimStats:
    """Network-wide counters."""

    packets_sent: int = 0
    packets_delivered: int = 0
    packets_lost: int = 0
    packets_blocked: int = 0
    messages_sent: int = 0
    push_pulls: int = 0
    push_pulls_failed: int = 0
    tcp_pings: int = 0
    type_counts: dict[type, int] = field(default_factory=dict)
    """Messages sent per record type, unless the simulator was made with count_types=False."""

    @property
    def by_type(self) -> dict[str, int]:
        """Messages sent per record type name, such as ``"Ping"``."""
        return {kind.__name__: count for kind, count in self.type_counts.items()}


class SimNetwork:
    """Fake clock, links and delivery for many engines."""

    def __init__(
        self,
        seed: int = 0,
        *,
        timing: Timing = LAN,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.005),
        encode: Callable[[Message], bytes] | None = None,
        wire: bool = False,
        record_events: bool = True,
        count_types: bool = True,
        event_hook: Callable[[float, str, Event], None] | None = None,
    ) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.timing = timing
        self.default_loss = loss
        self.delay = delay
        self.encode = encode if encode is not None else _cached_encode
        """Encoder handed to every engine. The default caches the real codec's output."""
        self.wire = wire
        """True runs every packet through the real codec and checks its size."""
        self.nodes: dict[str, SimNode] = {}
        self.stats = SimStats()
        self.events: list[tuple[float, str, Event]] = []
        """(time, observer, event) for every engine event, when record_events is set."""
        self._record_events = record_events
        self._count_types = count_types
        self._event_hook = event_hook
        self._by_address: dict[Address, SimNode] = {}
        self._link_loss: dict[tuple[str, str], float] = {}
        self._group_of: dict[str, int] | None = None
        self._heap: list[_HeapEntry] = []
        self._seq = 0

    # --- links ------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups. Unlisted nodes form one more group."""
        group_of: dict[str, int] = {}
        for number, group in enumerate(groups, start=1):
            for name in group:
                group_of[name] = number
        self._group_of = group_of

    def heal(self) -> None:
        """Remove the partition."""
        self._group_of = None

    def set_loss(self, probability: float, src: str | None = None, dst: str | None = None) -> None:
        """Set the loss probability of every link, or of the one link ``src`` to ``dst``."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"loss probability must be in [0, 1], got {probability}")
        if src is None and dst is None:
            self.default_loss = probability
            self._link_loss.clear()
        elif src is not None and dst is not None:
            self._link_loss[(src, dst)] = probability
        else:
            raise ValueError("give both src and dst for one link, or neither for all links")

    def reachable(self, src: str, dst: str) -> bool:
        """Return True unless a partition separates the two nodes."""
        groups = self._group_of
        if groups is None:
            return True
        return groups.get(src, 0) == groups.get(dst, 0)

    # --- internals --------------------------------------------------------

    def _make_engine(
        self, name: str, addr: bytes, meta: bytes, timing: Timing, vsn: Vsn
    ) -> Memberlist:
        config = MemberConfig(name, addr, SIM_PORT, meta, timing, vsn)
        rng = random.Random(self.rng.getrandbits(64))
        return Memberlist(config, lambda: self.now, rng, self.encode)

    def _push(self, when: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action))

    def _random_delay(self) -> float:
        low, high = self.delay
        return low if high <= low else self.rng.uniform(low, high)

    def _after(self, node: SimNode) -> None:
        """Route a node's outputs and keep one tick entry at its next deadline."""
        if not node.running:
            return
        engine = node.engine
        for output in engine.poll_outputs():
            self._route(node, output)
        deadline = engine.next_deadline()
        if deadline is None:
            return
        deadline = max(deadline, self.now)
        if node.scheduled is None or deadline < node.scheduled:
            node.scheduled = deadline
            self._push(deadline, functools.partial(self._tick, node, deadline))

    def _route(self, node: SimNode, output: Output) -> None:
        if isinstance(output, SendPacket):
            self._send_packet(node, output)
        elif isinstance(output, StartPushPull):
            self._start_push_pull(node, output)
        elif isinstance(output, SendTcpPing):
            self._start_tcp_ping(node, output)
        elif isinstance(output, Event):
            if self._record_events:
                self.events.append((self.now, node.name, output))
            if self._event_hook is not None:
                self._event_hook(self.now, node.name, output)

    def _send_packet(self, node: SimNode, packet: SendPacket) -> None:
        stats = self.stats
        stats.packets_sent += 1
        stats.messages_sent += len(packet.messages)
        node.packets_sent += 1
        node.messages_sent += len(packet.messages)
        if self._count_types:
            counts = stats.type_counts
            for message in packet.messages:
                kind = type(message)
                counts[kind] = counts.get(kind, 0) + 1
        messages: list[Message] | tuple[Message, ...] = packet.messages
        if self.wire:
            messages = self._through_codec(packet)
        target = self._by_address.get(packet.addr)
        if target is None or not self.reachable(node.name, target.name):
            stats.packets_blocked += 1
            return
        loss = self._link_loss.get((node.name, target.name), self.default_loss)
        if loss > 0.0 and self.rng.random() < loss:
            stats.packets_lost += 1
            return
        deliver = functools.partial(self._deliver, target, node.address, messages)
        self._push(self.now + self._random_delay(), deliver)

    def _through_codec(self, packet: SendPacket) -> list[Message]:
        encoded = [
            data if data is not None else self.encode(message)
            for message, data in zip(packet.messages, packet.encoded, strict=True)
        ]
        data = codec.encode_packet(encoded, crc=packet.crc)
        # memberlist's sendMsg leaves the first part's 2-byte length out of its
        # reservation, and a CRC header adds 5 bytes on top of the budget.
        budget = self.timing.udp_buffer_size + COMPOUND_OVERHEAD + CRC_HEADER_SIZE
        if len(data) > budget:
            raise AssertionError(f"packet of {len(data)} bytes exceeds the budget of {budget}")
        return codec.decode_packet(data)

    def _start_push_pull(self, node: SimNode, request: StartPushPull) -> None:
        self.stats.push_pulls += 1
        state = node.engine.local_state(request.join)
        target = self._by_address.get(request.addr)
        if target is None or not target.running:
            failed = functools.partial(self._push_pull_failed, node, request.addr)
            self._push(self.now + self._random_delay(), failed)
        elif not self.reachable(node.name, target.name):
            timeout = node.engine.timing.tcp_timeout
            failed = functools.partial(self._push_pull_failed, node, request.addr)
            self._push(self.now + timeout, failed)
        else:
            answer = functools.partial(self._answer_push_pull, node, target, state)
            self._push(self.now + self._random_delay(), answer)

    def _start_tcp_ping(self, node: SimNode, request: SendTcpPing) -> None:
        self.stats.tcp_pings += 1
        target = self._by_address.get(request.addr)
        ok = (
            target is not None
            and target.running
            and self.reachable(node.name, target.name)
            and not self._handshake_lost(node, target)
            and target.engine.handle_stream_ping(request.ping) is not None
        )
        when = self.now + 2 * self._random_delay() if ok else request.deadline
        result = functools.partial(self._tcp_ping_result, node, request.ping.seq_no, ok)
        self._push(min(when, request.deadline), result)

    def _handshake_lost(self, node: SimNode, target: SimNode) -> bool:
        # A lost SYN or SYN-ACK is retransmitted after about a second, later
        # than the probe deadline, so one loss in each direction fails a ping.
        rng = self.rng
        there = self._link_loss.get((node.name, target.name), self.default_loss)
        back = self._link_loss.get((target.name, node.name), self.default_loss)
        return (there > 0.0 and rng.random() < there) or (back > 0.0 and rng.random() < back)

    def _tick(self, node: SimNode, when: float) -> None:
        if node.scheduled != when or not node.running:
            return
        node.scheduled = None
        node.engine.tick(when)
        self._after(node)

    def _deliver(self, target: SimNode, source: Address, messages: Sequence[Message]) -> None:
        if target.running:
            self.stats.packets_delivered += 1
            target.engine.handle_packet(source, messages, self.now)
            self._after(target)

    def _merge_answer(self, initiator: SimNode, source: Address, answer: PushPull) -> None:
        if not initiator.running:
            return
        try:
            initiator.engine.merge_remote_state(answer, self.now)
        except ProtocolVersionError as exc:
            initiator.engine.push_pull_failed(source, str(exc))
        self._after(initiator)

    def _push_pull_failed(self, initiator: SimNode, addr: Address) -> None:
        self.stats.push_pulls_failed += 1
        if initiator.running:
            initiator.engine.push_pull_failed(addr)
            self._after(initiator)

    def _tcp_ping_result(self, initiator: SimNode, seq_no: int, ok: bool) -> None:
        if initiator.running:
            initiator.engine.handle_tcp_ping_result(seq_no, ok, self.now)
            self._after(initiator)

    def _answer_push_pull(self, initiator: SimNode, target: SimNode, state: PushPull) -> None:
        if not target.running or not self.reachable(initiator.name, target.name):
            self._push(
                self.now, functools.partial(self._push_pull_failed, initiator, target.address)
            )
            return
        answer = target.engine.handle_push_pull(initiator.address, state, self.now)
        self._after(target)
        merge = functools.partial(self._merge_answer, initiator, target.address, answer)
        self._push(self.now + self._random_delay(), merge)
