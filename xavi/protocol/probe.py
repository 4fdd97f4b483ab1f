"""Failure detection rounds of memberlist 0.2.2 (``state.go`` probe, probeNode; ``net.go``
handlePing, handleIndirectPing), as explicit sans-I/O state.

One probe round against member M, with ``interval = awareness * probe_interval``:

1. Send ``ping`` to M. If M is not alive in our table, a ``suspect`` about M
   goes in the same packet, so that M can refute at once. Otherwise queued
   broadcasts ride along.
2. At ``probe_timeout`` without an ack: ask ``indirect_checks`` random live
   members to ping M for us (``nack`` set for those speaking protocol >= 4),
   and ask the shell for a TCP ping of M (members speaking protocol >= 3,
   unless disabled).
3. Any ack with the probe's sequence number before ``sent + interval`` ends
   the round as a success. At the deadline, a successful TCP ping also counts
   as a success. Otherwise M becomes suspect.

Lifeguard: a success lowers the health score by 1. A failure raises it by the
number of missing nacks, or by 1 when no helper could send nacks.

Only one round runs at a time. A probe tick that comes while a round is
still open is kept (at most one, as Go's ticker keeps one) and starts the
next round as soon as the open one ends.

An indirect ping request makes us a relay: we ping the target with our own
sequence number, forward its ack to the requester, and send a nack after
``probe_timeout`` if none came and the requester asked for one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from loguru import logger

from xavi.protocol.constants import PROTOCOL_VERSION_CRC, PROTOCOL_VERSION_NACK
from xavi.protocol.core import EngineCore, TimerKind
from xavi.protocol.member import NodeRecord, addr_text
from xavi.protocol.messages import Ack, IndirectPing, Nack, NodeStateKind, Ping, Suspect
from xavi.protocol.outputs import Address, SendPacket, SendTcpPing

__all__ = ["TCP_PING_MIN_PROTOCOL", "ProbeMixin", "ProbePhase", "ProbeRound", "Relay"]

# Members that understand this protocol version reply to pings over TCP.
TCP_PING_MIN_PROTOCOL = 3


class ProbePhase(enum.Enum):
    """Stage of an open probe round."""

    DIRECT = "direct"
    """Ping sent, waiting up to probe_timeout for the ack."""
    INDIRECT = "indirect"
    """Indirect and TCP pings sent, waiting for any ack until the deadline."""
    AWAIT_TCP = "await_tcp"
    """Deadline passed without an ack, waiting for the shell's TCP ping result."""


@dataclass(slots=True, eq=False)
class ProbeRound:
    """State of the open probe round."""

    seq_no: int
    """Sequence number of our ping; acks and nacks carry it."""
    target: NodeRecord
    """The probed member's table entry."""
    target_incarnation: int
    """Incarnation of the target when the round began; a failed round suspects it."""
    ping: Ping
    """The ping sent, reused for the TCP fallback."""
    deadline: float
    """End of the round: send time plus the awareness-scaled probe interval."""
    phase: ProbePhase = ProbePhase.DIRECT
    expected_nacks: int = 0
    """Helpers asked for a nack, because they speak protocol >= 4."""
    nacks: int = 0
    """Nacks received, capped at indirect_checks + 1 like memberlist's channel."""
    tcp_pending: bool = False
    """True while a TCP ping was requested and its result not yet reported."""
    tcp_ok: bool = False
    """True when the shell reported a successful TCP ping."""


@dataclass(slots=True, eq=False)
class Relay:
    """Indirect ping we are carrying out for another member."""

    requester_seq_no: int
    """Sequence number of the requester's probe, used in the ack or nack we send back."""
    requester: Address
    """Address of the requester, for the forwarded ack or the nack."""
    requester_name: str
    """Name of the requester, empty if it gave none."""
    want_nack: bool
    """True if the requester asked for a nack on timeout."""
    acked: bool = False
    """True once the target acked and the ack was forwarded."""


class ProbeMixin(EngineCore):
    """Probe rounds and relays of the engine."""

    def _init_probe_state(self) -> None:
        self._probe: ProbeRound | None = None
        self._probe_tick_pending = False
        self._probe_index = 0
        self._relays: dict[int, Relay] = {}

    # --- our probe rounds -------------------------------------------------

    def _probe_tick(self, now: float) -> None:
        self._schedule(now + self.timing.probe_interval, TimerKind.PROBE_TICK, None)
        if self._probe is not None:
            self._probe_tick_pending = True
            return
        self._start_probe(now)

    def _start_probe(self, now: float) -> None:
        """Probe the next live member in list order, reshuffling at each wrap."""
        table = self.table
        checked = 0
        while checked < len(table.nodes):
            if self._probe_index >= len(table.nodes):
                table.reset_nodes(now)
                self._probe_index = 0
                checked += 1
                continue
            record = table.nodes[self._probe_index]
            self._probe_index += 1
            if record.name == self.name or record.dead_or_left():
                checked += 1
                continue
            self._probe_node(record, now)
            return

    def _probe_node(self, record: NodeRecord, now: float) -> None:
        interval = self.awareness.scale_timeout(self.timing.probe_interval)
        me = self.table.by_name[self.name]
        ping = Ping(self._next_seq_no(), record.name, me.addr, me.port, self.name)
        probe = ProbeRound(ping.seq_no, record, record.incarnation, ping, now + interval)
        self._probe = probe
        if record.state == NodeStateKind.ALIVE:
            self._send(record.address, ping, record.name)
        else:
            # A suspect rides along so that the member can refute at once.
            suspect = Suspect(record.incarnation, record.name, self.name)
            self._outputs.append(
                SendPacket(
                    record.address,
                    (ping, suspect),
                    (None, None),
                    record.name,
                    record.protocol_max >= PROTOCOL_VERSION_CRC,
                )
            )
        # With a probe interval shorter than the timeout, the indirect phase
        # starts when the ack handler expires, as in memberlist.
        indirect_at = now + min(self.timing.probe_timeout, interval)
        self._schedule(indirect_at, TimerKind.PROBE_INDIRECT, probe.seq_no)
        self._schedule(probe.deadline, TimerKind.PROBE_DEADLINE, probe.seq_no)

    def _start_indirect(self, probe: ProbeRound, now: float) -> None:
        probe.phase = ProbePhase.INDIRECT
        target = probe.target
        helpers = self.table.random_nodes(
            self.timing.indirect_checks,
            lambda r: r.name == self.name or r is target or r.state != NodeStateKind.ALIVE,
        )
        me = self.table.by_name[self.name]
        for helper in helpers:
            want_nack = helper.protocol_max >= PROTOCOL_VERSION_NACK
            if want_nack:
                probe.expected_nacks += 1
            request = IndirectPing(
                probe.seq_no,
                target.addr,
                target.port,
                target.name,
                want_nack,
                me.addr,
                me.port,
                self.name,
            )
            self._send(helper.address, request, helper.name)
        # Members isolated from UDP but reachable over TCP are not flapped.
        if not self.timing.disable_tcp_pings and target.protocol_max >= TCP_PING_MIN_PROTOCOL:
            probe.tcp_pending = True
            self._outputs.append(
                SendTcpPing(target.address, probe.ping, probe.deadline, target.name)
            )

    def _end_probe(self, awareness_delta: int, now: float) -> None:
        self._probe = None
        self.awareness.apply_delta(awareness_delta)
        if self._probe_tick_pending:
            self._probe_tick_pending = False
            self._start_probe(now)

    def _finish_probe(self, probe: ProbeRound, now: float) -> None:
        """Judge the round after its deadline: TCP success, or suspect the target."""
        if probe.tcp_ok:
            logger.warning(
                "swim.probe_tcp_only node={} reason=udp_probes_failed_network_may_be_misconfigured",
                probe.target.name,
            )
            self._end_probe(-1, now)
            return
        # With helpers able to nack, missing nacks blame us rather than the
        # target; without them any failed probe counts against our health.
        if probe.expected_nacks > 0:
            delta = max(probe.expected_nacks - probe.nacks, 0)
        else:
            delta = 1
        logger.debug("swim.probe_failed node={}", probe.target.name)
        suspect = Suspect(probe.target_incarnation, probe.target.name, self.name)
        self.table.suspect_node(suspect, now)
        # Ended after the suspicion, so a pending round that starts now already
        # sees the target as suspect.
        self._end_probe(delta, now)

    def handle_tcp_ping_result(self, seq_no: int, ok: bool, now: float | None = None) -> None:
        """Record the outcome of a ``SendTcpPing``. Results after the round ended are ignored."""
        probe = self._probe
        if probe is None or probe.seq_no != seq_no or not probe.tcp_pending:
            return
        now = self.clock() if now is None else now
        probe.tcp_pending = False
        probe.tcp_ok = ok
        if probe.phase == ProbePhase.AWAIT_TCP:
            self._finish_probe(probe, now)

    def _probe_timer_is_live(self, kind: int, seq_no: object) -> bool:
        probe = self._probe
        if probe is None or probe.seq_no != seq_no:
            return False
        if kind == TimerKind.PROBE_INDIRECT:
            return probe.phase == ProbePhase.DIRECT
        if kind == TimerKind.PROBE_DEADLINE:
            return probe.phase != ProbePhase.AWAIT_TCP
        return probe.phase == ProbePhase.AWAIT_TCP

    def _fire_probe_timer(self, kind: int, now: float) -> None:
        probe = self._probe
        assert probe is not None
        if kind == TimerKind.PROBE_INDIRECT:
            self._start_indirect(probe, now)
        elif kind == TimerKind.PROBE_DEADLINE:
            if probe.phase == ProbePhase.DIRECT:
                self._start_indirect(probe, now)
            if probe.tcp_pending:
                # memberlist waits for the TCP attempt, whose own deadline is
                # this one; the grace covers a shell that reports a bit late.
                probe.phase = ProbePhase.AWAIT_TCP
                grace = now + self.timing.probe_timeout
                self._schedule(grace, TimerKind.PROBE_TCP_GRACE, probe.seq_no)
            else:
                self._finish_probe(probe, now)
        else:
            probe.tcp_pending = False
            self._finish_probe(probe, now)

    # --- messages ---------------------------------------------------------

    def _handle_ping(self, from_addr: Address, ping: Ping) -> None:
        if self.faults.mute_acks:
            return
        if ping.node and ping.node != self.name:
            logger.warning("swim.ping_for_other_node node={} peer={}:{}", ping.node, *from_addr)
            return
        reply_to = from_addr
        if ping.source_addr and ping.source_port > 0:
            reply_to = (addr_text(ping.source_addr), ping.source_port)
        self._send(reply_to, Ack(ping.seq_no, b""), ping.source_node)

    def _handle_ack(self, ack: Ack, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.seq_no == ack.seq_no:
            if probe.phase != ProbePhase.AWAIT_TCP:
                self._end_probe(-1, now)
            return
        relay = self._relays.get(ack.seq_no)
        if relay is not None and not relay.acked:
            relay.acked = True
            self._send(relay.requester, Ack(relay.requester_seq_no, b""), relay.requester_name)

    def _handle_nack(self, nack: Nack) -> None:
        probe = self._probe
        if probe is not None and probe.seq_no == nack.seq_no:
            probe.nacks = min(probe.nacks + 1, self.timing.indirect_checks + 1)

    def _handle_indirect_ping(self, from_addr: Address, request: IndirectPing, now: float) -> None:
        port = request.port
        if port == 0 or self.config.vsn[2] < 2:
            port = self.address[1]
        reply_to = from_addr
        if request.source_addr and request.source_port > 0:
            reply_to = (addr_text(request.source_addr), request.source_port)
        seq_no = self._next_seq_no()
        self._relays[seq_no] = Relay(request.seq_no, reply_to, request.source_node, request.nack)
        self._schedule(now + self.timing.probe_timeout, TimerKind.RELAY_EXPIRY, seq_no)
        me = self.table.by_name[self.name]
        ping = Ping(seq_no, request.node, me.addr, me.port, self.name)
        self._send((addr_text(request.target), port), ping, request.node)

    def _expire_relay(self, seq_no: int, now: float) -> None:
        relay = self._relays.pop(seq_no)
        if relay.want_nack and not relay.acked:
            self._send(relay.requester, Nack(relay.requester_seq_no), relay.requester_name)
