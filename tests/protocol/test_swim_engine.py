"""The sans-I/O engine driven by hand: probes, relays, gossip, push/pull, join, leave."""

from __future__ import annotations

import random

import pytest
from swim_helpers import PORT, Harness, alive, ip, make_engine

from xavi.protocol.member import DEFAULT_VSN, MemberConfig
from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
    Vsn,
)
from xavi.protocol.node import Memberlist
from xavi.protocol.outputs import (
    EventKind,
    Output,
    SendPacket,
    SendTcpPing,
    StartPushPull,
    UserMessage,
)
from xavi.protocol.timing import LAN, Timing

# Probe only: no gossip rounds, push/pull or rejoin in the way.
PROBE_ONLY = LAN.with_changes(gossip_interval=0, push_pull_interval=0, rejoin_interval=0)


def with_peers(count: int, timing: Timing = PROBE_ONLY, vsn: Vsn = DEFAULT_VSN) -> Harness:
    h = make_engine(timing=timing)
    for index in range(count):
        octet = 10 + index
        h.receive(Alive(1, f"p{octet}", ip(octet), PORT, b"", vsn))
    # Let the queued alive broadcasts drain so probe packets are easy to read.
    h.engine.table.broadcasts.reset()
    h.drain()
    return h


def next_ping(h: Harness) -> tuple[SendPacket, Ping]:
    """Advance until the engine sends a ping, and return the packet and ping."""
    for _ in range(100):
        for output in h.advance(0.05):
            if isinstance(output, SendPacket) and isinstance(output.messages[0], Ping):
                return output, output.messages[0]
    raise AssertionError("no ping sent")


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="512"):
        MemberConfig("a", ip(1), PORT, b"x" * 513)
    with pytest.raises(ValueError, match="4 or 16 bytes"):
        MemberConfig("a", b"\x01\x02", PORT)
    with pytest.raises(ValueError, match="port"):
        MemberConfig("a", ip(1), 0)
    with pytest.raises(ValueError, match="name"):
        MemberConfig("", ip(1), PORT)


def test_engine_starts_alive_with_own_join_event() -> None:
    h = make_engine()
    me = h.engine.local_node()
    assert (me.name, me.state, me.incarnation) == ("local", NodeStateKind.ALIVE, 1)
    assert [e.node.name for e in h.events(EventKind.JOIN)] == ["local"]
    assert h.engine.next_deadline() is not None


def test_probe_pings_member_with_our_source_address() -> None:
    h = with_peers(1)
    packet, ping = next_ping(h)
    assert packet.addr == ("127.0.0.10", PORT)
    assert ping.node == "p10"
    assert (ping.source_addr, ping.source_port, ping.source_node) == (ip(1), PORT, "local")


def test_probe_success_lowers_health_score() -> None:
    h = with_peers(1)
    h.engine.awareness.apply_delta(3)
    _, ping = next_ping(h)
    h.receive(Ack(ping.seq_no, b""))
    assert h.engine.health_score == 2
    h.advance(5.0)
    assert h.engine.node("p10").state == NodeStateKind.ALIVE  # type: ignore[union-attr]


def test_failed_probe_goes_indirect_then_suspects() -> None:
    h = with_peers(4)
    _, ping = next_ping(h)
    target = ping.node

    outputs = h.advance(LAN.probe_timeout)
    requests = [
        o.messages[0]
        for o in outputs
        if isinstance(o, SendPacket) and isinstance(o.messages[0], IndirectPing)
    ]
    tcp = [o for o in outputs if isinstance(o, SendTcpPing)]
    assert len(requests) == 3
    assert all(r.node == target and r.seq_no == ping.seq_no for r in requests)
    assert all(r.nack for r in requests)  # DEFAULT_VSN speaks up to protocol 5
    assert len(tcp) == 1
    assert tcp[0].ping == ping

    h.engine.handle_tcp_ping_result(ping.seq_no, False)
    h.receive(Nack(ping.seq_no))  # one helper of three sent a nack
    h.advance(LAN.probe_interval - LAN.probe_timeout)

    assert h.engine.node(target).state == NodeStateKind.SUSPECT  # type: ignore[union-attr]
    assert h.engine.health_score == 2  # two nacks missing


def test_failed_probe_without_nack_helpers_adds_one() -> None:
    old_vsn = (1, 3, 2, 2, 5, 4)  # protocol max 3: no nacks, TCP pings allowed
    h = with_peers(4, vsn=old_vsn)
    _, ping = next_ping(h)
    outputs = h.advance(LAN.probe_timeout)
    requests = [
        o.messages[0]
        for o in outputs
        if isinstance(o, SendPacket) and isinstance(o.messages[0], IndirectPing)
    ]
    assert requests
    assert not any(r.nack for r in requests)
    h.engine.handle_tcp_ping_result(ping.seq_no, False)
    h.advance(LAN.probe_interval)
    assert h.engine.health_score == 1


def test_indirect_ack_saves_the_target() -> None:
    h = with_peers(4)
    _, ping = next_ping(h)
    h.advance(LAN.probe_timeout)
    h.receive(Ack(ping.seq_no, b""))  # forwarded by a helper
    h.advance(LAN.probe_interval)
    assert h.engine.node(ping.node).state == NodeStateKind.ALIVE  # type: ignore[union-attr]


def test_tcp_ping_success_saves_the_target() -> None:
    h = with_peers(4)
    _, ping = next_ping(h)
    h.advance(LAN.probe_timeout)
    h.engine.handle_tcp_ping_result(ping.seq_no, True)
    h.advance(LAN.probe_interval)
    assert h.engine.node(ping.node).state == NodeStateKind.ALIVE  # type: ignore[union-attr]


def test_probe_waits_for_late_tcp_result() -> None:
    h = with_peers(4)
    _, ping = next_ping(h)
    h.advance(LAN.probe_interval - 0.01)
    h.advance(0.02)  # deadline passed, TCP result still pending
    assert h.engine.node(ping.node).state == NodeStateKind.ALIVE  # type: ignore[union-attr]
    h.engine.handle_tcp_ping_result(ping.seq_no, True)
    assert h.engine.node(ping.node).state == NodeStateKind.ALIVE  # type: ignore[union-attr]
    assert h.engine.health_score == 0


def test_probe_of_suspect_member_carries_suspect() -> None:
    h = with_peers(1)
    h.receive(Suspect(1, "p10", "other"))
    h.engine.table.broadcasts.reset()
    packet, ping = next_ping(h)
    assert packet.messages == (ping, Suspect(1, "p10", "local"))
    assert packet.crc is True  # the target speaks protocol 5


def test_ping_is_answered_at_source_address() -> None:
    h = make_engine()
    outputs = h.receive(Ping(42, "local", ip(9), 9000, "asker"), source=("10.9.9.9", 1))
    packets = [o for o in outputs if isinstance(o, SendPacket)]
    assert len(packets) == 1
    assert packets[0].addr == ("127.0.0.9", 9000)
    assert packets[0].messages[0] == Ack(42, b"")


def test_ping_for_another_node_is_ignored() -> None:
    h = make_engine()
    assert h.receive(Ping(42, "someone-else", ip(9), 9000, "asker")) == []
    assert h.engine.handle_stream_ping(Ping(1, "someone-else")) is None
    assert h.engine.handle_stream_ping(Ping(1, "local")) == Ack(1, b"")


def test_ack_piggybacks_queued_broadcasts() -> None:
    h = make_engine()
    h.receive(alive("peer", 3, 2))
    outputs = h.receive(Ping(1, "local", ip(9), 9000, "asker"))
    packet = outputs[-1]
    assert isinstance(packet, SendPacket)
    assert packet.messages[0] == Ack(1, b"")
    assert alive("peer", 3, 2) in packet.messages[1:]
    assert len(packet.encoded) == len(packet.messages)


def test_relay_forwards_ack_to_requester() -> None:
    h = make_engine()
    request = IndirectPing(77, ip(5), 7000, "target", True, ip(9), 9000, "asker")
    outputs = h.receive(request)
    ping_packet = outputs[-1]
    assert isinstance(ping_packet, SendPacket)
    assert ping_packet.addr == ("127.0.0.5", 7000)
    relay_ping = ping_packet.messages[0]
    assert isinstance(relay_ping, Ping)

    forwarded = h.receive(Ack(relay_ping.seq_no, b""))
    assert isinstance(forwarded[-1], SendPacket)
    assert forwarded[-1].addr == ("127.0.0.9", 9000)
    assert forwarded[-1].messages[0] == Ack(77, b"")
    later = h.advance(1.0)
    assert not any(isinstance(o, SendPacket) and Nack(77) in o.messages for o in later)


def test_relay_sends_nack_after_timeout() -> None:
    h = make_engine(timing=PROBE_ONLY)
    h.receive(IndirectPing(77, ip(5), 7000, "target", True, ip(9), 9000, "asker"))
    outputs = h.advance(LAN.probe_timeout + 0.01)
    nacks = [o for o in outputs if isinstance(o, SendPacket) and o.messages[0] == Nack(77)]
    assert len(nacks) == 1
    assert nacks[0].addr == ("127.0.0.9", 9000)


def test_gossip_sends_broadcasts_to_random_members() -> None:
    timing = LAN.with_changes(probe_interval=0, push_pull_interval=0, rejoin_interval=0)
    h = make_engine(timing=timing)
    for octet in range(10, 15):
        h.receive(alive(f"p{octet}", 1, octet))
    outputs = h.advance(LAN.gossip_interval)
    packets = [o for o in outputs if isinstance(o, SendPacket)]
    assert len(packets) == LAN.gossip_nodes
    assert len({p.addr for p in packets}) == LAN.gossip_nodes
    for packet in packets:
        assert all(isinstance(m, Alive) for m in packet.messages)
        assert sum(len(e) + 2 for e in packet.encoded if e) <= LAN.udp_buffer_size - 2


def test_gossip_reaches_recently_dead_but_not_left() -> None:
    timing = LAN.with_changes(probe_interval=0, push_pull_interval=0, rejoin_interval=0)
    h = make_engine(timing=timing)
    h.receive(alive("dead", 1, 2), alive("left", 1, 3))
    h.receive(Dead(1, "dead", "x"), Dead(1, "left", "left"))
    targets: set[tuple[str, int]] = set()
    for _ in range(20):
        h.receive(alive(f"news{len(targets)}", 1, 50))  # keep something to gossip
        targets |= {o.addr for o in h.advance(LAN.gossip_interval) if isinstance(o, SendPacket)}
    assert ("127.0.0.2", PORT) in targets
    assert ("127.0.0.3", PORT) not in targets


def test_push_pull_timer_picks_live_member() -> None:
    timing = LAN.with_changes(probe_interval=0, gossip_interval=0, rejoin_interval=0)
    h = make_engine(timing=timing)
    h.receive(alive("peer", 1, 2))
    outputs = h.advance(2 * LAN.push_pull_interval)
    requests = [o for o in outputs if isinstance(o, StartPushPull)]
    assert requests
    assert all(r.addr == ("127.0.0.2", PORT) and not r.join for r in requests)


def test_join_requests_push_pull_and_merges_answer() -> None:
    h = make_engine()
    h.engine.join([("127.0.0.2", PORT), ("127.0.0.1", PORT)])
    requests = [o for o in h.drain() if isinstance(o, StartPushPull)]
    assert [(r.addr, r.join) for r in requests] == [(("127.0.0.2", PORT), True)]

    state = h.engine.local_state(join=True)
    assert state.join is True
    assert [n.name for n in state.nodes] == ["local"]

    seed = PushNodeState("seed", ip(2), PORT, b"", 4, NodeStateKind.ALIVE, DEFAULT_VSN)
    h.engine.merge_remote_state(PushPull((seed,), b"", True))
    assert h.engine.num_members() == 2


def test_push_pull_answer_is_state_before_merge() -> None:
    h = make_engine()
    remote = PushNodeState("peer", ip(2), PORT, b"", 1, NodeStateKind.ALIVE, DEFAULT_VSN)
    answer = h.engine.handle_push_pull(("127.0.0.2", PORT), PushPull((remote,), b"", True))
    assert [n.name for n in answer.nodes] == ["local"]
    assert answer.join is True
    assert h.engine.node("peer") is not None


def test_rejoin_retries_seeds_that_are_not_members() -> None:
    timing = LAN.with_changes(probe_interval=0, gossip_interval=0, push_pull_interval=0)
    h = make_engine(timing=timing)
    h.engine.join([("127.0.0.2", PORT), ("127.0.0.3", PORT)])
    h.drain()
    h.receive(alive("seed2", 1, 2))

    outputs = h.advance(timing.rejoin_interval)

    requests = [o for o in outputs if isinstance(o, StartPushPull)]
    assert [(r.addr, r.join) for r in requests] == [(("127.0.0.3", PORT), True)]


def test_leave_broadcasts_dead_from_self() -> None:
    h = with_peers(2)
    h.engine.leave()
    me = h.engine.local_node()
    assert me.state == NodeStateKind.LEFT
    queued = h.engine.table.broadcasts.queued("local")
    assert queued is not None
    assert queued.message == Dead(1, "local", "local")
    assert h.engine.leave_complete is False

    limit = 4 * 1  # retransmit_mult 4, ceil(log10(3 + 1)) = 1
    for _ in range(limit):
        h.engine.table.broadcasts.get_broadcasts(2, 1400)
    assert h.engine.leave_complete is True


def test_leave_without_peers_completes_at_once() -> None:
    h = make_engine()
    h.engine.leave()
    assert h.engine.leave_complete is True


def test_left_node_ignores_alive_about_itself() -> None:
    h = with_peers(1)
    h.engine.leave()
    h.receive(Alive(9, "local", ip(1), PORT, b"", DEFAULT_VSN))
    assert h.engine.local_node().state == NodeStateKind.LEFT


def test_update_meta_raises_incarnation_and_broadcasts() -> None:
    h = make_engine()
    h.engine.update_meta(b"role=db")
    me = h.engine.local_node()
    assert (me.meta, me.incarnation) == (b"role=db", 2)
    queued = h.engine.table.broadcasts.queued("local")
    assert queued is not None
    assert queued.message == Alive(2, "local", ip(1), PORT, b"role=db", DEFAULT_VSN)
    assert [e.node.meta for e in h.events(EventKind.UPDATE)] == [b"role=db"]
    with pytest.raises(ValueError, match="512"):
        h.engine.update_meta(b"x" * 513)


def test_user_message_is_passed_on() -> None:
    h = make_engine()
    outputs = h.receive(User(b"hello"), source=("127.0.0.3", 5))
    assert outputs == [UserMessage(b"hello", ("127.0.0.3", 5))]


def test_shutdown_stops_everything() -> None:
    h = with_peers(1)
    h.engine.shutdown()
    assert h.engine.next_deadline() is None
    assert h.receive(Ping(1, "local", ip(9), 9000, "x")) == []
    assert h.engine.handle_stream_ping(Ping(1, "local")) is None


def test_muted_acks_answer_no_ping() -> None:
    h = make_engine()
    h.engine.faults.mute_acks = True
    assert h.receive(Ping(1, "local", ip(9), 9000, "x")) == []
    assert h.engine.handle_stream_ping(Ping(1, "local")) is None


def test_dropped_packets_change_nothing() -> None:
    h = make_engine()
    h.engine.faults.drop_packets = True
    h.receive(alive("peer", 1, 2))
    assert h.engine.node("peer") is None


def test_stall_holds_timers_until_cleared() -> None:
    h = with_peers(1)
    h.engine.faults.stall = True
    assert h.advance(5.0) == []
    h.engine.faults.stall = False
    outputs = h.advance(0.001)
    assert any(isinstance(o, SendPacket) for o in outputs)


def test_same_seed_gives_same_outputs() -> None:
    def run(seed: int) -> list[Output]:
        h = make_engine(seed=seed)
        for octet in range(10, 20):
            h.receive(alive(f"p{octet}", 1, octet))
        return h.advance(10.0)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_clock_is_read_when_now_is_omitted() -> None:
    now = [5.0]
    engine = Memberlist(MemberConfig("a", ip(1), PORT), lambda: now[0], random.Random(1))
    engine.handle_packet(("127.0.0.2", PORT), [alive("b", 1, 2)])
    engine.handle_packet(("127.0.0.2", PORT), [Dead(1, "b", "x")])
    now[0] = 9.0
    record = engine.table.by_name["b"]
    assert record.state_change == 5.0


def test_swim_module_exports_match_all() -> None:
    from xavi.protocol import swim

    exported = {name for name in dir(swim) if not name.startswith("_")}
    assert set(swim.__all__) <= exported
    for name in swim.__all__:
        assert getattr(swim, name) is not None


def test_removed_seed_is_no_longer_retried() -> None:
    harness = make_engine(timing=LAN.with_changes(probe_interval=0, gossip_interval=0,
                                                  push_pull_interval=0))
    kept, removed = ("127.0.0.2", PORT), ("127.0.0.3", PORT)
    harness.engine.join([kept, removed])
    harness.drain()
    harness.engine.set_seeds([kept])

    outputs = harness.advance(3 * LAN.rejoin_interval)

    targets = {o.addr for o in outputs if isinstance(o, StartPushPull)}
    assert kept in targets
    assert removed not in targets
