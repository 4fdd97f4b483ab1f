"""Merge rules of the member table: incarnations, suspicion, death, refutation, conflicts."""

from __future__ import annotations

import pytest
from swim_helpers import PORT, alive, ip, make_engine

from xavi.protocol.member import DEFAULT_VSN, ProtocolVersionError
from xavi.protocol.messages import Alive, Dead, NodeStateKind, PushNodeState, PushPull, Suspect
from xavi.protocol.outputs import EventKind
from xavi.protocol.timing import LAN


def test_new_alive_adds_member_with_join_event() -> None:
    h = make_engine()
    h.receive(alive("peer", 1, 2, b"m"))

    info = h.engine.node("peer")
    assert info is not None
    assert info.state == NodeStateKind.ALIVE
    assert info.meta == b"m"
    assert [e.node.name for e in h.events(EventKind.JOIN)] == ["local", "peer"]


def test_alive_with_lower_or_equal_incarnation_is_ignored() -> None:
    h = make_engine()
    h.receive(alive("peer", 5, 2, b"five"))
    h.receive(alive("peer", 4, 2, b"four"), alive("peer", 5, 2, b"other"))

    info = h.engine.node("peer")
    assert info is not None
    assert info.incarnation == 5
    assert info.meta == b"five"
    assert h.events(EventKind.UPDATE) == []


def test_alive_with_higher_incarnation_updates_meta() -> None:
    h = make_engine()
    h.receive(alive("peer", 1, 2, b"old"))
    h.receive(alive("peer", 2, 2, b"new"))

    updates = h.events(EventKind.UPDATE)
    assert [e.node.meta for e in updates] == [b"new"]


def test_alive_with_zero_incarnation_leaves_unknown_member_dead() -> None:
    # memberlist 0.2.2 creates the entry in state DEAD and then ignores the
    # message, because incarnation 0 is not newer than the entry's 0.
    h = make_engine()
    h.receive(alive("peer", 0, 2))
    info = h.engine.node("peer")
    assert info is not None
    assert info.state == NodeStateKind.DEAD


def test_alive_with_invalid_protocol_versions_is_ignored() -> None:
    h = make_engine()
    h.receive(Alive(1, "peer", ip(2), PORT, b"", (3, 2, 2, 2, 5, 4)))
    assert h.engine.node("peer") is None


def test_suspect_marks_member_and_times_out_to_dead() -> None:
    h = make_engine(timing=LAN.with_changes(gossip_interval=0))
    h.receive(alive("peer", 3, 2))
    h.receive(Suspect(3, "peer", "other"))

    info = h.engine.node("peer")
    assert info is not None
    assert info.state == NodeStateKind.SUSPECT

    # Two members: no confirmations expected, so the minimum timeout applies:
    # 4 * max(1, log10(2)) * 1 s = 4 s.
    h.advance(3.9)
    assert h.engine.node("peer").state == NodeStateKind.SUSPECT  # type: ignore[union-attr]
    h.advance(0.2)
    assert h.engine.node("peer").state == NodeStateKind.DEAD  # type: ignore[union-attr]
    leaves = h.events(EventKind.LEAVE)
    assert [(e.node.name, e.node.state) for e in leaves] == [("peer", NodeStateKind.DEAD)]


def test_suspect_with_older_incarnation_is_ignored() -> None:
    h = make_engine()
    h.receive(alive("peer", 3, 2))
    h.receive(Suspect(2, "peer", "other"))
    assert h.engine.node("peer").state == NodeStateKind.ALIVE  # type: ignore[union-attr]


def test_alive_with_higher_incarnation_clears_suspicion() -> None:
    h = make_engine()
    h.receive(alive("peer", 3, 2))
    h.receive(Suspect(3, "peer", "other"))
    h.receive(alive("peer", 4, 2))
    assert h.engine.node("peer").state == NodeStateKind.ALIVE  # type: ignore[union-attr]
    assert "peer" not in h.engine.table.suspicions


def test_suspect_about_self_is_refuted_with_higher_incarnation() -> None:
    h = make_engine()
    assert h.engine.local_node().incarnation == 1
    h.receive(Suspect(7, "local", "accuser"))

    me = h.engine.local_node()
    assert me.state == NodeStateKind.ALIVE
    assert me.incarnation == 8
    assert h.engine.health_score == 1
    queued = h.engine.table.broadcasts.queued("127.0.0.1")
    assert queued is not None
    assert queued.message == Alive(8, "local", ip(1), PORT, b"", DEFAULT_VSN)


def test_dead_about_self_is_refuted() -> None:
    h = make_engine()
    h.receive(Dead(1, "local", "accuser"))
    me = h.engine.local_node()
    assert me.state == NodeStateKind.ALIVE
    assert me.incarnation == 2


def test_old_alive_about_self_with_other_meta_is_refuted() -> None:
    # A restarted node meets its old announcement at the same incarnation.
    h = make_engine(meta=b"new")
    h.receive(Alive(1, "local", ip(1), PORT, b"old", DEFAULT_VSN))
    assert h.engine.local_node().incarnation == 2


def test_dead_from_member_itself_means_left() -> None:
    h = make_engine()
    h.receive(alive("peer", 2, 2))
    h.receive(Dead(2, "peer", "peer"))

    assert h.engine.node("peer").state == NodeStateKind.LEFT  # type: ignore[union-attr]
    leaves = h.events(EventKind.LEAVE)
    assert [(e.node.name, e.node.state) for e in leaves] == [("peer", NodeStateKind.LEFT)]


def test_dead_with_older_incarnation_is_ignored() -> None:
    h = make_engine()
    h.receive(alive("peer", 5, 2))
    h.receive(Dead(4, "peer", "other"))
    assert h.engine.node("peer").state == NodeStateKind.ALIVE  # type: ignore[union-attr]


def test_dead_member_returns_with_higher_incarnation_as_join() -> None:
    h = make_engine()
    h.receive(alive("peer", 2, 2))
    h.receive(Dead(2, "peer", "other"))
    h.receive(alive("peer", 2, 2))
    assert h.engine.node("peer").state == NodeStateKind.DEAD  # type: ignore[union-attr]

    h.receive(alive("peer", 3, 2))
    assert h.engine.node("peer").state == NodeStateKind.ALIVE  # type: ignore[union-attr]
    assert [e.node.name for e in h.events(EventKind.JOIN)] == ["local", "peer", "peer"]


def test_same_name_from_other_address_is_a_conflict() -> None:
    h = make_engine()
    h.receive(alive("peer", 1, 2))
    h.receive(alive("peer", 9, 3))

    info = h.engine.node("peer")
    assert info is not None
    assert info.addr == ip(2)
    assert info.incarnation == 1
    conflicts = h.events(EventKind.CONFLICT)
    assert len(conflicts) == 1
    assert conflicts[0].other is not None
    assert conflicts[0].other.addr == ip(3)


def test_left_member_may_return_from_new_address() -> None:
    h = make_engine()
    h.receive(alive("peer", 4, 2))
    h.receive(Dead(4, "peer", "peer"))
    h.receive(alive("peer", 1, 3))  # restarted elsewhere, incarnation reset

    info = h.engine.node("peer")
    assert info is not None
    assert info.addr == ip(3)
    assert info.state == NodeStateKind.ALIVE


def test_dead_member_address_reclaimed_only_after_reclaim_time() -> None:
    timing = LAN.with_changes(dead_node_reclaim_time=10.0, gossip_to_the_dead_time=60.0)
    h = make_engine(timing=timing)
    h.receive(alive("peer", 4, 2))
    h.receive(Dead(4, "peer", "other"))

    h.receive(alive("peer", 5, 3))
    assert h.engine.node("peer").addr == ip(2)  # type: ignore[union-attr]

    h.advance(11.0)
    h.receive(alive("peer", 1, 3))
    assert h.engine.node("peer").addr == ip(3)  # type: ignore[union-attr]


def test_dead_member_address_never_reclaimed_by_default() -> None:
    h = make_engine(timing=LAN.with_changes(gossip_to_the_dead_time=2000.0))
    h.receive(alive("peer", 4, 2))
    h.receive(Dead(4, "peer", "other"))
    h.advance(1000.0)
    h.receive(alive("peer", 9, 3))
    assert h.engine.node("peer").addr == ip(2)  # type: ignore[union-attr]


def test_push_pull_dead_is_believed_only_as_suspect() -> None:
    h = make_engine()
    h.receive(alive("peer", 2, 2))
    entry = PushNodeState("peer", ip(2), PORT, b"", 2, NodeStateKind.DEAD, DEFAULT_VSN)
    h.engine.merge_remote_state(PushPull((entry,)))
    assert h.engine.node("peer").state == NodeStateKind.SUSPECT  # type: ignore[union-attr]


def test_push_pull_left_is_taken_as_left() -> None:
    h = make_engine()
    h.receive(alive("peer", 2, 2))
    entry = PushNodeState("peer", ip(2), PORT, b"", 2, NodeStateKind.LEFT, DEFAULT_VSN)
    h.engine.merge_remote_state(PushPull((entry,)))
    assert h.engine.node("peer").state == NodeStateKind.LEFT  # type: ignore[union-attr]


def test_push_pull_with_disjoint_delegate_versions_is_rejected() -> None:
    h = make_engine()
    plain = (1, 5, 2, 0, 0, 0)  # a plain memberlist application
    entry = PushNodeState("go", ip(2), PORT, b"", 1, NodeStateKind.ALIVE, plain)
    with pytest.raises(ProtocolVersionError, match="delegate protocol version"):
        h.engine.merge_remote_state(PushPull((entry,)))
    assert h.engine.node("go") is None


def test_suspicion_confirmation_is_regossiped() -> None:
    h = make_engine()
    for octet in range(2, 8):
        h.receive(alive(f"p{octet}", 1, octet))
    h.receive(Suspect(1, "p2", "p3"))
    queue = h.engine.table.broadcasts
    first = queue.queued("p2")
    assert first is not None

    h.receive(Suspect(1, "p2", "p4"))
    second = queue.queued("p2")
    assert second is not None
    assert second.message == Suspect(1, "p2", "p4")
    assert h.engine.table.suspicions["p2"].confirmations == 1


def test_reaping_forgets_dead_but_keeps_left() -> None:
    # memberlist 0.2.2 reaps only state DEAD; LEFT entries stay.
    timing = LAN.with_changes(gossip_to_the_dead_time=5.0, gossip_interval=0)
    h = make_engine(timing=timing)
    h.receive(alive("dead", 1, 2), alive("left", 1, 3), alive("up", 1, 4))
    h.receive(Dead(1, "dead", "x"), Dead(1, "left", "left"))

    h.advance(10.0)  # several probe rounds wrap the list at least once

    assert h.engine.node("dead") is None
    assert h.engine.node("left") is not None
    assert h.engine.node("up") is not None
