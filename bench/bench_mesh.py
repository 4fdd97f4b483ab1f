"""Benchmark a mesh of gossip-only Xavi agents against the same number of Go memberlist peers.

For each size N (``--sizes``, default 20 and 50), the benchmark runs a
cluster of N Python agents and a cluster of N Go peers, one after the other
and in alternating order. Every agent is its own ``python -m xavi`` process
with ``"services": []`` and ``"timing": "lan"``. Every Go peer is the interop
test peer (``tests/interop/peer``, Debian's memberlist 0.2.2) with
``DefaultLANConfig``, the same cluster key and the same serf tags as an agent's.
Each cluster runs in a fresh network namespace of its own, on 127.0.0.1 with
ports 20000 + i, so only its own traffic crosses that namespace's ``lo``.

Measures, for each cluster:

- *convergence*: from the launch of the first node (the seed) until every
  node's view lists N alive members. All other nodes are launched as soon
  as the seed listens, each seeded with the seed's address. A node's view
  comes from the membership events it emits. For an agent, these are the
  ``member_joined``, ``member_failed`` and ``member_left`` lines of its log,
  with their millisecond timestamps. For a Go peer, they are the ``join``
  and ``leave`` events on its stdout, stamped when the benchmark reads them
  (every 20 ms). The time *after the last start* counts from the moment the
  last node listened, so it leaves out start-up. Each node's CPU time at
  the moment all nodes listen is its start-up cost;
- *convergence on the same arrivals*: Go peers start in milliseconds, one
  after the other, while the agents compete for the CPU with their imports
  and listen over seconds. So a third cluster ("go-replay") starts Go peers
  at the moments the agents started listening, and measures only its
  convergence;
- *detection*: the last node is killed with SIGKILL, and the time runs
  until every other live node has reported it gone. The first report is
  kept too. Then the next node is killed, ``--kills`` times (default 5),
  and the report gives the median over the kills;
- *bytes*: over a steady window (``--window``, after ``--settle`` seconds of
  quiet), the namespace's ``lo`` transmit counters from ``/proc/net/dev``
  (IP and UDP or TCP headers included), divided by N and by the window;
- *CPU*: ``utime + stime`` of each node's process over the same window, as a
  percentage of one core; *RSS*: each node's ``VmRSS`` at the window's end.

After convergence every view is checked once more: through the control
socket (``xavi.ctl.call``, the function behind ``xavi ctl --json members``)
for agents, through the peer's ``members`` command for Go.

Goals, as Python/Go ratios: convergence, detection and bytes at most 1.1;
CPU at most 3. RSS has an absolute limit of 40 MiB per agent. Numbers are
reported, never asserted.

Usage: ``python bench/bench_mesh.py [--sizes 20,50] [--quick] [--json FILE]``.
Needs root (``ip netns``, ``nsenter``), ``scripts/build-go-peer.sh`` to work,
and about 40 MiB of memory per agent. Every process the benchmark starts is
stopped by its PID, and each namespace is deleted, also after an error.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "interop")]

from go_peer import GoPeer, GoPeerError, build_go_peer

from xavi import __version__
from xavi.ctl import CtlError, call
from xavi.mesh import TAG_SERVICES, TAG_VERSION
from xavi.protocol.meta import encode_tags
from xavi.secrets import ensure_secrets

NAMESPACE = "xavi-bench-mesh"
BASE_PORT = 20000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GOALS = {"converge_s": 1.1, "converge_after_start_s": 1.1, "detect_all_s": 1.1,
         "bytes_per_node_s": 1.1, "cpu_percent": 3.0}
GOAL_RSS_MIB = 40.0
START_TIMEOUT = 30.0
CONVERGE_TIMEOUT = 120.0
DETECT_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
KILL_PAUSE = 2.0
# An agent's text log line: timestamp, level, event, then the member's name (``member=``),
# or the agent's own name (``node=``) for the two start events.
LOG_LINE = re.compile(
    r"^(\S+) +\w+ +(member_joined|member_failed|member_left|gossip_started|agent_starting)"
    r"\b.*?(?:member|node)=(\S+)")


class BenchError(Exception):
    """The benchmark cannot go on: a node died or missed a deadline, or a tool failed."""


# Namespace and /proc ---------------------------------------------------------


class Namespace:
    """A network namespace of the benchmark's own, with only ``lo`` up."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"
        self.created = False

    def create(self) -> None:
        if Path(self.path).exists():
            raise BenchError(f"network namespace {self.name} already exists; if no other "
                             f"benchmark runs, remove it with: ip netns del {self.name}")
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.created = True
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def command(self, argv: list[str]) -> list[str]:
        """Return ``argv`` prefixed to run in this namespace; nsenter execs it, so the PID stays."""
        return ["nsenter", f"--net={self.path}", *argv]

    def lo_counters(self) -> tuple[int, int]:
        """Return (bytes, packets) transmitted on this namespace's ``lo``."""
        text = subprocess.run(self.command(["cat", "/proc/net/dev"]), capture_output=True,
                              text=True, check=True).stdout
        for line in text.splitlines():
            name, _, fields = line.partition(":")
            if name.strip() == "lo":
                values = [int(v) for v in fields.split()]
                return values[8], values[9]
        raise BenchError(f"no lo line in /proc/net/dev of namespace {self.name}")

    def delete(self) -> None:
        """Delete the namespace if this object created it; never one found in place."""
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], check=False)
            self.created = False


def cpu_ticks(pid: int) -> int:
    """Return ``utime + stime`` of ``pid`` in clock ticks (fields 14 and 15 of proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def status_field(pid: int, name: str) -> int:
    """Return a numeric field of ``/proc/PID/status`` (memory fields are in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise BenchError(f"no {name} in /proc/{pid}/status")


def private_kib(pid: int) -> int:
    """Return the memory only this process maps (``Private_*`` of smaps_rollup), in kB."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


# Clusters --------------------------------------------------------------------


@dataclass
class Node:
    """One cluster member as the benchmark follows it."""

    name: str
    pid: int
    launched_at: float
    """Wall time just before the benchmark started the node's process."""
    started_at: float = 0.0
    """Wall time at which the node listened (agent: ``gossip_started``; Go: ready)."""
    main_at: float = 0.0
    """Agents only: wall time of ``agent_starting``, the first line after the imports."""
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    """(wall time, "join" or "gone", member name) in the order the node reported them."""


class Cluster(Protocol):
    """The interface of a Python or Go cluster that ``measure`` uses."""

    impl: str
    nodes: list[Node]
    poll_interval: float

    def start(self) -> float: ...
    def refresh(self) -> None: ...
    def check_alive(self) -> None: ...
    def views(self) -> list[int]: ...
    def kill(self, index: int) -> None: ...
    def close(self) -> None: ...


class PythonCluster:
    """N ``python -m xavi`` agents with no services, each with its own folder and log."""

    impl = "python"
    poll_interval = 0.25

    def __init__(self, size: int, namespace: Namespace, work: Path, secrets: Path,
                 env: dict[str, str], log_level: str) -> None:
        self.size, self.namespace, self.work = size, namespace, work
        self.secrets, self.env, self.log_level = secrets, env, log_level
        self.nodes: list[Node] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self._partial: list[str] = []
        self._killed: set[str] = set()

    def _launch(self, index: int) -> None:
        name = f"py-{index:02d}"
        folder = self.work / name
        folder.mkdir(parents=True)
        config = {"services": [], "cluster": {
            "bind_addr": "127.0.0.1", "advertise_addr": "127.0.0.1",
            "bind_port": BASE_PORT + index, "node_name": name,
            "peers": [f"127.0.0.1:{BASE_PORT}"], "timing": "lan"}}
        (folder / "xavi.json").write_text(json.dumps(config))
        (folder / "xavi.secrets").write_bytes(self.secrets.read_bytes())
        (folder / "xavi.secrets").chmod(0o600)
        launched = time.time()
        argv = [sys.executable, "-m", "xavi", "--config-dir", str(folder), "--state-dir",
                str(folder / "state"), "--socket", str(folder / "xavi.sock"),
                "--log-level", self.log_level]
        with (folder / "agent.log").open("wb") as log_file:
            process = subprocess.Popen(self.namespace.command(argv), cwd=REPO_ROOT, env=self.env,
                                       stdout=log_file, stderr=subprocess.STDOUT)
        self.processes.append(process)
        self.nodes.append(Node(name, process.pid, launched))
        self._logs.append((folder / "agent.log").open(encoding="utf-8", errors="replace"))
        self._partial.append("")

    def start(self) -> float:
        launched = time.time()
        self._launch(0)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.nodes[0].started_at:
            self.refresh()
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the seed agent did not start gossip in {START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        for index in range(1, self.size):
            self._launch(index)
        return launched

    def refresh(self) -> None:
        for index, node in enumerate(self.nodes):
            text = self._partial[index] + self._logs[index].read()
            lines = text.split("\n")
            self._partial[index] = lines.pop()
            for line in lines:
                match = LOG_LINE.match(line)
                if match is None:
                    continue
                stamp = datetime.fromisoformat(match.group(1)).timestamp()
                event, member = match.group(2), match.group(3)
                if event == "gossip_started":
                    node.started_at = stamp
                elif event == "agent_starting":
                    node.main_at = stamp
                else:
                    node.timeline.append((stamp, "join" if event == "member_joined" else "gone",
                                          member))

    def check_alive(self) -> None:
        for node, process in zip(self.nodes, self.processes, strict=True):
            if process.poll() is not None and node.name not in self._killed:
                log = (self.work / node.name / "agent.log").read_text(errors="replace")
                raise BenchError(f"agent {node.name} exited with {process.returncode}; "
                                 f"last log lines:\n" + "\n".join(log.splitlines()[-15:]))

    def views(self) -> list[int]:
        counts = []
        for node in self.nodes:
            if node.name in self._killed:
                continue
            try:
                reply = call(self.work / node.name / "xavi.sock", "members", timeout=10)
            except CtlError as exc:
                raise BenchError(f"ctl members on {node.name} failed: {exc}") from exc
            members = reply.get("result", {}).get("members", [])
            counts.append(sum(1 for m in members if m.get("state") == "alive"))
        return counts

    def kill(self, index: int) -> None:
        self._killed.add(self.nodes[index].name)
        self.processes[index].send_signal(signal.SIGKILL)
        self.processes[index].wait()

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"warning: agent pid {process.pid} ignored SIGTERM; sending SIGKILL",
                      file=sys.stderr)
                process.kill()
                process.wait()
        for log_file in self._logs:
            log_file.close()


class GoCluster:
    """N Go memberlist peers, each its own process; every one but the seed joins the seed."""

    impl = "go"
    poll_interval = 0.02

    def __init__(self, size: int, namespace: Namespace, work: Path, binary: Path,
                 key_b64: str, schedule: list[float] | None = None) -> None:
        self.size, self.key_b64, self.schedule = size, key_b64, schedule
        self.nodes: list[Node] = []
        self.peers: list[GoPeer] = []
        self._seen: list[int] = []
        self._killed: set[int] = set()
        # GoPeer runs the binary it is given, so this wrapper enters the namespace
        # and execs the peer there. The PID of GoPeer's process is then the peer's.
        self.wrapper = work / "go-peer-in-namespace.sh"
        self.wrapper.write_text("#!/bin/sh\nexec " + " ".join(namespace.command([str(binary)]))
                                + ' "$@"\n')
        self.wrapper.chmod(0o755)
        self.meta_hex = encode_tags({TAG_VERSION: __version__, TAG_SERVICES: ""}).hex()

    def start(self) -> float:
        launched = time.time()
        for index in range(self.size):
            while self.schedule and time.time() < launched + self.schedule[index]:
                self.refresh()
                time.sleep(0.01)
            # The key is a throwaway one of this run; it shows in the peers' command lines.
            started = time.time()
            peer = GoPeer(self.wrapper, name=f"go-{index:02d}", preset="lan", keys=self.key_b64,
                          port=BASE_PORT + index, meta_hex=self.meta_hex)
            self.peers.append(peer)
            self.nodes.append(Node(f"go-{index:02d}", peer.process.pid, started,
                                   started_at=time.time()))
            self._seen.append(0)
            if index:
                peer.request("join", addrs=[f"127.0.0.1:{BASE_PORT}"])
            self.refresh()
        return launched

    def refresh(self) -> None:
        # TODO(bench-mesh): stamp Go events where the peer emits them, because stamping
        # them when read here (every 20 ms) makes Go look up to about 20 ms slower.
        now = time.time()
        for index, peer in enumerate(self.peers):
            events = peer.events[self._seen[index]:]
            self._seen[index] += len(events)
            for event in events:
                if event.get("event") in ("join", "leave"):
                    kind = "join" if event["event"] == "join" else "gone"
                    self.nodes[index].timeline.append((now, kind, str(event["name"])))

    def check_alive(self) -> None:
        for index, peer in enumerate(self.peers):
            if index not in self._killed and peer.process.poll() is not None:
                raise BenchError(f"Go peer {self.nodes[index].name} exited with "
                                 f"{peer.process.returncode}:\n" + "\n".join(peer.logs[-15:]))

    def views(self) -> list[int]:
        return [sum(1 for m in peer.request("members")["members"] or [] if m["state"] == 0)
                for index, peer in enumerate(self.peers) if index not in self._killed]

    def kill(self, index: int) -> None:
        self._killed.add(index)
        self.peers[index].process.send_signal(signal.SIGKILL)
        self.peers[index].process.wait()

    def close(self) -> None:
        for peer in self.peers:
            peer.close()


# Measures --------------------------------------------------------------------


def converged_at(node: Node, names: set[str]) -> float | None:
    """Return when the node's view last became exactly ``names``, or None if it is not now."""
    alive: set[str] = set()
    reached: float | None = None
    for stamp, kind, member in node.timeline:
        if kind == "join":
            alive.add(member)
        else:
            alive.discard(member)
        if alive == names and reached is None:
            reached = stamp
        elif alive != names:
            reached = None
    return reached


def wait_converged(cluster: Cluster) -> tuple[list[float], list[float]]:
    """Wait until every node's view lists all N members.

    Return when each view became complete, and each node's CPU seconds at the
    first poll that found all nodes listening (its start-up cost).
    """
    names = {node.name for node in cluster.nodes}
    start_cpu: list[float] = []
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    while True:
        cluster.refresh()
        if not start_cpu and all(node.started_at for node in cluster.nodes):
            start_cpu = [cpu_ticks(node.pid) / CLOCK_TICKS for node in cluster.nodes]
        times = [converged_at(node, names) for node in cluster.nodes]
        if all(t is not None for t in times):
            return [t for t in times if t is not None], start_cpu
        cluster.check_alive()
        if time.monotonic() > deadline:
            behind = sum(1 for t in times if t is None)
            raise BenchError(f"{behind} of {len(names)} {cluster.impl} nodes still lacked "
                             f"members after {CONVERGE_TIMEOUT:.0f} s")
        time.sleep(cluster.poll_interval)


def wait_detected(cluster: Cluster, victim: str, killed_at: float,
                  dead: set[str]) -> list[float]:
    """Wait until every live node reported ``victim`` gone; return each node's delay."""
    others = [node for node in cluster.nodes if node.name not in dead]
    deadline = time.monotonic() + DETECT_TIMEOUT
    while True:
        cluster.refresh()
        delays = [next((stamp - killed_at for stamp, kind, member in node.timeline
                        if kind == "gone" and member == victim and stamp >= killed_at), None)
                  for node in others]
        if all(d is not None for d in delays):
            return [d for d in delays if d is not None]
        cluster.check_alive()
        if time.monotonic() > deadline:
            behind = sum(1 for d in delays if d is None)
            raise BenchError(f"{behind} {cluster.impl} nodes had not reported {victim} gone "
                             f"{DETECT_TIMEOUT:.0f} s after the kill")
        time.sleep(cluster.poll_interval)


def measure(cluster: Cluster, namespace: Namespace, args: argparse.Namespace,
            formation_only: bool = False) -> dict[str, Any]:
    """Run one cluster through convergence, the steady window and the kills; return the record."""
    launched = cluster.start()
    node_views, start_cpu = wait_converged(cluster)
    converged = max(node_views)
    size = len(cluster.nodes)
    last_start = max(node.started_at for node in cluster.nodes)
    counts = cluster.views()
    record: dict[str, Any] = {
        "converge_s": round(converged - launched, 3),
        "converge_node_median_s": round(statistics.median(node_views) - launched, 3),
        "seed_start_s": round(cluster.nodes[0].started_at - cluster.nodes[0].launched_at, 3),
        "converge_after_start_s": round(converged - last_start, 3),
        "start_spread_s": round(last_start - launched, 3),
        "start_median_s": round(statistics.median(
            node.started_at - node.launched_at for node in cluster.nodes), 3),
        "start_cpu_s": round(statistics.mean(start_cpu), 3),
        "views_complete": sum(1 for c in counts if c == size), "views": len(counts),
    }
    if all(node.main_at for node in cluster.nodes):
        record["imports_median_s"] = round(statistics.median(
            node.main_at - node.launched_at for node in cluster.nodes), 3)
        record["start_offsets_s"] = [round(node.started_at - launched, 3)
                                     for node in cluster.nodes]
    if formation_only:
        return record

    time.sleep(args.settle)
    cluster.check_alive()
    pids = [node.pid for node in cluster.nodes]
    bytes_before, packets_before = namespace.lo_counters()
    ticks_before = [cpu_ticks(pid) for pid in pids]
    window_start = time.monotonic()
    time.sleep(args.window)
    bytes_after, packets_after = namespace.lo_counters()
    ticks_after = [cpu_ticks(pid) for pid in pids]
    elapsed = time.monotonic() - window_start
    cluster.check_alive()
    cpu = [100 * (after - before) / CLOCK_TICKS / elapsed
           for before, after in zip(ticks_before, ticks_after, strict=True)]
    rss = [status_field(pid, "VmRSS") / 1024 for pid in pids]
    private = [private_kib(pid) / 1024 for pid in pids]
    record.update({
        "window_s": round(elapsed, 2),
        "bytes_per_node_s": round((bytes_after - bytes_before) / size / elapsed, 1),
        "packets_per_node_s": round((packets_after - packets_before) / size / elapsed, 2),
        "cpu_percent": round(statistics.mean(cpu), 3), "cpu_percent_max": round(max(cpu), 3),
        "rss_mib": round(statistics.mean(rss), 1), "rss_mib_max": round(max(rss), 1),
        "private_mib": round(statistics.mean(private), 1),
        "threads": round(statistics.mean(status_field(pid, "Threads") for pid in pids), 1),
    })

    # Victims are the last nodes, one at a time, each once all others reported the one before.
    dead: set[str] = set()
    kills = []
    for index in range(size - 1, size - 1 - args.kills, -1):
        victim = cluster.nodes[index].name
        dead.add(victim)
        killed_at = time.time()
        cluster.kill(index)
        delays = wait_detected(cluster, victim, killed_at, dead)
        kills.append({"all_s": round(max(delays), 3), "first_s": round(min(delays), 3),
                      "median_s": round(statistics.median(delays), 3)})
        time.sleep(KILL_PAUSE)
    record.update({"kills": kills,
                   "detect_all_s": round(statistics.median(k["all_s"] for k in kills), 3),
                   "detect_all_max_s": max(k["all_s"] for k in kills),
                   "detect_first_s": round(statistics.median(k["first_s"] for k in kills), 3)})
    return record


# Running ---------------------------------------------------------------------


def python_environment(work: Path) -> dict[str, str]:
    """Return the agents' environment, with a bytecode cache filled before any clock starts.

    An installed agent has its bytecode; this environment sets
    ``PYTHONDONTWRITEBYTECODE``, so without the cache every agent would compile
    Xavi's modules from source at its start.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONPYCACHEPREFIX": str(work / "pyc")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("XAVI_SOCKET", None)
    subprocess.run([sys.executable, "-c", "import xavi.main"], cwd=REPO_ROOT, env=env, check=True)
    return env


def run_cluster(impl: str, size: int, folder: Path, args: argparse.Namespace,
                shared: dict[str, Any], schedule: list[float] | None = None) -> dict[str, Any]:
    """Create a namespace, measure one cluster in it, and remove both; return the record.

    ``impl`` "go-replay" starts Go peers at the offsets of ``schedule`` and
    measures only the formation.
    """
    namespace = Namespace(NAMESPACE)
    folder.mkdir()
    cluster: Cluster
    if impl == "python":
        cluster = PythonCluster(size, namespace, folder, shared["secrets"], shared["env"],
                                args.agent_log_level)
    else:
        cluster = GoCluster(size, namespace, folder, shared["binary"], shared["key"], schedule)
    print(f"{impl} x {size}: starting", file=sys.stderr, flush=True)
    record: dict[str, Any] = {"impl": impl, "size": size,
                              "load_average_1m": round(os.getloadavg()[0], 2)}
    try:
        namespace.create()
        record.update(measure(cluster, namespace, args, formation_only=schedule is not None))
    except (BenchError, GoPeerError) as exc:
        record["error"] = str(exc)
        print(f"{impl} x {size}: failed: {exc}", file=sys.stderr, flush=True)
    finally:
        cluster.close()
        namespace.delete()
    print(f"{impl} x {size}: {json.dumps(record)}", file=sys.stderr, flush=True)
    return record


def machine_facts() -> dict[str, Any]:
    """Return the facts the README's results cite: CPUs, kernel, Python and the Xavi commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "xavi"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=False).stdout.splitlines()
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "xavi_commit": commit,
            "xavi_uncommitted_files": len(dirty)}


def source_digest() -> str:
    """Return a digest of Xavi's Python sources, to notice an edit of the tree during a run."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "xavi").rglob("*.py")):
        digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every cluster of every round; return the result record."""
    binary = build_go_peer()
    digest = source_digest()
    work = Path(tempfile.mkdtemp(prefix="xavi-bench-mesh-"))
    print(f"work folder {work}", file=sys.stderr, flush=True)

    secrets = work / "xavi.secrets"
    ensure_secrets(secrets)
    key = json.loads(secrets.read_text())["cluster_key"]
    base64.b64decode(key, validate=True)
    shared = {"secrets": secrets, "key": key, "binary": binary, "env": python_environment(work)}
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_facts(),
        "command": " ".join(["python", "bench/bench_mesh.py", *sys.argv[1:]]),
        "settings": {"sizes": args.sizes, "rounds": args.rounds, "settle_s": args.settle,
                     "window_s": args.window, "kills": args.kills, "timing": "lan"},
        "clusters": [],
    }

    for round_index in range(args.rounds):
        for size_index, size in enumerate(args.sizes):
            order = ["python", "go"] if (round_index + size_index) % 2 == 0 else ["go", "python"]
            for impl in order:
                result["clusters"].append(
                    run_cluster(impl, size, work / f"{impl}-{size}-{round_index}", args, shared))
            python = result["clusters"][-2 if order[0] == "python" else -1]
            if "start_offsets_s" in python:
                result["clusters"].append(
                    run_cluster("go-replay", size, work / f"go-replay-{size}-{round_index}", args,
                                shared, schedule=python["start_offsets_s"]))

    if source_digest() != digest:
        result["machine"]["xavi_source_changed_during_run"] = True
        print("warning: Xavi's sources changed during the run, so the agents of later "
              "clusters may run other code", file=sys.stderr)
    failed = any("error" in record for record in result["clusters"])
    if failed or args.keep_work_dir:
        print(f"kept the work folder {work} (configs and agent logs)", file=sys.stderr)
    else:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    return result


# Report ----------------------------------------------------------------------


ROWS = [("converge_s", "convergence from launch, s", "go"),
        ("converge_node_median_s", "  one node's view complete, median, s", "go"),
        ("converge_s", "convergence, Go on Python's start times, s", "go-replay"),
        ("converge_node_median_s", "  one node's view complete, median, s", "go-replay"),
        ("converge_after_start_s", "convergence after the last start, s", "go"),
        ("start_spread_s", "launch of the seed to the last start, s", "go"),
        ("seed_start_s", "seed's launch to listening (alone), s", "go"),
        ("start_median_s", "one node's launch to listening, median, s", "go"),
        ("imports_median_s", "  of which interpreter and imports, s", "go"),
        ("start_cpu_s", "CPU per node until all listen, s", "go"),
        ("detect_all_s", "detection, all nodes, median of kills, s", "go"),
        ("detect_all_max_s", "detection, all nodes, slowest kill, s", "go"),
        ("detect_first_s", "detection, first node, median of kills, s", "go"),
        ("bytes_per_node_s", "bytes per node per s", "go"),
        ("packets_per_node_s", "packets per node per s", "go"),
        ("cpu_percent", "CPU per node, % of a core", "go"),
        ("rss_mib", "RSS per node, MiB", "go"),
        ("private_mib", "private memory per node, MiB", "go")]
"""(record key, label, the Go record it is compared with: "go" or "go-replay")."""


def median_of(records: list[dict[str, Any]], impl: str, size: int, key: str) -> float | None:
    values = [r[key] for r in records if r["impl"] == impl and r["size"] == size and key in r]
    return statistics.median(values) if values else None


def print_report(result: dict[str, Any]) -> None:
    """Print one table per size: Python, Go, Python/Go and the goal (medians over rounds)."""
    records = result["clusters"]
    for size in result["settings"]["sizes"]:
        print(f"\nN = {size}, median of {result['settings']['rounds']} round(s)")
        print(f"{'measure':44} {'Python':>10} {'Go':>10} {'Py/Go':>7}  goal")
        for key, label, go_impl in ROWS:
            python = median_of(records, "python", size, key)
            go = median_of(records, go_impl, size, key)
            ratio = python / go if python is not None and go else None
            goal = f"<= {GOALS[key]:g}" if key in GOALS and not label.startswith(" ") else ""
            if key == "rss_mib":
                goal = f"Python <= {GOAL_RSS_MIB:g} MiB"
            print(f"{label:44} {fmt(python):>10} {fmt(go):>10} {fmt(ratio):>7}  {goal}")
        for record in records:
            if record["size"] == size and "error" in record:
                print(f"  {record['impl']} failed: {record['error']}")
            elif record["size"] == size and record["views_complete"] != record["views"]:
                print(f"  {record['impl']}: only {record['views_complete']} of "
                      f"{record['views']} views were complete at the check")


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 100:
        return f"{value:.3g}"
    return f"{value:.0f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,50",
                        help="comma-separated cluster sizes (default: 20,50)")
    parser.add_argument("--rounds", type=int, default=1, help="clusters of each kind per size")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds between convergence and the steady window (default: 10)")
    parser.add_argument("--window", type=float, default=30.0,
                        help="seconds of the steady window for bytes and CPU (default: 30)")
    parser.add_argument("--kills", type=int, default=5,
                        help="nodes killed one after the other for detection (default: 5)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N=10 only, 2 s settle, 10 s window, 2 kills")
    parser.add_argument("--agent-log-level", default="INFO", help="the agents' --log-level")
    parser.add_argument("--json", type=Path, help="write the result record to this file")
    parser.add_argument("--keep-work-dir", action="store_true",
                        help="keep the configs and agent logs after a successful run")
    args = parser.parse_args(argv)
    args.sizes = [10] if args.quick else [int(s) for s in args.sizes.split(",")]
    if args.quick:
        args.settle, args.window = 2.0, 10.0
    if args.quick:
        args.kills = 2
    if any(size < args.kills + 2 for size in args.sizes):
        parser.error(f"every size must be at least --kills + 2 = {args.kills + 2}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON file when asked."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop the nodes and delete the namespace.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    if os.geteuid() != 0:
        print("bench_mesh: error: needs root for ip netns and nsenter", file=sys.stderr)
        return 1
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench_mesh: error: {exc}", file=sys.stderr)
        return 1
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if any("error" in record for record in result["clusters"]) else 0


if __name__ == "__main__":
    sys.exit(main())
