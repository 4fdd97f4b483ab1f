"""SWIM at scale on the in-memory simulator: convergence, failure detection, traffic.

Runs N engines (1,000 by default) with memberlist's LAN timing on
``xavi.protocol.sim`` and measures, in probe intervals ("rounds", 1 s each):

1. formation: every node joins n0 at once; rounds until 99% of all
   (observer, member) pairs are known, and until every node has all N.
   The last pairs often wait for push/pull, memberlist's anti-entropy;
2. steady traffic: packets and messages each node sends per round while
   nothing changes;
3. dissemination: one node changes its metadata; rounds until all N have it;
4. failure detection: one node is killed; rounds until the first member
   suspects it, until the first declares it dead, and until all do.

Each number is printed beside what SWIM predicts, and their ratio:

- log2(N) rounds for an epidemic to reach everyone, and log4(N) gossip
  intervals for memberlist's fan-out of 3;
- e/(e-1) rounds until some member first probes a failed one;
- that plus memberlist's suspicion timeout
  ``suspicion_mult * log10(N) * probe_interval`` for the declaration;
- two packets (ping and ack) per member per round of steady traffic.

Nothing is asserted.

Updates and failures are repeated (``--repeats``, 5 by default) on other
nodes and timer phases, and the medians are printed, with the maxima in the
JSON.

Run: python bench/bench_sim.py [--nodes 1000] [--seed 1] [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable

from loguru import logger

from xavi.protocol.messages import NodeStateKind
from xavi.protocol.sim import Simulator
from xavi.protocol.suspicion import suspicion_timeout
from xavi.protocol.timing import LAN


def run_until(sim: Simulator, condition: Callable[[], bool], timeout: float, step: float) -> float:
    """Run until ``condition`` holds, checked every ``step`` seconds; return elapsed seconds."""
    elapsed = sim.run_until_true(condition, timeout=timeout, check_every=step)
    if elapsed is None:
        raise SystemExit(f"condition not met within {timeout} simulated seconds")
    return elapsed


def traffic(sim: Simulator) -> tuple[int, int]:
    """Return the packets and messages sent so far."""
    return sim.stats.packets_sent, sim.stats.messages_sent


def measure(nodes: int, seed: int, repeats: int) -> dict[str, float]:
    """Run every phase and return the measurements."""
    round_s = LAN.probe_interval
    results: dict[str, float] = {"nodes": nodes, "seed": seed}
    sim = Simulator(seed, record_events=False, count_types=False)
    names = [f"n{i}" for i in range(nodes)]

    wall = time.perf_counter()
    for name in names:
        sim.add_node(name)
    for name in names[1:]:
        sim.join(name, ["n0"])
    pairs = nodes * nodes

    def known_fraction() -> float:
        return sum(sim.nodes[name].engine.num_members() for name in names) / pairs

    most = run_until(sim, lambda: known_fraction() >= 0.99, timeout=600.0, step=round_s / 4)
    formed = most + run_until(sim, sim.converged, timeout=600.0, step=round_s)
    results["formation_99_rounds"] = most / round_s
    results["formation_rounds"] = formed / round_s
    results["formation_messages_per_node_round"] = traffic(sim)[1] / nodes / (formed / round_s)
    results["formation_wall_s"] = time.perf_counter() - wall

    # Let the join storm drain before measuring quiet traffic.
    def queues_empty() -> bool:
        return all(not sim.nodes[name].engine.table.broadcasts for name in names)

    run_until(sim, queues_empty, timeout=300.0, step=round_s)
    sim.run_for(5.0)
    quiet_rounds = 30.0
    packets_before, messages_before = traffic(sim)
    sim.run_for(quiet_rounds * round_s)
    packets_after, messages_after = traffic(sim)
    results["steady_packets_per_node_round"] = (
        (packets_after - packets_before) / nodes / quiet_rounds
    )
    results["steady_messages_per_node_round"] = (
        (messages_after - messages_before) / nodes / quiet_rounds
    )

    wall = time.perf_counter()
    spreads = [measure_update(sim, names, f"n{1 + trial}", trial) for trial in range(repeats)]
    results["dissemination_rounds"] = statistics.median(spreads) / round_s
    results["dissemination_rounds_max"] = max(spreads) / round_s
    results["dissemination_gossip_rounds"] = statistics.median(spreads) / LAN.gossip_interval
    results["dissemination_wall_s"] = time.perf_counter() - wall

    wall = time.perf_counter()
    trials = [measure_failure(sim, names, f"n{100 + trial}") for trial in range(repeats)]
    for index, key in enumerate(("first_suspect", "first_dead", "all_dead")):
        values = [trial[index] / round_s for trial in trials]
        results[f"detect_{key}_rounds"] = statistics.median(values)
        results[f"detect_{key}_rounds_max"] = max(values)
    results["detection_wall_s"] = time.perf_counter() - wall
    results["total_messages"] = sim.stats.messages_sent
    return results


def measure_update(sim: Simulator, names: list[str], author: str, trial: int) -> float:
    """Change ``author``'s metadata; return the seconds until every node has the change."""
    meta = f"trial={trial}".encode()
    sim.update_meta(author, meta)

    def everyone_has_update() -> bool:
        for name in names:
            info = sim.nodes[name].engine.node(author)
            if info is None or info.meta != meta:
                return False
        return True

    spread = run_until(sim, everyone_has_update, timeout=120.0, step=LAN.gossip_interval / 4)
    # A pause of varying length puts the next trial at another timer phase.
    sim.run_for(10.0 + 0.37 * trial)
    return spread


def measure_failure(sim: Simulator, names: list[str], victim: str) -> tuple[float, float, float]:
    """Kill ``victim``; return the seconds until the first suspicion, first and last death."""
    observers = [name for name in names if name != victim and sim.nodes[name].running]
    sim.kill(victim)
    start = sim.now
    run_until(
        sim,
        lambda: any(sim.state_of(o, victim) != NodeStateKind.ALIVE for o in observers),
        timeout=600.0,
        step=0.05,
    )
    first_suspect = sim.now - start
    run_until(
        sim,
        lambda: any(sim.state_of(o, victim) == NodeStateKind.DEAD for o in observers),
        timeout=600.0,
        step=0.05,
    )
    first_dead = sim.now - start
    run_until(sim, lambda: sim.all_see(victim, NodeStateKind.DEAD, observers), 600.0, 0.05)
    all_dead = sim.now - start
    sim.run_for(7.3)
    return first_suspect, first_dead, all_dead


def report(results: dict[str, float]) -> None:
    """Print the measurements with SWIM's expectations and the ratios."""
    nodes = int(results["nodes"])
    log2n = math.log2(nodes)
    first_probe = math.e / (math.e - 1)
    timeout_rounds = suspicion_timeout(LAN.suspicion_mult, nodes, 1.0)
    fanout_rounds = math.log(nodes) / math.log(1 + LAN.gossip_nodes)
    rows = [
        (
            "formation: 99% of views complete, rounds",
            results["formation_99_rounds"],
            log2n,
            "log2 N",
        ),
        ("formation: all views complete, rounds", results["formation_rounds"], log2n, "log2 N"),
        ("update reaches all, rounds (median)", results["dissemination_rounds"], log2n, "log2 N"),
        (
            "update reaches all, gossip intervals (median)",
            results["dissemination_gossip_rounds"],
            fanout_rounds,
            "log4 N",
        ),
        (
            "first suspicion of a killed node, rounds",
            results["detect_first_suspect_rounds"],
            first_probe,
            "e/(e-1)",
        ),
        (
            "first dead declaration, rounds (median)",
            results["detect_first_dead_rounds"],
            first_probe + timeout_rounds,
            "e/(e-1) + 4 log10 N",
        ),
        (
            "all declare it dead, rounds (median)",
            results["detect_all_dead_rounds"],
            first_probe + timeout_rounds,
            "e/(e-1) + 4 log10 N",
        ),
        ("steady packets per node per round", results["steady_packets_per_node_round"], 2.0, "2"),
    ]

    print(f"SWIM simulation, N = {nodes}, seed {int(results['seed'])}, LAN timing")
    print(f"{'measure':48} {'value':>8} {'expected':>9} {'formula':>20} {'ratio':>6}")
    for label, value, expected, formula in rows:
        print(f"{label:48} {value:8.2f} {expected:9.2f} {formula:>20} {value / expected:6.2f}")

    print(
        f"steady messages per node per round: {results['steady_messages_per_node_round']:.2f}; "
        f"during formation: {results['formation_messages_per_node_round']:.1f}"
    )
    print(
        f"wall time: formation {results['formation_wall_s']:.1f} s, dissemination "
        f"{results['dissemination_wall_s']:.1f} s, detection {results['detection_wall_s']:.1f} s "
        f"(Python {platform.python_version()}, {platform.machine()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="cluster size (default 1000)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="updates and failures to time (default 5)"
    )
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args()
    if args.nodes < 3 + 100 + args.repeats:
        parser.error("--nodes must be at least 103 plus --repeats (victims are n100 and up)")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    # The engines log every refute and suspicion; the benchmark needs none of it.
    logger.disable("xavi.protocol")
    results = measure(args.nodes, args.seed, args.repeats)
    report(results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
