"""Deterministic in-memory network for many SWIM engines in one process.

The simulator runs ``Memberlist`` engines on a fake clock and carries their
outputs between them:

- ``SendPacket`` becomes a delivery after a random delay, unless the link is
  cut by a partition or the packet is lost (per-link loss probability).
- ``StartPushPull`` is a TCP-like exchange: the initiator's state reaches the
  peer after one delay, the peer replies, and the reply arrives one delay
  later. It is never lost, but fails when the peer is down (at once) or cut
  off (after ``tcp_timeout``).
- ``SendTcpPing`` succeeds after a round trip when the member is up and
  reachable and neither handshake packet is lost (link loss applies once in
  each direction), and otherwise reports failure at the ping's deadline.

It is event-driven: one heap contains packet arrivals, stream steps and each
engine's next deadline, so idle time costs nothing. All randomness (delays,
loss, engine seeds) comes from one seed, and ties in the heap are broken by
insertion order, so equal seeds give equal runs.

Addresses are in 127.0.0.0/8 and never reach a real socket.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable

from xavi.protocol.member import DEFAULT_VSN
from xavi.protocol.messages import NodeStateKind, Vsn
from xavi.protocol.node import Memberlist
from xavi.protocol.sim_network import SIM_PORT, SimNetwork, SimNode, SimStats
from xavi.protocol.timing import Timing

__all__ = ["SIM_PORT", "SimNode", "SimStats", "Simulator"]


class Simulator(SimNetwork):
    """Fake clock and network for many engines. See the module docstring."""

    # --- topology ---------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        meta: bytes = b"",
        timing: Timing | None = None,
        vsn: Vsn = DEFAULT_VSN,
    ) -> Memberlist:
        """Start a new node with an address of its own and return its engine."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} already exists; use restart() to replace it")
        index = len(self.nodes) + 1
        addr = bytes((127, 1 + (index >> 16), (index >> 8) & 0xFF, index & 0xFF))
        address = (f"127.{addr[1]}.{addr[2]}.{addr[3]}", SIM_PORT)
        engine = self._make_engine(name, addr, meta, timing or self.timing, vsn)
        node = SimNode(name, addr, address, engine)
        self.nodes[name] = node
        self._by_address[address] = node
        self._after(node)
        return engine

    def restart(
        self, name: str, *, meta: bytes | None = None, join: Iterable[str] = ()
    ) -> Memberlist:
        """Replace a node's engine with a fresh one (same name and address) and join ``join``."""
        node = self.nodes[name]
        old = node.engine
        old.shutdown()
        new_meta = old.config.meta if meta is None else meta
        node.engine = self._make_engine(
            name, node.addr, new_meta, old.config.timing, old.config.vsn
        )
        node.running = True
        node.scheduled = None
        self._after(node)
        self.join(name, join)
        return node.engine

    def kill(self, name: str) -> None:
        """Stop a node without a goodbye: it sends and receives nothing from now on."""
        node = self.nodes[name]
        node.running = False
        node.engine.shutdown()

    def join(self, name: str, seeds: Iterable[str]) -> None:
        """Make node ``name`` join the nodes named in ``seeds``."""
        node = self.nodes[name]
        node.engine.join([self.nodes[seed].address for seed in seeds], self.now)
        self._after(node)

    def leave(self, name: str) -> None:
        """Make node ``name`` announce a graceful leave."""
        node = self.nodes[name]
        node.engine.leave(self.now)
        self._after(node)

    def update_meta(self, name: str, meta: bytes) -> None:
        """Change node ``name``'s metadata."""
        node = self.nodes[name]
        node.engine.update_meta(meta, self.now)
        self._after(node)

    # --- running ----------------------------------------------------------

    def call_at(self, when: float, action: Callable[[], None]) -> None:
        """Run ``action`` when the clock reaches ``when``."""
        self._push(when, action)

    def run_for(self, duration: float) -> None:
        """Advance the clock by ``duration`` seconds."""
        self.run_until(self.now + duration)

    def run_until(self, end: float) -> None:
        """Process every event up to time ``end``, then set the clock to ``end``."""
        heap = self._heap
        while heap and heap[0][0] <= end:
            when, _, action = heapq.heappop(heap)
            self.now = when
            action()
        self.now = max(self.now, end)

    def run_until_true(
        self, condition: Callable[[], bool], timeout: float, check_every: float = 0.5
    ) -> float | None:
        """Run until ``condition()`` holds, checked every ``check_every`` seconds.

        Returns the elapsed time when it first held, or None after ``timeout``.
        """
        start = self.now
        while self.now - start < timeout:
            if condition():
                return self.now - start
            self.run_for(check_every)
        return self.now - start if condition() else None

    # --- views ------------------------------------------------------------

    def running(self) -> list[str]:
        """Return the names of the nodes that are up."""
        return [name for name, node in self.nodes.items() if node.running]

    def state_of(self, observer: str, subject: str) -> NodeStateKind | None:
        """Return ``subject``'s state in ``observer``'s table, or None if unknown."""
        record = self.nodes[observer].engine.table.by_name.get(subject)
        return record.state if record is not None else None

    def live_view(self, observer: str) -> set[str]:
        """Return the names that ``observer`` has as alive or suspect, itself included."""
        table = self.nodes[observer].engine.table
        return {
            r.name for r in table.nodes if r.state in (NodeStateKind.ALIVE, NodeStateKind.SUSPECT)
        }

    def converged(self, expected: Iterable[str] | None = None) -> bool:
        """Return True when every running node has exactly ``expected`` (default: running) live."""
        want = set(self.running() if expected is None else expected)
        return all(self.live_view(name) == want for name in self.running())

    def all_see(
        self, subject: str, state: NodeStateKind, observers: Iterable[str] | None = None
    ) -> bool:
        """Return True when every observer (default: running nodes but ``subject``) has ``state``."""
        names = [n for n in self.running() if n != subject] if observers is None else observers
        return all(self.state_of(name, subject) == state for name in names)
