"""Transmit-limited broadcast queue (memberlist 0.2.2 ``queue.go`` and ``broadcast.go``).

Alive, suspect and dead messages spread by riding on probe packets and on
gossip rounds. Each queued message is sent at most ``retransmit_limit`` times:
``retransmit_mult * ceil(log10(n + 1))`` for a cluster of ``n`` known members.

Order, as memberlist's B-tree keeps it: messages sent fewer times come first.
Within one transmit count, longer messages come first, then newer ones. A fill
walks the transmit counts upward and in each takes the first message that
still fits the byte budget, until nothing fits.

Invalidation: every message names the member it is about, and queueing a
message removes any queued message about the same member. So a newer
``alive`` replaces an older ``suspect``, and the queue contains at most one
message per member.

The queue stores each message's encoded bytes as well, because the budget
counts encoded sizes and the I/O shell can reuse the bytes.

Deviation: memberlist restarts its id counter whenever the queue runs empty,
including in the middle of a fill while taken messages wait to be put back.
A new message can then get the id of a waiting one, and the B-tree replaces
one with the other. Here ids only grow, so no message is lost that way.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

from xavi.protocol.messages import Message

__all__ = ["QueuedBroadcast", "TransmitLimitedQueue", "retransmit_limit"]


def retransmit_limit(retransmit_mult: int, num_nodes: int) -> int:
    """Return how often a broadcast is sent: ``mult * ceil(log10(n + 1))`` (util.go)."""
    node_scale = math.ceil(math.log10(num_nodes + 1))
    return retransmit_mult * node_scale


@dataclass(slots=True, eq=False)
class QueuedBroadcast:
    """One queued message and its bookkeeping."""

    name: str
    """Member the message is about. A newer message about it replaces this one."""
    message: Message
    """The message record."""
    encoded: bytes
    """Encoded message: type byte plus msgpack body."""
    transmits: int
    """Times the message has been handed out so far."""
    ident: int
    """Queue order among equal sizes: higher is newer."""
    on_finished: Callable[[], None] | None
    """Called once when the message leaves the queue for any reason."""

    def finish(self) -> None:
        """Run the completion callback, at most once."""
        callback, self.on_finished = self.on_finished, None
        if callback is not None:
            callback()


# One transmit count's entries as (length, ident, item), sorted ascending, so
# the entry to send first (longest, then newest) is the last one. Idents are
# unique, so the item itself is compared only with itself.
_Entry = tuple[int, int, QueuedBroadcast]


class TransmitLimitedQueue:
    """Broadcast queue that limits how often each message is sent."""

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int]) -> None:
        self._retransmit_mult = retransmit_mult
        self._num_nodes = num_nodes
        self._tiers: dict[int, list[_Entry]] = {}
        self._by_name: dict[str, QueuedBroadcast] = {}
        self._next_ident = 0

    def __len__(self) -> int:
        return len(self._by_name)

    def queued(self, name: str) -> QueuedBroadcast | None:
        """Return the queued broadcast about member ``name``, if any."""
        return self._by_name.get(name)

    def queue(
        self,
        name: str,
        message: Message,
        encoded: bytes,
        on_finished: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``message`` about member ``name``, replacing any queued message about it."""
        self._next_ident += 1
        old = self._by_name.get(name)
        if old is not None:
            self._remove(old)
            old.finish()
        item = QueuedBroadcast(name, message, encoded, 0, self._next_ident, on_finished)
        self._add(item)

    def get_broadcasts(self, overhead: int, limit: int) -> list[QueuedBroadcast]:
        """Take messages that fit in ``limit`` bytes, counting ``overhead`` bytes per message.

        Each returned message counts one transmit. A message that reaches the
        transmit limit leaves the queue and its callback runs.
        """
        if not self._by_name:
            return []
        transmit_limit = retransmit_limit(self._retransmit_mult, self._num_nodes())
        tiers = self._tiers
        by_name = self._by_name
        free = limit - overhead
        chosen: list[QueuedBroadcast] = []
        # Entries to put back, by their new transmit count. They go back after
        # the walk, or an item would be met again in the next transmit count.
        reinsert: dict[int, list[_Entry]] = {}
        for transmits in sorted(tiers):
            tier = tiers[transmits]
            while tier and free > 0:
                if tier[-1][0] <= free:
                    entry = tier.pop()
                else:
                    # The newest of the longest entries that still fit.
                    index = bisect.bisect_right(tier, (free, _NEWEST)) - 1
                    if index < 0:
                        break
                    entry = tier.pop(index)
                item = entry[2]
                free -= overhead + entry[0]
                chosen.append(item)
                if item.transmits + 1 >= transmit_limit:
                    del by_name[item.name]
                    item.finish()
                else:
                    item.transmits += 1
                    reinsert.setdefault(item.transmits, []).append(entry)
            if not tier:
                del tiers[transmits]
            if free <= 0:
                break
        for transmits, entries in reinsert.items():
            target = tiers.get(transmits)
            if target is None:
                entries.sort()
                tiers[transmits] = entries
            else:
                # Both parts are sorted runs, which the sort merges in one pass.
                target.extend(entries)
                target.sort()
        return chosen

    def prune(self, max_retain: int) -> None:
        """Drop the most-sent messages until at most ``max_retain`` remain."""
        while len(self._by_name) > max_retain:
            worst_tier = self._tiers[max(self._tiers)]
            item = worst_tier[0][2]
            self._remove(item)
            item.finish()

    def reset(self) -> None:
        """Drop every queued message, running their callbacks."""
        items = list(self._by_name.values())
        self._tiers.clear()
        self._by_name.clear()
        for item in items:
            item.finish()

    def _add(self, item: QueuedBroadcast) -> None:
        tier = self._tiers.get(item.transmits)
        if tier is None:
            tier = self._tiers[item.transmits] = []
        entry = (len(item.encoded), item.ident, item)
        if not tier or tier[-1] < entry:
            tier.append(entry)
        else:
            bisect.insort(tier, entry)
        self._by_name[item.name] = item

    def _remove(self, item: QueuedBroadcast) -> None:
        tier = self._tiers[item.transmits]
        index = bisect.bisect_left(tier, (len(item.encoded), item.ident))
        del tier[index]
        if not tier:
            del self._tiers[item.transmits]
        del self._by_name[item.name]


# Larger than any ident, so (length, _NEWEST) sorts after every entry of that length.
_NEWEST = 1 << 62
