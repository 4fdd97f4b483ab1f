"""Periodic work of the engine: gossip, push/pull, Xavi's seed rejoin, and packet filling.

Mirrors memberlist 0.2.2's ``gossip``, ``pushPull`` and ``pushPullTrigger``
(``state.go``) and ``sendMsg`` (``net.go``). The rejoin is Xavi's addition:
memberlist contacts seeds only when the application calls ``Join``.
Every timer starts at a random phase within its first interval, so nodes
started together do not probe or gossip in lockstep.
"""

from __future__ import annotations

from xavi.protocol.constants import (
    COMPOUND_HEADER_OVERHEAD,
    COMPOUND_OVERHEAD,
    PROTOCOL_VERSION_CRC,
)
from xavi.protocol.core import EngineCore, TimerKind
from xavi.protocol.member import NodeRecord
from xavi.protocol.messages import NodeStateKind
from xavi.protocol.outputs import SendPacket, StartPushPull
from xavi.protocol.timing import push_pull_scale

__all__ = ["PeriodicMixin"]

# Key of the push/pull timer entry that only starts the scaled schedule.
_ARM_ONLY = "arm"


class PeriodicMixin(EngineCore):
    """Timers for gossip, push/pull and rejoin."""

    def _start_timers(self, now: float) -> None:
        timing = self.timing
        rng = self.rng
        if timing.probe_interval > 0:
            self._schedule(now + rng.random() * timing.probe_interval, TimerKind.PROBE_TICK, None)
        if timing.gossip_interval > 0 and timing.gossip_nodes > 0:
            self._schedule(now + rng.random() * timing.gossip_interval, TimerKind.GOSSIP_TICK, None)
        if timing.push_pull_interval > 0:
            # As in memberlist, the first interval is scaled by the cluster
            # size known after the stagger, not by the size at start.
            stagger = rng.random() * timing.push_pull_interval
            self._schedule(now + stagger, TimerKind.PUSH_PULL_TICK, _ARM_ONLY)
        if timing.rejoin_interval > 0:
            self._schedule(now + rng.random() * timing.rejoin_interval, TimerKind.REJOIN_TICK, None)

    def _gossip(self, now: float) -> None:
        self._schedule(now + self.timing.gossip_interval, TimerKind.GOSSIP_TICK, None)
        table = self.table
        if not table.broadcasts:
            return
        grace = self.timing.gossip_to_the_dead_time

        def exclude(record: NodeRecord) -> bool:
            if record.name == self.name:
                return True
            if record.state == NodeStateKind.DEAD:
                return now - record.state_change > grace
            return record.state == NodeStateKind.LEFT

        targets = table.random_nodes(self.timing.gossip_nodes, exclude)
        budget = self.timing.udp_buffer_size - COMPOUND_HEADER_OVERHEAD
        budget -= self.config.encrypt_overhead
        for record in targets:
            items = table.broadcasts.get_broadcasts(COMPOUND_OVERHEAD, budget)
            if not items:
                return
            self._outputs.append(
                SendPacket(
                    record.address,
                    tuple([item.message for item in items]),
                    tuple([item.encoded for item in items]),
                    record.name,
                    record.protocol_max >= PROTOCOL_VERSION_CRC,
                )
            )

    def _push_pull(self, now: float, key: object) -> None:
        interval = push_pull_scale(self.timing.push_pull_interval, self.table.num_nodes())
        self._schedule(now + interval, TimerKind.PUSH_PULL_TICK, None)
        if key == _ARM_ONLY:
            return
        peers = self.table.random_nodes(
            1, lambda r: r.name == self.name or r.state != NodeStateKind.ALIVE
        )
        if peers:
            self._outputs.append(StartPushPull(peers[0].address, False, peers[0].name))

    def _rejoin(self, now: float) -> None:
        self._schedule(now + self.timing.rejoin_interval, TimerKind.REJOIN_TICK, None)
        if self.table.has_left or not self._seeds:
            return
        live = {
            record.address
            for record in self.table.nodes
            if record.name != self.name and not record.dead_or_left()
        }
        for seed in self._seeds:
            if seed not in live:
                self._outputs.append(StartPushPull(seed, True))
