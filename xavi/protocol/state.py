"""Member table and merge rules of memberlist 0.2.2 (``state.go``: aliveNode, suspectNode,
deadNode, mergeState, verifyProtocol, refute, resetNodes).

Theory of operation. Every member has an incarnation number that only the
member itself raises. A message about a member carries an incarnation, and
the rules below decide whether it changes the table:

- ``alive`` wins over anything older: it is applied when its incarnation is
  higher than the stored one, or when it brings a new address for a member
  that left (or died long enough ago, see ``dead_node_reclaim_time``).
- ``suspect`` and ``dead`` apply when their incarnation is at least the stored
  one. A suspect member gets a suspicion timer. A dead member stays dead
  until an ``alive`` with a higher incarnation arrives.
- A ``suspect`` or ``dead`` about the local node is refuted: the local node
  raises its incarnation above the accusation and broadcasts ``alive``.
  A ``dead`` whose sender is the member itself is a graceful leave and stores
  state LEFT.
- Push/pull state is merged as if each entry had arrived as a message, except
  that a remote DEAD is only believed as far as SUSPECT, so the member gets a
  chance to refute.

Every accepted change is re-broadcast through the transmit-limited queue,
keyed by member name, so only the newest message about a member spreads.

0.2.2 semantics kept on purpose: dead members are reaped (forgotten) only
when the probe list wraps around, and only after ``gossip_to_the_dead_time``.
Members in state LEFT are never reaped, and they count in the cluster size.
The name of a dead member cannot move to a new address until it is reaped,
unless ``dead_node_reclaim_time`` is set.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from loguru import logger

from xavi.protocol.awareness import Awareness
from xavi.protocol.broadcast import TransmitLimitedQueue
from xavi.protocol.member import NodeRecord, addr_text, verify_protocol
from xavi.protocol.messages import Alive, Dead, Message, NodeStateKind, PushNodeState, Suspect
from xavi.protocol.outputs import Event, EventKind, NodeInfo
from xavi.protocol.suspicion import Suspicion, suspicion_timeout
from xavi.protocol.timing import Timing

__all__ = ["MemberTable"]

_UINT32_MASK = 0xFFFFFFFF


class MemberTable:
    """Members known to the local node, with memberlist's merge rules.

    The table never sends anything itself. It queues re-broadcasts in
    ``broadcasts`` and reports events through ``emit``. Each new suspicion
    deadline goes to ``schedule_suspicion``, so that the engine calls
    ``expire_suspicion`` when it comes.
    """

    def __init__(
        self,
        local_name: str,
        timing: Timing,
        rng: random.Random,
        awareness: Awareness,
        encode: Callable[[Message], bytes],
        emit: Callable[[Event], None],
        schedule_suspicion: Callable[[float, str], None],
    ) -> None:
        self.local_name = local_name
        self.timing = timing
        self.rng = rng
        self.awareness = awareness
        self.encode = encode
        self.emit = emit
        self.schedule_suspicion = schedule_suspicion
        self.nodes: list[NodeRecord] = []
        """Probe order. New members go to a random position, and each wrap reshuffles."""
        self.by_name: dict[str, NodeRecord] = {}
        self.suspicions: dict[str, Suspicion] = {}
        self.broadcasts = TransmitLimitedQueue(timing.retransmit_mult, self.num_nodes)
        self.incarnation = 0
        self.has_left = False
        self.on_leave_broadcast_done: Callable[[], None] | None = None

    def num_nodes(self) -> int:
        """Return the cluster size estimate: every entry, including dead and left ones."""
        return len(self.nodes)

    def next_incarnation(self, at_least: int = 0) -> int:
        """Raise the local incarnation by one, or to ``at_least + 1`` if that is higher."""
        self.incarnation = (self.incarnation + 1) & _UINT32_MASK
        if at_least >= self.incarnation:
            self.incarnation = (at_least + 1) & _UINT32_MASK
        return self.incarnation

    def broadcast(
        self, name: str, message: Message, on_finished: Callable[[], None] | None = None
    ) -> None:
        """Queue ``message`` for piggybacked gossip, replacing older news about ``name``."""
        self.broadcasts.queue(name, message, self.encode(message), on_finished)

    # --- merge rules ------------------------------------------------------

    def alive_node(self, alive: Alive, now: float, bootstrap: bool = False) -> None:
        """Apply an alive message. ``bootstrap`` marks the local node's own announcements."""
        record = self.by_name.get(alive.node)
        if (
            record is not None
            and alive.incarnation <= record.incarnation
            and record.addr == alive.addr
            and record.port == alive.port
            and alive.node != self.local_name
        ):
            # Fast path for news we already have, the bulk of gossip traffic.
            # The full rules below reach the same outcome for it.
            return
        if self.has_left and alive.node == self.local_name:
            return
        pmin, pmax = alive.vsn[0], alive.vsn[1]
        if pmin == 0 or pmax == 0 or pmin > pmax:
            logger.warning(
                "swim.alive_ignored node={} reason=invalid_protocol_versions vsn={}",
                alive.node,
                alive.vsn,
            )
            return

        updates_address = False
        if record is None:
            record = NodeRecord(alive.node, alive.addr, alive.port, alive.meta, alive.vsn)
            self._insert(record)
        elif record.addr != alive.addr or record.port != alive.port:
            reclaim = self.timing.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and now - record.state_change > reclaim
            if record.state == NodeStateKind.LEFT or (
                record.state == NodeStateKind.DEAD and can_reclaim
            ):
                updates_address = True
            else:
                self._report_conflict(record, alive)
                return

        is_local = record.name == self.local_name
        if alive.incarnation <= record.incarnation and not is_local and not updates_address:
            return
        if alive.incarnation < record.incarnation and is_local:
            return

        self.suspicions.pop(alive.node, None)
        old_state = record.state
        old_meta = record.meta

        if is_local and not bootstrap:
            # A node restarted with other metadata can meet its old alive
            # message at the same incarnation, so equal numbers are compared
            # by content before refuting.
            if (
                alive.incarnation == record.incarnation
                and alive.meta == record.meta
                and alive.vsn == record.vsn
            ):
                return
            self.refute(record, alive.incarnation)
            logger.warning(
                "swim.refute node={} accusation=alive incarnation={}",
                record.name,
                alive.incarnation,
            )
        else:
            self.broadcast(alive.node, alive)
            record.vsn = alive.vsn
            record.incarnation = alive.incarnation
            record.meta = alive.meta
            record.addr = alive.addr
            record.port = alive.port
            if record.state != NodeStateKind.ALIVE:
                record.state = NodeStateKind.ALIVE
                record.state_change = now

        if old_state in (NodeStateKind.DEAD, NodeStateKind.LEFT):
            self.emit(Event(EventKind.JOIN, record.info()))
        elif old_meta != record.meta:
            self.emit(Event(EventKind.UPDATE, record.info()))

    def suspect_node(self, suspect: Suspect, now: float) -> None:
        """Apply a suspect message: start or confirm a suspicion, or refute one about us."""
        record = self.by_name.get(suspect.node)
        if record is None or suspect.incarnation < record.incarnation:
            return

        existing = self.suspicions.get(suspect.node)
        if existing is not None:
            # New confirmations are re-gossiped so that they keep flowing even
            # when members probe a member that is already suspect.
            if existing.confirm(suspect.from_node, now):
                self.broadcast(suspect.node, suspect)
                self.schedule_suspicion(existing.deadline, suspect.node)
            return

        if record.state != NodeStateKind.ALIVE:
            return
        if record.name == self.local_name:
            self.refute(record, suspect.incarnation)
            logger.warning(
                "swim.refute node={} accusation=suspect from={}", record.name, suspect.from_node
            )
            return

        self.broadcast(suspect.node, suspect)
        record.incarnation = suspect.incarnation
        record.state = NodeStateKind.SUSPECT
        record.state_change = now

        # k is set so that, with no known phase relation to the other probers,
        # the nominal timeout is reached two probe intervals early. With too
        # few members to confirm (not counting us and the suspect), none are
        # expected.
        num_nodes = self.num_nodes()
        expected = self.timing.suspicion_mult - 2
        if num_nodes - 2 < expected:
            expected = 0
        minimum = suspicion_timeout(
            self.timing.suspicion_mult, num_nodes, self.timing.probe_interval
        )
        maximum = self.timing.suspicion_max_timeout_mult * minimum
        suspicion = Suspicion(suspect.from_node, expected, minimum, maximum, now)
        self.suspicions[suspect.node] = suspicion
        self.schedule_suspicion(suspicion.deadline, suspect.node)
        logger.debug("swim.suspect node={} from={}", suspect.node, suspect.from_node)

    def expire_suspicion(self, name: str, now: float) -> None:
        """Declare ``name`` dead if its suspicion deadline has passed and it is still suspect."""
        suspicion = self.suspicions.get(name)
        if suspicion is None or suspicion.deadline > now:
            return
        del self.suspicions[name]
        record = self.by_name.get(name)
        if record is None or record.state != NodeStateKind.SUSPECT:
            return
        logger.info("swim.suspect_timeout node={} confirmations={}", name, suspicion.confirmations)
        self.dead_node(Dead(record.incarnation, name, self.local_name), now)

    def dead_node(self, dead: Dead, now: float) -> None:
        """Apply a dead message. ``from_node == node`` means the member left on purpose."""
        record = self.by_name.get(dead.node)
        if record is None or dead.incarnation < record.incarnation:
            return
        self.suspicions.pop(dead.node, None)
        if record.dead_or_left():
            return

        if record.name == self.local_name:
            if not self.has_left:
                self.refute(record, dead.incarnation)
                logger.warning(
                    "swim.refute node={} accusation=dead from={}", record.name, dead.from_node
                )
                return
            self.broadcast(dead.node, dead, self.on_leave_broadcast_done)
        else:
            self.broadcast(dead.node, dead)

        record.incarnation = dead.incarnation
        if dead.node == dead.from_node:
            record.state = NodeStateKind.LEFT
        else:
            record.state = NodeStateKind.DEAD
        record.state_change = now
        self.emit(Event(EventKind.LEAVE, record.info()))

    def refute(self, record: NodeRecord, accused_incarnation: int) -> None:
        """Beat an accusation against the local node with a higher incarnation."""
        record.incarnation = self.next_incarnation(at_least=accused_incarnation)
        self.awareness.apply_delta(1)
        alive = Alive(
            record.incarnation, record.name, record.addr, record.port, record.meta, record.vsn
        )
        # memberlist 0.2.2 keys this broadcast by the address text, not the
        # node name, so it neither replaces nor is replaced by other news.
        self.broadcast(addr_text(record.addr), alive)

    def merge_state(self, remote: Iterable[PushNodeState], now: float) -> None:
        """Merge push/pull entries. A remote DEAD is believed only as far as SUSPECT."""
        for entry in remote:
            if entry.state == NodeStateKind.ALIVE:
                alive = Alive(
                    entry.incarnation, entry.name, entry.addr, entry.port, entry.meta, entry.vsn
                )
                self.alive_node(alive, now)
            elif entry.state == NodeStateKind.LEFT:
                self.dead_node(Dead(entry.incarnation, entry.name, entry.name), now)
            else:
                suspect = Suspect(entry.incarnation, entry.name, self.local_name)
                self.suspect_node(suspect, now)

    def verify_protocol(self, remote: Sequence[PushNodeState]) -> None:
        """Raise ProtocolVersionError if ``remote`` and our members share no version range."""
        verify_protocol(remote, self.nodes)

    # --- list maintenance -------------------------------------------------

    def reset_nodes(self, now: float) -> None:
        """Reap members dead for longer than gossip_to_the_dead_time, then shuffle the rest."""
        # TODO(reap-left): LEFT entries are kept forever and grow with churn,
        # because memberlist 0.2.2 keeps them too; later releases reap them.
        grace = self.timing.gossip_to_the_dead_time
        kept: list[NodeRecord] = []
        for record in self.nodes:
            if record.state == NodeStateKind.DEAD and now - record.state_change > grace:
                del self.by_name[record.name]
            else:
                kept.append(record)
        self.rng.shuffle(kept)
        self.nodes = kept

    def random_nodes(self, count: int, exclude: Callable[[NodeRecord], bool]) -> list[NodeRecord]:
        """Pick up to ``count`` distinct random members not excluded (util.go kRandomNodes).

        Tries at most ``3 * len(nodes)`` random positions, so the result can be
        shorter than ``count`` even when enough members qualify.
        """
        nodes = self.nodes
        size = len(nodes)
        chosen: list[NodeRecord] = []
        random_fraction = self.rng.random
        for _ in range(3 * size):
            if len(chosen) >= count:
                break
            record = nodes[int(random_fraction() * size)]
            if exclude(record) or record in chosen:
                continue
            chosen.append(record)
        return chosen

    def push_states(self) -> tuple[PushNodeState, ...]:
        """Return every entry, in list order, as push/pull node states."""
        return tuple(
            PushNodeState(n.name, n.addr, n.port, n.meta, n.incarnation, n.state, n.vsn)
            for n in self.nodes
        )

    def _insert(self, record: NodeRecord) -> None:
        # A random position keeps the expected time to the first probe of a
        # new member the same everywhere, instead of always last.
        self.by_name[record.name] = record
        size = len(self.nodes)
        offset = int(self.rng.random() * size)
        self.nodes.append(record)
        self.nodes[offset], self.nodes[size] = self.nodes[size], self.nodes[offset]

    def _report_conflict(self, record: NodeRecord, alive: Alive) -> None:
        logger.warning(
            "swim.conflict node={} known={}:{} claimed={}:{} state={}",
            record.name,
            addr_text(record.addr),
            record.port,
            addr_text(alive.addr),
            alive.port,
            record.state.name,
        )
        claim = NodeInfo(
            alive.node,
            alive.addr,
            alive.port,
            alive.meta,
            NodeStateKind.ALIVE,
            alive.incarnation,
            alive.vsn,
        )
        self.emit(Event(EventKind.CONFLICT, record.info(), claim))
