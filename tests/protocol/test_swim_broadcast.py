"""Transmit-limited broadcast queue: limits, invalidation, order and byte budget."""

from __future__ import annotations

from xavi.protocol.broadcast import TransmitLimitedQueue
from xavi.protocol.messages import Suspect, User


def make_queue(num_nodes: int = 10, mult: int = 2) -> TransmitLimitedQueue:
    return TransmitLimitedQueue(mult, lambda: num_nodes)


def user(size: int) -> User:
    return User(b"x" * size)


def test_broadcast_sent_exactly_limit_times() -> None:
    # 10 nodes and multiplier 2: limit = 2 * ceil(log10(11)) = 4.
    queue = make_queue(num_nodes=10, mult=2)
    finished: list[str] = []
    queue.queue("a", user(10), b"x" * 10, lambda: finished.append("a"))

    sends = 0
    for _ in range(10):
        if queue.get_broadcasts(2, 1400):
            sends += 1

    assert sends == 4
    assert len(queue) == 0
    assert finished == ["a"]


def test_transmit_limit_follows_cluster_size() -> None:
    size = [1]
    queue = TransmitLimitedQueue(3, lambda: size[0])
    queue.queue("a", user(1), b"x")
    size[0] = 100  # limit becomes 3 * ceil(log10(101)) = 9
    sends = sum(1 for _ in range(20) if queue.get_broadcasts(0, 100))
    assert sends == 9


def test_newer_message_replaces_older_about_same_node() -> None:
    queue = make_queue()
    finished: list[str] = []
    queue.queue("n1", Suspect(1, "n1", "a"), b"s" * 20, lambda: finished.append("old"))
    queue.queue("n1", Suspect(2, "n1", "b"), b"t" * 20)

    taken = queue.get_broadcasts(2, 1400)

    assert [item.message for item in taken] == [Suspect(2, "n1", "b")]
    assert finished == ["old"]
    assert len(queue) == 1


def test_messages_about_different_nodes_coexist() -> None:
    queue = make_queue()
    queue.queue("n1", Suspect(1, "n1", "a"), b"s" * 20)
    queue.queue("n2", Suspect(1, "n2", "a"), b"s" * 20)
    assert len(queue) == 2
    assert queue.queued("n1") is not None


def test_fresh_messages_go_before_retransmits() -> None:
    queue = make_queue()
    queue.queue("old", user(10), b"o" * 10)
    queue.get_broadcasts(2, 1400)  # "old" now has one transmit
    queue.queue("new", user(10), b"n" * 10)

    taken = queue.get_broadcasts(2, 14)  # room for one 10-byte message

    assert [item.name for item in taken] == ["new"]


def test_longer_then_newer_first_within_transmit_count() -> None:
    queue = make_queue()
    queue.queue("short", user(5), b"s" * 5)
    queue.queue("long-old", user(30), b"l" * 30)
    queue.queue("long-new", user(30), b"m" * 30)

    taken = queue.get_broadcasts(0, 1400)

    assert [item.name for item in taken] == ["long-new", "long-old", "short"]


def test_byte_budget_counts_overhead() -> None:
    queue = make_queue()
    for name in ("a", "b", "c"):
        queue.queue(name, user(10), b"x" * 10)

    taken = queue.get_broadcasts(2, 24)  # (2 + 10) * 2 = 24 fits two

    assert len(taken) == 2
    assert sum(len(item.encoded) + 2 for item in taken) <= 24


def test_large_message_skipped_for_smaller_that_fits() -> None:
    queue = make_queue()
    queue.queue("big", user(100), b"b" * 100)
    queue.queue("small", user(10), b"s" * 10)

    taken = queue.get_broadcasts(2, 50)

    assert [item.name for item in taken] == ["small"]
    assert queue.queued("big") is not None


def test_empty_queue_returns_nothing() -> None:
    assert make_queue().get_broadcasts(2, 1400) == []


def test_prune_drops_most_sent_first() -> None:
    queue = make_queue()
    queue.queue("sent", user(10), b"x" * 10)
    queue.get_broadcasts(0, 1400)
    queue.queue("fresh", user(10), b"y" * 10)

    queue.prune(1)

    assert queue.queued("sent") is None
    assert queue.queued("fresh") is not None


def test_reset_runs_every_callback() -> None:
    queue = make_queue()
    finished: list[str] = []
    queue.queue("a", user(1), b"a", lambda: finished.append("a"))
    queue.queue("b", user(1), b"b", lambda: finished.append("b"))

    queue.reset()

    assert sorted(finished) == ["a", "b"]
    assert len(queue) == 0
