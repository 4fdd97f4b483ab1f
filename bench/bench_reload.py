"""Time from a saved ``xavi.json`` to the change applied, the agent's share apart from Docker's.

Each round saves a new ``xavi.json`` the way deployment tools do (write a
temporary file in the config directory, then ``os.replace`` it over the
config) and stamps ``t0`` just before the rename. The benchmark then polls
``docker inspect`` through the SDK every 5 ms until the change shows:

- limit change (agent running Valkey only): ``HostConfig.Memory`` equals the
  new ``valkey.max_ram``;
- image change (agent running the app only): ``xavi-app`` is a new container
  of the new image tag and is running. The two tags name the same local
  stand-in image (``xavi-local/app:latest`` tagged twice), so only the tag
  and therefore the spec hash differ.

``total = t_seen - t0``. Docker's share is the ``docker_ms`` field of the
agent's ``limits_updated`` or ``container_replaced`` log line, which times
the adapter's Docker calls of the apply step. ``agent share = total -
docker_ms``. It includes the watcher's 50 ms debounce, the inspects that
reconcile runs before the timed calls, and up to one poll interval of this
benchmark's own observation delay. The share is split with the log's
timestamps (millisecond resolution) into watch (``t0`` to ``config_loaded``),
dispatch (``config_loaded`` to the start of the timed Docker calls) and
observe (the log line to the poll that saw the change). Observe is negative
for limits, because Docker 20.10 shows the new ``HostConfig.Memory`` in
inspect before it writes the cgroup and before the update call returns. So
the report also gives "total, cgroup" (the container's ``memory.limit_in_bytes``
file read every 0.5 ms after inspect showed the change) and "agent to call"
(watch + dispatch, the agent's time until its Docker call). The goal is an
agent share of at most 200 ms, and the report gives share/goal for both.

Each round also times the raw primitive on containers of the benchmark's own
on the same engine, in alternating order with the agent's change:
``update_container(mem_limit=...)`` for limits, and create, stop, remove,
rename and start through the low-level SDK for images. That is Docker's own
cost without the agent.

By default the run uses a private dockerd in its own network namespace
(``bench/compose/private-engine.sh``, through ``stack_engine.private_engine``),
so it never meets the ``xavi-*`` containers of tests on the main engine.
Numbers are reported, never asserted.

Usage: ``python bench/bench_reload.py [--rounds 20] [--quick] [--json FILE]
[--agent-log-level DEBUG] [--docker-host URL] [--keep-work-dir]``. Needs root
(for the private engine), a running main dockerd with the ``xavi-local/*``
images (``scripts/build-images.sh``).

TODO(bench-reload): split log parsing and the round loops into modules of
their own, because this file is past the 400-line guide and was the only file
in scope when it was written.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench" / "compose")]

from stack_engine import BenchError, private_engine, stop_process, tail_file

NODE_NAME = "xavi-bench-reload"
"""Xavi's node label on the benchmark's containers, which marks them as this benchmark's."""
VALKEY_IMAGE = "xavi-local/valkey:8"
APP_SOURCE_IMAGE = "xavi-local/app:latest"
APP_REPOSITORY = "xavi-bench-reload/app"
APP_TAGS = ("a", "b")
RAW_PREFIX = "xavibench-reload-raw"
"""Name prefix of the containers and network of the raw-primitive rounds."""
BASE_MEMORY_MIB = 64
VALKEY_PORT = 26390
POLL_INTERVAL = 0.005
APPLY_TIMEOUT = 30.0
"""Seconds one change may take to show before the run fails."""
START_TIMEOUT = 120.0
ROUND_PAUSE = 0.3
"""Seconds of quiet between rounds, so no round starts inside the previous debounce."""
GOAL_AGENT_MS = 200.0
FAILURE_EVENTS = ("config_rejected", "reconcile_failed", "config_watch_failed")

LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\S+) (?P<level>[A-Z]+)\s+(?P<event>\w+)(?P<rest>.*)$")
LOG_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass
class LogEvent:
    """One parsed line of the agent's text log."""

    index: int
    time: float
    """Seconds since the epoch; the log prints milliseconds, truncated."""
    level: str
    name: str
    fields: dict[str, str] = field(default_factory=dict)


def read_log(path: Path) -> list[LogEvent]:
    """Parse the agent's text log; lines of another shape (tracebacks) are skipped."""
    events = []
    for index, line in enumerate(path.read_text(errors="replace").splitlines()):
        match = LOG_LINE.match(line)
        if match is None:
            continue
        fields = {k: v[1:-1] if v.startswith('"') else v
                  for k, v in LOG_FIELD.findall(match["rest"])}
        stamp = datetime.fromisoformat(match["time"]).timestamp()
        events.append(LogEvent(index, stamp, match["level"], match["event"], fields))
    return events


def wait_for_event(agent: Agent, matches: Callable[[LogEvent], bool], description: str) -> tuple[
        LogEvent, list[LogEvent]]:
    """Wait until the agent logs an event that ``matches``; return it and the whole log."""
    deadline = time.monotonic() + APPLY_TIMEOUT
    while True:
        events = read_log(agent.log_path)
        failures = [e for e in events if e.name in FAILURE_EVENTS]
        if failures:
            raise BenchError(f"the agent logged {failures[0].name} {failures[0].fields}; "
                             f"log {agent.log_path}")
        found = next((e for e in events if matches(e)), None)
        if found is not None:
            return found, events
        if agent.process.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"no {description} in the agent's log; log {agent.log_path}:\n"
                             f"{tail_file(agent.log_path)}")
        time.sleep(0.02)


# The agent --------------------------------------------------------------------


@dataclass
class Agent:
    """An agent process (``python -m xavi``) and its config and log files."""

    process: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now (for the agent's gossip bind)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_config(service: str, image: str, max_ram: str, gossip_port: int) -> dict[str, Any]:
    """Return an ``xavi.json`` object that runs one service on the private engine."""
    section: dict[str, Any] = {"max_ram": max_ram}
    if service == "valkey":
        section["port"] = VALKEY_PORT
    else:
        section["env"] = {"XAVI_STANDIN_INTERVAL": "3600"}
    return {
        "images": {service: image},
        "cluster": {"node_name": NODE_NAME, "bind_addr": "127.0.0.1",
                    "advertise_addr": "127.0.0.1", "bind_port": gossip_port},
        "services": [service],
        service: section,
    }


def save_config(path: Path, config: dict[str, Any]) -> float:
    """Save ``config`` as deployment tools do (temporary file, then rename); return ``t0``.

    ``t0`` is the wall clock just before the rename. The temporary name is one
    the agent's watcher ignores.
    """
    temporary = path.with_name(".xavi.json.bench-tmp")
    temporary.write_text(json.dumps(config, indent=2) + "\n")
    t0 = time.time()
    os.replace(temporary, path)
    return t0


@contextlib.contextmanager
def running_agent(work: Path, docker_host: str, log_level: str, service: str,
                  image: str) -> Iterator[tuple[Agent, Callable[[str, str], float]]]:
    """Start an agent managing ``service``; yield it and ``save(image, max_ram) -> t0``."""
    config_dir, state_dir = work / "config", work / "state"
    config_dir.mkdir(parents=True)
    config_path = config_dir / "xavi.json"
    gossip_port = free_port()
    save_config(config_path, make_config(service, image, f"{BASE_MEMORY_MIB}m", gossip_port))
    log_path = work / f"xavi-{service}.log"
    # A control socket of its own, so the agent starts beside any other agent of the host.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "XAVI_SOCKET": str(work / "xavi.sock")}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "xavi", "--config-dir", str(config_dir), "--state-dir",
             str(state_dir), "--docker-host", docker_host, "--log-level", log_level],
            cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    agent = Agent(process, config_path, log_path)

    def save(new_image: str, max_ram: str) -> float:
        return save_config(config_path, make_config(service, new_image, max_ram, gossip_port))

    try:
        yield agent, save
    finally:
        stop_process(process)


def wait_running(client: docker.DockerClient, name: str, agent: Agent) -> dict[str, Any]:
    """Wait until container ``name`` runs and carries the benchmark's node label."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if agent.process.poll() is not None:
            raise BenchError(f"the agent exited with code {agent.process.returncode}; log "
                             f"{agent.log_path}:\n{tail_file(agent.log_path)}")
        with contextlib.suppress(docker.errors.NotFound):
            attrs = client.api.inspect_container(name)
            labels = attrs["Config"]["Labels"] or {}
            if labels.get("org.tripleclabs.xavi.node") != NODE_NAME:
                raise BenchError(f"container {name} was not created by this benchmark; run it "
                                 "on a private engine (the default) or remove that container")
            if attrs["State"]["Running"]:
                return attrs
        time.sleep(0.05)
    raise BenchError(f"{name} was not running after {START_TIMEOUT:.0f} s; log {agent.log_path}")


def poll_until(client: docker.DockerClient, name: str,
               done: Callable[[dict[str, Any]], bool]) -> tuple[float, int, dict[str, Any]]:
    """Inspect ``name`` every POLL_INTERVAL until ``done``; return the wall time, polls, state."""
    deadline = time.monotonic() + APPLY_TIMEOUT
    polls = 0
    while time.monotonic() < deadline:
        polls += 1
        with contextlib.suppress(docker.errors.NotFound):
            attrs = client.api.inspect_container(name)
            if done(attrs):
                return time.time(), polls, attrs
        time.sleep(POLL_INTERVAL)
    raise BenchError(f"the change to {name} did not show within {APPLY_TIMEOUT:.0f} s")


def memory_limit_file(pid: int) -> Path | None:
    """Return the cgroup file that contains the memory limit of process ``pid``, if found."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            return Path(f"/sys/fs/cgroup{path}/memory.max")
    return None


def wait_cgroup(limit_file: Path, memory: int) -> float:
    """Read ``limit_file`` until it contains ``memory``; return the wall time it did."""
    deadline = time.monotonic() + APPLY_TIMEOUT
    while time.monotonic() < deadline:
        if limit_file.read_text().strip() == str(memory):
            return time.time()
        time.sleep(0.0005)
    raise BenchError(f"{limit_file} did not show {memory} within {APPLY_TIMEOUT:.0f} s")


def split_share(t0: float, seen: float, loaded: LogEvent, applied: LogEvent) -> dict[str, float]:
    """Return the round's timings in ms: total, Docker's and the agent's share and its parts.

    TODO(bench-reload): split dispatch into the bus hop, the secret-file writes
    and the two inspects, because the agent logs no line between
    ``config_loaded`` and the timed Docker call, even at DEBUG.
    """
    docker_ms = float(applied.fields["docker_ms"])
    docker_started = applied.time - docker_ms / 1000
    total_ms = (seen - t0) * 1000
    return {
        "total_ms": round(total_ms, 1),
        "docker_ms": docker_ms,
        "agent_ms": round(total_ms - docker_ms, 1),
        "watch_ms": round((loaded.time - t0) * 1000, 1),
        "dispatch_ms": round((docker_started - loaded.time) * 1000, 1),
        "before_docker_ms": round((docker_started - t0) * 1000, 1),
        "observe_ms": round((seen - applied.time) * 1000, 1),
    }


def last_before(events: list[LogEvent], name: str, index: int) -> LogEvent:
    """Return the last event called ``name`` logged before line ``index``."""
    found = [e for e in events if e.name == name and e.index < index]
    if not found:
        raise BenchError(f"no {name} line before line {index + 1} of the agent's log")
    return found[-1]


def measure_agent_change(client: docker.DockerClient, agent: Agent, t0: float, container: str,
                         shown: Callable[[dict[str, Any]], bool],
                         logged: Callable[[dict[str, Any], LogEvent], bool],
                         in_force: Callable[[], float] | None = None,
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time one saved change: poll until ``shown``, then find the agent's apply line.

    ``logged(state, event)`` picks the apply line for the container state that
    showed the change. ``in_force``, called at once after that, waits for the
    change to take effect and returns the wall time it did. Return the round's
    timings and that state.
    """
    seen, polls, attrs = poll_until(client, container, shown)
    timings: dict[str, Any] = {"polls": polls}
    if in_force is not None:
        timings["in_force_ms"] = round((in_force() - t0) * 1000, 1)
    applied, events = wait_for_event(agent, lambda event: logged(attrs, event),
                                     f"apply line for {container}")
    loaded = last_before(events, "config_loaded", applied.index)
    return {**split_share(t0, seen, loaded, applied), **timings}, attrs


# Limit change -------------------------------------------------------------------


def raw_update_ms(client: docker.DockerClient, container_id: str, memory: int) -> float:
    """Time one ``docker update --memory --memory-swap`` through the SDK, in ms."""
    started = time.perf_counter()
    client.api.update_container(container_id, mem_limit=memory, memswap_limit=memory)
    return (time.perf_counter() - started) * 1000


def reconcile_inspects_ms(client: docker.DockerClient, name: str) -> float:
    """Time the two inspects reconcile makes before a Docker change (``-next``, then ``name``)."""
    started = time.perf_counter()
    with contextlib.suppress(docker.errors.NotFound):
        client.api.inspect_container(f"{name}-next")
    client.api.inspect_container(name)
    return (time.perf_counter() - started) * 1000


def run_limit_rounds(client: docker.DockerClient, work: Path, docker_host: str,
                     args: argparse.Namespace) -> list[dict[str, Any]]:
    """Change ``valkey.max_ram`` once per round; time the agent and the raw update."""
    base = f"{BASE_MEMORY_MIB}m"
    raw = client.api.create_container(
        VALKEY_IMAGE, command=["--save", ""], name=f"{RAW_PREFIX}-valkey",
        host_config=client.api.create_host_config(mem_limit=base, memswap_limit=base),
    )["Id"]
    records: list[dict[str, Any]] = []
    try:
        client.api.start(raw)
        run_limit_agent(client, work, docker_host, args, raw, records)
    finally:
        client.api.remove_container(raw, force=True)
    return records


def run_limit_agent(client: docker.DockerClient, work: Path, docker_host: str,
                    args: argparse.Namespace, raw: str, records: list[dict[str, Any]]) -> None:
    """Start the agent on Valkey and run the limit rounds into ``records``."""
    with running_agent(work, docker_host, args.agent_log_level, "valkey",
                       VALKEY_IMAGE) as (agent, save):
        attrs = wait_running(client, "xavi-valkey", agent)
        limit_file = memory_limit_file(attrs["State"]["Pid"])
        time.sleep(1.0)  # Let the start-up reconciles finish before the first round.
        for index in range(args.rounds):
            mebibytes = BASE_MEMORY_MIB + index + 1
            memory = mebibytes * 2**20
            record: dict[str, Any] = {"round": index + 1, "memory_bytes": memory}
            if index % 2:
                record["raw_ms"] = round(raw_update_ms(client, raw, memory), 2)

            def shown(state: dict[str, Any], expected: int = memory) -> bool:
                return bool(state["HostConfig"]["Memory"] == expected)

            def logged(_state: dict[str, Any], event: LogEvent,
                       expected: str = str(memory)) -> bool:
                return event.name == "limits_updated" and \
                    event.fields.get("memory_bytes") == expected

            in_force = None
            if limit_file is not None:
                in_force = functools.partial(wait_cgroup, limit_file, memory)
            t0 = save(VALKEY_IMAGE, f"{mebibytes}m")
            timings, _state = measure_agent_change(client, agent, t0, "xavi-valkey", shown,
                                                   logged, in_force)
            record.update(timings)
            if not index % 2:
                record["raw_ms"] = round(raw_update_ms(client, raw, memory), 2)
            record["inspects_ms"] = round(reconcile_inspects_ms(client, "xavi-valkey"), 2)
            records.append(record)
            print(f"limit round {index + 1}: {record}", file=sys.stderr, flush=True)
            time.sleep(ROUND_PAUSE)


# Image change -------------------------------------------------------------------


def raw_replace_ms(client: docker.DockerClient, old_id: str, image: str, network: str) -> tuple[
        float, str]:
    """Time create, stop, remove, rename and start through the SDK; return ms and the new ID."""
    api = client.api
    name = f"{RAW_PREFIX}-app"
    memory = f"{BASE_MEMORY_MIB}m"
    started = time.perf_counter()
    new_id = api.create_container(
        image, name=f"{name}-next", environment={"XAVI_STANDIN_INTERVAL": "3600"},
        host_config=api.create_host_config(mem_limit=memory, memswap_limit=memory,
                                           network_mode=network,
                                           restart_policy={"Name": "no"}),
    )["Id"]
    api.stop(old_id, timeout=10)
    api.remove_container(old_id, force=True)
    api.rename(new_id, name)
    api.start(new_id)
    return (time.perf_counter() - started) * 1000, new_id


def run_image_rounds(client: docker.DockerClient, work: Path, docker_host: str,
                     args: argparse.Namespace) -> list[dict[str, Any]]:
    """Swap ``images.app`` between two tags once per round; time the agent and the raw swap."""
    for tag in APP_TAGS:
        client.api.tag(APP_SOURCE_IMAGE, APP_REPOSITORY, tag)
    network = f"{RAW_PREFIX}-net"
    client.api.create_network(network, driver="bridge")
    first = f"{APP_REPOSITORY}:{APP_TAGS[0]}"
    raw = client.api.create_container(
        first, name=f"{RAW_PREFIX}-app", environment={"XAVI_STANDIN_INTERVAL": "3600"},
        host_config=client.api.create_host_config(network_mode=network),
    )["Id"]
    records: list[dict[str, Any]] = []
    try:
        client.api.start(raw)
        with running_agent(work, docker_host, args.agent_log_level, "app",
                           first) as (agent, save):
            old_id = wait_running(client, "xavi-app", agent)["Id"]
            time.sleep(1.0)
            for index in range(args.rounds):
                image = f"{APP_REPOSITORY}:{APP_TAGS[(index + 1) % 2]}"
                record: dict[str, Any] = {"round": index + 1, "image": image}
                if index % 2:
                    record["raw_ms"], raw = raw_replace_ms(client, raw, image, network)

                def shown(state: dict[str, Any], previous: str = old_id,
                          expected: str = image) -> bool:
                    return bool(state["Id"] != previous and state["State"]["Running"]
                                and state["Config"]["Image"] == expected)

                def logged(state: dict[str, Any], event: LogEvent) -> bool:
                    return event.name == "container_replaced" and \
                        event.fields.get("new") == state["Id"][:12]

                t0 = save(image, f"{BASE_MEMORY_MIB}m")
                timings, state = measure_agent_change(client, agent, t0, "xavi-app", shown,
                                                      logged)
                record.update(timings)
                if not index % 2:
                    record["raw_ms"], raw = raw_replace_ms(client, raw, image, network)
                record["raw_ms"] = round(record["raw_ms"], 1)
                old_id = state["Id"]
                records.append(record)
                print(f"image round {index + 1}: {record}", file=sys.stderr, flush=True)
                time.sleep(ROUND_PAUSE)
    finally:
        client.api.remove_container(raw, force=True)
        client.api.remove_network(network)
        for tag in APP_TAGS:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(f"{APP_REPOSITORY}:{tag}", noprune=True)
    return records


# Reporting ----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank percentile ``q`` (0-100); for 3 values p95 is the maximum."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


METRICS = (
    ("total_ms", "total"),
    ("in_force_ms", "total, cgroup"),
    ("agent_ms", "agent share"),
    ("docker_ms", "Docker share"),
    ("raw_ms", "raw primitive"),
    ("watch_ms", "  watch"),
    ("dispatch_ms", "  dispatch"),
    ("inspects_ms", "    2 inspects"),
    ("observe_ms", "  observe"),
    ("before_docker_ms", "agent to call"),
)
"""(record key, table label). A key that no record has (cgroup of an image change) prints "-"."""


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Return p50, p95 and max of each metric and the agent share's ratio to the goal."""
    summary: dict[str, Any] = {}
    for key, _label in METRICS:
        values = [r[key] for r in records if key in r]
        if values:
            summary[key] = {"p50": round(statistics.median(values), 1),
                            "p95": round(percentile(values, 95), 1), "max": max(values)}
    for key in ("agent_ms", "before_docker_ms"):
        summary[f"{key[:-3]}_ratio_to_goal"] = {
            q: round(summary[key][q] / GOAL_AGENT_MS, 3) for q in ("p50", "p95")}
    summary["polls_median"] = statistics.median(r["polls"] for r in records)
    return summary


def print_report(result: dict[str, Any]) -> None:
    """Print the table of both kinds of change."""
    summaries = (result["limit_change"]["summary"], result["image_change"]["summary"])
    print(f"Reload of a saved xavi.json, {result['settings']['rounds']} round(s) each, "
          "milliseconds p50 / p95")
    print(f"{'':<17}{'limit change':>20}{'image change':>20}")
    for key, label in METRICS:
        cells = [f"{s[key]['p50']:.1f} / {s[key]['p95']:.1f}" if key in s else "-"
                 for s in summaries]
        print(f"{label:<17}{cells[0]:>20}{cells[1]:>20}")
    for key, label in (("agent_ratio_to_goal", "agent / 200 ms"),
                       ("before_docker_ratio_to_goal", "to call / 200 ms")):
        cells = [f"{s[key]['p50']:.2f} / {s[key]['p95']:.2f}" for s in summaries]
        print(f"{label:<17}{cells[0]:>20}{cells[1]:>20}   goal <= 1.0")
    worst = [s["agent_ms"]["max"] for s in summaries]
    print(f"{'agent share max':<17}{worst[0]:>20.1f}{worst[1]:>20.1f}")
    print("agent share = total - docker_ms, debounce included; watch + dispatch + observe = "
          "agent share (log times, +-1 ms).\nagent to call = watch + dispatch: from the rename "
          "to the start of the agent's Docker call.")


def load_average() -> float:
    """Return the machine's 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_facts(client: docker.DockerClient, docker_host: str) -> dict[str, Any]:
    """Return the facts that make a recorded number comparable."""
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "docker_engine": client.version()["Version"],
            "docker_host": docker_host}


# Command line -------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; ``--quick`` sets 3 rounds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20,
                        help="rounds of each kind of change (default 20)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 rounds")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers here")
    parser.add_argument("--agent-log-level", default="INFO",
                        choices=["DEBUG", "INFO"], help="the agent's --log-level (default INFO)")
    parser.add_argument("--docker-host", metavar="URL",
                        help="use this engine instead of starting a private one; it must not "
                             "run xavi-valkey or xavi-app of anyone else")
    parser.add_argument("--keep-work-dir", action="store_true",
                        help="keep the temporary configs and the agent's logs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 3
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def run(args: argparse.Namespace, docker_host: str) -> dict[str, Any]:
    """Run both kinds of rounds on the engine at ``docker_host``; return the result record."""
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=60)
        client.ping()
    except docker.errors.DockerException as exc:
        raise BenchError(f"the Docker Engine at {docker_host} cannot be reached: {exc}") from exc
    for name in ("xavi-valkey", "xavi-app"):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.inspect_container(name)
            raise BenchError(f"container {name} already exists on {docker_host}; use an engine "
                             "without it (the default private engine has none)")
    root = Path(tempfile.mkdtemp(prefix="xavi-bench-reload-"))
    print(f"work folder {root}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_facts(client, docker_host),
        "settings": {"rounds": args.rounds, "poll_interval_s": POLL_INTERVAL,
                     "agent_log_level": args.agent_log_level, "goal_agent_ms": GOAL_AGENT_MS},
        "load_average_1m": {"start": load_average()},
    }
    finished = False
    try:
        limit = run_limit_rounds(client, root / "limit", docker_host, args)
        result["limit_change"] = {"summary": summarise(limit), "rounds": limit}
        image = run_image_rounds(client, root / "image", docker_host, args)
        result["image_change"] = {"summary": summarise(image), "rounds": image}
        result["load_average_1m"]["end"] = load_average()
        finished = True
    finally:
        # Only the agent's containers of this run: wait_running checked their node label.
        for name in ("xavi-valkey", "xavi-app", "xavi-app-next"):
            with contextlib.suppress(docker.errors.NotFound):
                labels = client.api.inspect_container(name)["Config"]["Labels"] or {}
                if labels.get("org.tripleclabs.xavi.node") == NODE_NAME:
                    client.api.remove_container(name, force=True)
        client.close()
        if finished and not args.keep_work_dir:
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
        else:
            print(f"kept the work folder {root} (configs, agent logs)", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON file when asked."""
    args = parse_args(argv)
    try:
        if args.docker_host:
            result = run(args, args.docker_host)
        else:
            with private_engine() as docker_host:
                result = run(args, docker_host)
    except BenchError as exc:
        print(f"bench_reload: error: {exc}", file=sys.stderr)
        return 1
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
