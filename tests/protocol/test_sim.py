"""Whole-cluster behaviour on the deterministic in-memory network."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from loguru import logger

from xavi.protocol.messages import NodeStateKind
from xavi.protocol.outputs import EventKind
from xavi.protocol.sim import Simulator
from xavi.protocol.suspicion import suspicion_timeout
from xavi.protocol.timing import LAN, Timing


@pytest.fixture(autouse=True)
def quiet_protocol_logs() -> Iterator[None]:
    """Silence the engines' log lines: thousands of refutes would flood the output."""
    logger.disable("xavi.protocol")
    yield
    logger.enable("xavi.protocol")


def form_cluster(size: int, seed: int = 1, timing: Timing = LAN, **options: object) -> Simulator:
    """Start ``size`` nodes that all join n0, and run until every view is complete."""
    sim = Simulator(seed, timing=timing, **options)  # type: ignore[arg-type]
    names = [f"n{i}" for i in range(size)]
    for name in names:
        sim.add_node(name)
    for name in names[1:]:
        sim.join(name, ["n0"])
    assert sim.run_until_true(sim.converged, timeout=60.0) is not None
    return sim


def test_hundred_nodes_converge() -> None:
    sim = Simulator(2, record_events=False)
    names = [f"n{i}" for i in range(100)]
    for name in names:
        sim.add_node(name)
    for name in names[1:]:
        sim.join(name, ["n0"])

    elapsed = sim.run_until_true(sim.converged, timeout=60.0)

    assert elapsed is not None
    assert elapsed <= 10.0
    assert all(len(sim.live_view(name)) == 100 for name in names)


def test_killed_node_is_declared_dead_by_all() -> None:
    sim = form_cluster(30)
    sim.kill("n7")

    elapsed = sim.run_until_true(lambda: sim.all_see("n7", NodeStateKind.DEAD), timeout=120.0)

    assert elapsed is not None
    # Upper bound: the maximum suspicion timeout (6 times the minimum) plus
    # a few probe rounds to notice and gossip.
    bound = LAN.suspicion_max_timeout_mult * suspicion_timeout(4, 30, 1.0) + 10.0
    assert elapsed <= bound
    deaths = [e for _, observer, e in sim.events if e.kind == EventKind.LEAVE]
    assert {e.node.name for e in deaths} == {"n7"}
    assert all(e.node.state == NodeStateKind.DEAD for e in deaths)


def test_ten_percent_loss_causes_no_false_deaths() -> None:
    sim = form_cluster(30, seed=3)
    sim.set_loss(0.10)

    sim.run_for(900.0)

    deaths = [e for _, _, e in sim.events if e.kind == EventKind.LEAVE]
    assert deaths == []
    assert sim.stats.packets_lost > 1000
    assert sim.stats.by_type.get("IndirectPing", 0) > 0
    assert sim.stats.by_type.get("Suspect", 0) > 0  # suspicions happened and were refuted
    assert sim.converged()


def test_loss_without_tcp_pings_leaves_no_death() -> None:
    # Without the TCP fallback more probes fail. memberlist can then flap: a
    # member that missed every copy of a refutation declares the suspect dead,
    # and the suspect refutes that too. Whatever happens, no death may stick.
    timing = LAN.with_changes(disable_tcp_pings=True)
    sim = form_cluster(30, seed=11, timing=timing)
    sim.set_loss(0.10)

    sim.run_for(900.0)

    assert sim.stats.by_type.get("Suspect", 0) > 0
    last_kind: dict[tuple[str, str], EventKind] = {}
    for _, observer, event in sim.events:
        if event.kind in (EventKind.LEAVE, EventKind.JOIN):
            last_kind[(observer, event.node.name)] = event.kind
    assert EventKind.LEAVE not in last_kind.values()
    assert sim.converged()


def test_short_isolation_heals_by_push_pull() -> None:
    # Cut n9 off long enough for deaths on both sides. No message informs n9
    # that the others consider it dead, so the anti-entropy push/pull repairs
    # it, even with Xavi's seed rejoin turned off.
    timing = LAN.with_changes(rejoin_interval=0)
    sim = form_cluster(10, seed=12, timing=timing)
    sim.partition(["n9"])

    sim.run_for(28.0)
    assert sim.all_see("n9", NodeStateKind.DEAD)
    dead_at_n9 = [f"n{i}" for i in range(9) if sim.state_of("n9", f"n{i}") == NodeStateKind.DEAD]
    assert dead_at_n9

    sim.heal()
    elapsed = sim.run_until_true(sim.converged, timeout=2 * LAN.push_pull_interval)

    assert elapsed is not None
    last_kind: dict[tuple[str, str], EventKind] = {}
    for _, observer, event in sim.events:
        if event.kind in (EventKind.LEAVE, EventKind.JOIN):
            last_kind[(observer, event.node.name)] = event.kind
    assert EventKind.LEAVE not in last_kind.values()


def test_partition_longer_than_dead_timeouts_heals() -> None:
    sim = form_cluster(20, seed=4)
    left = [f"n{i}" for i in range(10)]
    right = [f"n{i}" for i in range(10, 20)]
    sim.partition(left, right)

    # Long enough to declare the other side dead and reap it.
    sim.run_for(LAN.gossip_to_the_dead_time + 90.0)
    assert sim.live_view("n0") == set(left)
    assert sim.live_view("n15") == set(right)
    assert sim.state_of("n15", "n0") is None  # reaped

    sim.heal()
    elapsed = sim.run_until_true(sim.converged, timeout=3 * LAN.rejoin_interval)

    assert elapsed is not None
    assert all(len(sim.live_view(name)) == 20 for name in sim.running())


def test_graceful_leave_is_seen_as_left() -> None:
    sim = form_cluster(20, seed=5)
    sim.leave("n3")

    others = [n for n in sim.running() if n != "n3"]
    elapsed = sim.run_until_true(
        lambda: sim.all_see("n3", NodeStateKind.LEFT, others), timeout=30.0
    )

    assert elapsed is not None
    assert elapsed <= 5.0
    leaves = [(obs, e.node.state) for _, obs, e in sim.events if e.kind == EventKind.LEAVE]
    assert {obs for obs, _ in leaves} == set(sim.running())
    assert {state for _, state in leaves} == {NodeStateKind.LEFT}
    leaver = sim.nodes["n3"].engine
    assert sim.run_until_true(lambda: leaver.leave_complete, timeout=10.0) is not None


def test_metadata_update_reaches_all() -> None:
    sim = form_cluster(50, seed=6)
    sim.update_meta("n9", b"role=db")

    def everyone_sees_update() -> bool:
        for name in sim.running():
            info = sim.nodes[name].engine.node("n9")
            if info is None or info.meta != b"role=db":
                return False
        return True

    elapsed = sim.run_until_true(everyone_sees_update, timeout=30.0, check_every=0.1)

    assert elapsed is not None
    assert elapsed <= 3.0
    updates = {obs for _, obs, e in sim.events if e.kind == EventKind.UPDATE and obs != "n9"}
    assert updates == set(sim.running()) - {"n9"}


def test_muted_node_refutes_and_stays_alive() -> None:
    sim = form_cluster(10, seed=7)
    sim.nodes["n4"].engine.faults.mute_acks = True

    sim.run_for(60.0)

    assert sim.nodes["n4"].engine.local_node().incarnation > 1
    deaths = [e for _, _, e in sim.events if e.kind == EventKind.LEAVE]
    assert deaths == []


def test_restarted_node_shows_as_update_not_join() -> None:
    sim = form_cluster(10, seed=8)
    sim.kill("n5")
    sim.run_for(0.5)
    sim.restart("n5", meta=b"v2", join=["n0"])
    before = len(sim.events)

    elapsed = sim.run_until_true(
        lambda: all(sim.nodes[n].engine.node("n5").meta == b"v2" for n in sim.running()),  # type: ignore[union-attr]
        timeout=30.0,
    )

    assert elapsed is not None
    later = sim.events[before:]
    kinds = {e.kind for _, obs, e in later if obs != "n5" and e.node.name == "n5"}
    assert kinds == {EventKind.UPDATE}


def test_push_pull_across_partition_fails() -> None:
    sim = Simulator(9)
    sim.add_node("a")
    sim.add_node("b")
    sim.partition(["a"], ["b"])
    sim.join("a", ["b"])
    sim.run_for(LAN.tcp_timeout + 1.0)
    assert sim.stats.push_pulls_failed >= 1
    assert sim.live_view("a") == {"a"}


def test_packets_survive_real_codec_within_budget() -> None:
    # wire=True encodes and decodes every packet and fails on an oversized one.
    sim = form_cluster(40, seed=10, wire=True)
    sim.kill("n1")
    sim.run_for(30.0)
    assert sim.all_see("n1", NodeStateKind.DEAD)


def test_same_seed_gives_same_run() -> None:
    def run(seed: int) -> tuple[int, int, list[tuple[float, str, str]]]:
        sim = form_cluster(15, seed=seed)
        sim.kill("n2")
        sim.run_for(30.0)
        trace = [(t, obs, e.kind.value + e.node.name) for t, obs, e in sim.events]
        return sim.stats.packets_sent, sim.stats.messages_sent, trace

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_loss_setting_is_validated() -> None:
    sim = Simulator(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sim.set_loss(1.5)
    with pytest.raises(ValueError, match="both"):
        sim.set_loss(0.5, src="a")


def test_detection_time_grows_slowly_with_size() -> None:
    times = {}
    for size in (8, 64):
        sim = form_cluster(size, seed=13)
        sim.kill("n3")
        elapsed = sim.run_until_true(
            lambda sim=sim: sim.all_see("n3", NodeStateKind.DEAD),  # type: ignore[misc]
            timeout=200,
        )
        assert elapsed is not None
        times[size] = elapsed
    # Suspicion scales with log10(n): 8x the nodes must not cost 8x the time.
    assert times[64] < times[8] * math.log2(64)
