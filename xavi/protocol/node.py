"""Sans-I/O engine of memberlist 0.2.2's SWIM protocol with Lifeguard extensions.

``Memberlist`` keeps one node's view of the cluster and follows the library's
behaviour (``memberlist.go``, ``state.go``, ``net.go``), so Python and Go
nodes form one cluster. It owns no socket and no timer: the shell feeds it
decoded messages and the clock, drains ``poll_outputs()``, and calls
``tick()`` at ``next_deadline()``. Time is the injected clock's seconds, and
every method that takes ``now`` reads the clock when it is omitted. All
randomness comes from the injected ``random.Random``, so a seeded run is
repeatable.

Periodic work, each timer started at a random phase:

- probe every ``probe_interval`` (see ``xavi.protocol.probe``), walking a
  shuffled member list round-robin; each wrap reaps long-dead members;
- gossip every ``gossip_interval``: queued broadcasts to ``gossip_nodes``
  random members that are alive, suspect, or dead for less than
  ``gossip_to_the_dead_time``;
- push/pull with one random live member every ``push_pull_interval``, scaled
  up above 32 members;
- Xavi only: every ``rejoin_interval``, a join push/pull with each seed
  address that is not a live member, so a long partition heals.

Invariants: the local node is always in the table; outputs come out in the
order the engine produced them; after ``shutdown()`` every input is ignored.
Known deviation: memberlist hands alive/suspect/dead messages to a separate
goroutine through a LIFO queue, while this engine applies them at once in
packet order.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable

from loguru import logger

from xavi.protocol import codec
from xavi.protocol.awareness import Awareness
from xavi.protocol.constants import META_MAX_SIZE
from xavi.protocol.core import TimerEntry, TimerKind
from xavi.protocol.member import (
    DEFAULT_VSN,
    Faults,
    MemberConfig,
    ProtocolVersionError,
    addr_text,
)
from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    User,
)
from xavi.protocol.outputs import Address, NodeInfo, Output, StartPushPull, UserMessage
from xavi.protocol.periodic import PeriodicMixin
from xavi.protocol.probe import ProbeMixin
from xavi.protocol.state import MemberTable

__all__ = ["DEFAULT_VSN", "Faults", "MemberConfig", "Memberlist"]


class Memberlist(ProbeMixin, PeriodicMixin):
    """One node of a memberlist cluster, without I/O. See the module docstring."""

    def __init__(
        self,
        config: MemberConfig,
        clock: Callable[[], float],
        rng: random.Random,
        encode: Callable[[Message], bytes] = codec.encode_message,
    ) -> None:
        self.config = config
        self.timing = config.timing
        self.clock = clock
        self.rng = rng
        self.encode = encode
        self.address: Address = (addr_text(config.addr), config.port)
        self.awareness = Awareness(self.timing.awareness_max_multiplier)
        self._outputs: list[Output] = []
        self._timers: list[TimerEntry] = []
        self._timer_seq = 0
        self._seq_no = 0
        self._shutdown = False
        self._seeds: list[Address] = []
        self.leave_complete = False
        """True once the leave broadcast went out, or at once when no other member was alive."""
        self.faults = Faults()
        """Fault injection switches; the shell may change them at any time."""
        self.table = MemberTable(
            config.name,
            self.timing,
            rng,
            self.awareness,
            encode,
            self._outputs.append,
            self._schedule_suspicion,
        )
        self._init_probe_state()
        for seed in config.seeds:
            self._add_seed(seed)

        now = clock()
        incarnation = self.table.next_incarnation()
        alive = Alive(incarnation, config.name, config.addr, config.port, config.meta, config.vsn)
        self.table.alive_node(alive, now, bootstrap=True)
        self._start_timers(now)

    # --- queries ----------------------------------------------------------

    @property
    def health_score(self) -> int:
        """Lifeguard health score; 0 is healthy."""
        return self.awareness.score

    @property
    def has_left(self) -> bool:
        """True after ``leave()``."""
        return self.table.has_left

    def local_node(self) -> NodeInfo:
        """Return the local node's entry."""
        return self.table.by_name[self.name].info()

    def node(self, name: str) -> NodeInfo | None:
        """Return the entry for ``name``, or None if it is unknown or was reaped."""
        record = self.table.by_name.get(name)
        return record.info() if record is not None else None

    def nodes(self) -> list[NodeInfo]:
        """Return every entry, dead and left ones included."""
        return [record.info() for record in self.table.nodes]

    def members(self) -> list[NodeInfo]:
        """Return the members that are alive or suspect, the local node included."""
        return [record.info() for record in self.table.nodes if not record.dead_or_left()]

    def num_members(self) -> int:
        """Return how many members are alive or suspect, the local node included."""
        return sum(1 for record in self.table.nodes if not record.dead_or_left())

    # --- outputs and time -------------------------------------------------

    def poll_outputs(self) -> list[Output]:
        """Return and clear the outputs produced since the last call."""
        outputs = self._outputs[:]
        self._outputs.clear()
        return outputs

    def next_deadline(self) -> float | None:
        """Return the clock time at which ``tick()`` has work.

        Returns None after shutdown and while ``faults.stall`` is set, so a
        shell reads it again after changing the faults.
        """
        if self.faults.stall:
            return None
        timers = self._timers
        while timers and not self._timer_is_live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def tick(self, now: float | None = None) -> None:
        """Run every timer that is due at ``now``."""
        if self.faults.stall:
            return
        now = self.clock() if now is None else now
        timers = self._timers
        while timers and timers[0][0] <= now and not self._shutdown:
            entry = heapq.heappop(timers)
            if self._timer_is_live(entry):
                self._fire(entry, now)

    # --- inputs -----------------------------------------------------------

    def handle_packet(
        self, from_addr: Address, messages: Iterable[Message], now: float | None = None
    ) -> None:
        """Process the messages of one received packet, in order."""
        if self._shutdown or self.faults.drop_packets:
            return
        now = self.clock() if now is None else now
        table = self.table
        by_name = table.by_name
        local_name = self.config.name
        for message in messages:
            kind = type(message)
            if kind is Alive:
                alive: Alive = message  # type: ignore[assignment]
                record = by_name.get(alive.node)
                if (
                    record is not None
                    and alive.incarnation <= record.incarnation
                    and alive.port == record.port
                    and alive.addr == record.addr
                    and alive.node != local_name
                ):
                    # Old news, the bulk of gossip: alive_node would ignore it too.
                    continue
                table.alive_node(self._fill_alive_port(alive), now)
            elif kind is Ping:
                self._handle_ping(from_addr, message)  # type: ignore[arg-type]
            elif kind is Ack:
                self._handle_ack(message, now)  # type: ignore[arg-type]
            elif kind is Suspect:
                table.suspect_node(message, now)  # type: ignore[arg-type]
            elif kind is Dead:
                table.dead_node(message, now)  # type: ignore[arg-type]
            elif kind is IndirectPing:
                self._handle_indirect_ping(from_addr, message, now)  # type: ignore[arg-type]
            elif kind is Nack:
                self._handle_nack(message)  # type: ignore[arg-type]
            elif kind is User:
                self._outputs.append(UserMessage(message.payload, from_addr))  # type: ignore[union-attr]
            # ErrResp only travels on streams; a packet carrying one is ignored.

    def _fill_alive_port(self, alive: Alive) -> Alive:
        """Give a port-less alive (protocol 1) our own port, as memberlist does."""
        if alive.port != 0 and self.config.vsn[2] >= 2:
            return alive
        return Alive(
            alive.incarnation, alive.node, alive.addr, self.config.port, alive.meta, alive.vsn
        )

    def handle_stream_ping(self, ping: Ping) -> Ack | None:
        """Return the ack for a ping that arrived over TCP, or None if it names another node."""
        if self._shutdown or self.faults.mute_acks or (ping.node and ping.node != self.name):
            return None
        return Ack(ping.seq_no, b"")

    def local_state(self, join: bool = False) -> PushPull:
        """Return the full state to send in a push/pull exchange."""
        return PushPull(self.table.push_states(), b"", join)

    def handle_push_pull(
        self, from_addr: Address, remote: PushPull, now: float | None = None
    ) -> PushPull:
        """Reply to a push/pull that a peer started, then merge the peer's state.

        The reply is taken before the merge, as memberlist does. A peer with
        incompatible protocol versions still gets the reply, and its state is
        dropped with a warning.
        """
        answer = self.local_state(remote.join)
        try:
            self.merge_remote_state(remote, now)
        except ProtocolVersionError as exc:
            logger.warning("swim.push_pull_rejected peer={}:{} error={}", *from_addr, exc)
        return answer

    def merge_remote_state(self, remote: PushPull, now: float | None = None) -> None:
        """Merge the state a peer sent in a push/pull exchange.

        Raises ProtocolVersionError, and changes nothing, when some alive
        member's version lies outside the range that all alive members share.
        """
        if self._shutdown:
            return
        now = self.clock() if now is None else now
        self.table.verify_protocol(remote.nodes)
        # TODO(delegate-state): remote.user_state is dropped and local_state()
        # sends none, because Xavi keeps its shared data in node metadata.
        self.table.merge_state(remote.nodes, now)

    def push_pull_failed(self, addr: Address, error: str = "") -> None:
        """Record that a push/pull the engine asked for could not complete."""
        logger.debug("swim.push_pull_failed peer={}:{} error={}", addr[0], addr[1], error)

    def join(self, addrs: Iterable[Address], now: float | None = None) -> None:
        """Start a join push/pull with each address and remember it as a seed."""
        if self._shutdown:
            return
        for addr in addrs:
            self._add_seed(addr)
            if addr != self.address:
                self._outputs.append(StartPushPull(addr, True))

    def set_seeds(self, addrs: Iterable[Address]) -> None:
        """Replace the seed peers the periodic rejoin retries (a config change removed some)."""
        self._seeds = []
        for addr in addrs:
            self._add_seed(addr)

    def leave(self, now: float | None = None) -> None:
        """Announce a graceful leave: a dead message about ourselves, sent by ourselves.

        The node keeps answering probes and gossiping, as memberlist does.
        ``leave_complete`` turns True when the broadcast reached its transmit
        limit, or at once when no other member is alive. Call ``shutdown()``
        after that, or after a timeout.
        """
        if self._shutdown or self.table.has_left:
            return
        now = self.clock() if now is None else now
        table = self.table
        table.has_left = True
        table.on_leave_broadcast_done = self._mark_leave_complete
        me = table.by_name[self.name]
        table.dead_node(Dead(me.incarnation, me.name, me.name), now)
        if not any(r.name != self.name and not r.dead_or_left() for r in table.nodes):
            self.leave_complete = True

    def update_meta(self, meta: bytes, now: float | None = None) -> None:
        """Change the local metadata and broadcast it with the next incarnation."""
        if len(meta) > META_MAX_SIZE:
            raise ValueError(f"node metadata is {len(meta)} bytes, the limit is 512")
        if self._shutdown:
            return
        now = self.clock() if now is None else now
        me = self.table.by_name[self.name]
        incarnation = self.table.next_incarnation()
        alive = Alive(incarnation, me.name, me.addr, me.port, meta, me.vsn)
        self.table.alive_node(alive, now, bootstrap=True)

    def shutdown(self) -> None:
        """Stop the engine: no more timers or outputs, and inputs are ignored."""
        self._shutdown = True
        self._timers.clear()

    # --- timers -----------------------------------------------------------

    def _schedule_suspicion(self, deadline: float, name: str) -> None:
        self._schedule(deadline, TimerKind.SUSPICION, name)

    def _timer_is_live(self, entry: TimerEntry) -> bool:
        when, _, kind, key = entry
        if kind <= TimerKind.REJOIN_TICK:
            return True
        if kind == TimerKind.SUSPICION:
            suspicion = self.table.suspicions.get(key)  # type: ignore[call-overload]
            return suspicion is not None and suspicion.deadline == when
        if kind == TimerKind.RELAY_EXPIRY:
            return key in self._relays
        return self._probe_timer_is_live(kind, key)

    def _fire(self, entry: TimerEntry, now: float) -> None:
        _, _, kind, key = entry
        if kind == TimerKind.PROBE_TICK:
            self._probe_tick(now)
        elif kind == TimerKind.GOSSIP_TICK:
            self._gossip(now)
        elif kind == TimerKind.PUSH_PULL_TICK:
            self._push_pull(now, key)
        elif kind == TimerKind.REJOIN_TICK:
            self._rejoin(now)
        elif kind == TimerKind.SUSPICION:
            self.table.expire_suspicion(key, now)  # type: ignore[arg-type]
        elif kind == TimerKind.RELAY_EXPIRY:
            self._expire_relay(key, now)  # type: ignore[arg-type]
        else:
            self._fire_probe_timer(kind, now)

    # --- helpers ----------------------------------------------------------

    def _add_seed(self, addr: Address) -> None:
        if addr != self.address and addr not in self._seeds:
            self._seeds.append(addr)

    def _mark_leave_complete(self) -> None:
        self.leave_complete = True
