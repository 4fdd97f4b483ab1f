"""Latency of the control socket on a busy agent, and recovery time after an injected crash.

Latency: the round trip of one ``status`` request as ``xavi ctl`` makes it
(connect, one request frame, one response frame, close), timed in this
process against a ``python -m xavi`` agent running the four services. It is
measured in three conditions:

- *idle*: nothing else talks to the agent;
- *flood*: ``--flood-threads`` threads send ``status`` requests back to back;
- *restart loop*: one thread restarts the app and backup-bot containers in
  turn through ``restart`` requests, so ContainerActors stop and start
  containers and Docker events stream in.

The baseline is the same round trip against a bare echo server in a
process of its own (Python, one connection at a time, replying to each frame
with a frame as large as a status response), so the ratios show the cost of
the agent itself: its threads, the asks to every actor and the encoding. Reported: p50 and p99 in
milliseconds and their ratio to the baseline's.

Recovery: for each actor in turn (``--rounds`` times), ``fault crash`` is
injected and the clock runs until ``status`` shows the actor running again
with one more restart and its own status answered. Polling is every 5 ms.
The baseline is the backoff the supervisor waits before that restart
(0.2 s for a first restart, doubling for each restart of the same actor
within 60 s), so a ratio of 1.0 means recovery costs nothing beyond the
backoff. The GossipActor is left out: its restart can fail to bind its port
while the crashed instance still holds it (see LIMITATIONS.md).

Numbers are printed, never asserted. The agent runs with the supervisor's
default timings. The benchmark refuses to start when the engine already has
Xavi containers, and removes the containers it created (label
``org.tripleclabs.xavi.node=bench-control``) when it ends.

Usage: ``python bench/bench_control.py [--requests 500] [--flood-threads 4]
[--rounds 3] [--json FILE]``. Needs a running dockerd (``DOCKER_HOST`` selects
it; a private engine from ``bench/compose/private-engine.sh`` keeps the
benchmark away from other users of the main one) and the ``xavi-local/*``
images.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.process
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from xavi.actors.supervisor import SupervisorSettings
from xavi.ctl import CtlError, call
from xavi.protocol.control_frames import (
    MAX_RESPONSE_BYTES,
    encode_frame,
    read_frame,
)

NODE = "bench-control"
IMAGES = {"postgres": "xavi-local/postgres:15", "valkey": "xavi-local/valkey:8",
          "app": "xavi-local/app:latest", "backupbot": "xavi-local/backupbot:latest"}
CRASH_TARGETS = ["secrets", "config", "discovery", "remote-config", "container:valkey",
                 "container:app", "control"]
POLL = 0.005
START_TIMEOUT = 180.0


def percentile(samples: list[float], fraction: float) -> float:
    """Return the sample at ``fraction`` of the sorted list (nearest rank)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 0.50) * 1000, "p99_ms": percentile(samples, 0.99) * 1000,
            "count": len(samples)}


# The agent ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        return int(udp.getsockname()[1])


def start_agent(work: Path) -> tuple[subprocess.Popen[bytes], Path]:
    config_dir = work / "cfg"
    config_dir.mkdir()
    config = {
        "images": IMAGES,
        "postgres": {"storage_path": str(work / "pgdata"), "port": 35432},
        "valkey": {"port": 36379},
        "cluster": {"node_name": NODE, "bind_port": free_port(), "bind_addr": "127.0.0.1",
                    "advertise_addr": "127.0.0.1"},
    }
    (config_dir / "xavi.json").write_text(json.dumps(config))
    path = work / "run" / "xavi.sock"
    log = (work / "agent.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "xavi", "--config-dir", str(config_dir), "--state-dir",
         str(work / "state"), "--socket", str(path), "--enable-fault-injection"],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    log.close()
    return process, path


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise SystemExit(f"bench_control: timed out after {timeout:g} s waiting for {what}")


def status_of(path: Path) -> dict[str, Any] | None:
    try:
        answer = call(path, "status", timeout=10)
    except CtlError:
        return None
    return answer["result"] if answer["ok"] else None


def stack_healthy(path: Path) -> bool:
    status = status_of(path)
    return bool(status and len(status["services"]) == 4
                and all(s["state"] == "running" and s["health"] == "healthy"
                        for s in status["services"]))


# Latency ------------------------------------------------------------------------


def serve_echo(path: str, reply: bytes, ready: Any) -> None:
    """Reply to each request frame on ``path`` with ``reply``, one connection at a time."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    ready.set()
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                if read_frame(conn, 1 << 16) is not None:
                    conn.sendall(reply)
            except OSError:
                pass


def start_echo(path: Path, reply_bytes: int) -> multiprocessing.process.BaseProcess:
    """Start the echo server in its own process, as the agent runs in its own."""
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    reply = encode_frame({"ok": True, "result": "x" * reply_bytes}, MAX_RESPONSE_BYTES)
    process = context.Process(target=serve_echo, args=(str(path), reply, ready), daemon=True)
    process.start()
    if not ready.wait(10):
        raise SystemExit("bench_control: the echo server did not start")
    return process


WARMUP = 50
"""Untimed requests before each condition, so that no condition pays for a cold start."""


def time_requests(path: Path, count: int, cmd: str = "status") -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        answer = call(path, cmd, timeout=30)
        samples.append(time.perf_counter() - started)
        if not answer["ok"]:
            raise SystemExit(f"bench_control: {cmd} failed: {answer['error']}")
    return samples


def with_background(work: Callable[[threading.Event], None], threads: int,
                    measure: Callable[[], list[float]]) -> tuple[list[float], int]:
    """Run ``measure`` while ``threads`` threads run ``work``; return samples and a count."""
    stop = threading.Event()
    counter = [0]

    def loop() -> None:
        while not stop.is_set():
            work(stop)
            counter[0] += 1

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        samples = measure()
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=120)
    return samples, counter[0]


# Recovery -------------------------------------------------------------------------


def recover_once(path: Path, target: str) -> float:
    """Inject a crash into ``target``; return seconds until it serves again."""
    before = next(a for a in (status_of(path) or {})["actors"] if a["name"] == target)
    answer = call(path, "fault", {"kind": "crash", "actor": target}, timeout=10)
    started = time.perf_counter()
    if not answer["ok"]:
        raise SystemExit(f"bench_control: fault crash {target} failed: {answer['error']}")
    while True:
        status = status_of(path)
        row = next((a for a in status["actors"] if a["name"] == target), None) if status else None
        if row and row["restarts"] == before["restarts"] + 1 and row["state"] == "running" \
                and row["status"] is not None:
            return time.perf_counter() - started
        if time.perf_counter() - started > 30:
            raise SystemExit(f"bench_control: {target} did not recover within 30 s")
        time.sleep(POLL)


def measure_recovery(path: Path, rounds: int) -> list[dict[str, Any]]:
    settings = SupervisorSettings()
    results = []
    for round_index in range(rounds):
        for target in CRASH_TARGETS:
            seconds = recover_once(path, target)
            backoff = min(settings.backoff_base * 2 ** round_index, settings.backoff_max)
            results.append({"target": target, "round": round_index + 1, "seconds": seconds,
                            "backoff_s": backoff, "ratio": seconds / backoff})
    return results


# Main -------------------------------------------------------------------------------


def cleanup(client: docker.DockerClient) -> None:
    for container in client.containers.list(
            all=True, filters={"label": f"org.tripleclabs.xavi.node={NODE}"}):
        container.remove(force=True)


def measure_latency(path: Path, work: Path, requests: int,
                    flood_threads: int) -> dict[str, Any]:
    """Time ``status`` round trips against the echo baseline and the agent in three conditions."""
    results: dict[str, Any] = {}
    status_size = len(encode_frame({"ok": True, "result": status_of(path)}, MAX_RESPONSE_BYTES))
    results["status_frame_bytes"] = status_size

    echo_path = work / "echo.sock"
    echo = start_echo(echo_path, status_size)
    try:
        time_requests(echo_path, WARMUP)
        results["baseline"] = summary(time_requests(echo_path, requests))
    finally:
        echo.terminate()
        echo.join(timeout=10)

    time_requests(path, WARMUP)
    results["idle"] = summary(time_requests(path, requests))

    samples, flood = with_background(lambda _stop: time_requests(path, 1), flood_threads,
                                     lambda: time_requests(path, requests))
    results["flood"] = {**summary(samples), "background_requests": flood}

    services = iter(["app", "backupbot"] * 10_000)
    samples, restarts = with_background(
        lambda _stop: call(path, "restart", {"service": next(services)}, timeout=90),
        1, lambda: time_requests(path, requests))
    results["restart_loop"] = {**summary(samples), "container_restarts": restarts}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500,
                        help="status requests timed in each condition (default 500)")
    parser.add_argument("--flood-threads", type=int, default=4,
                        help="threads sending status requests in the flood condition")
    parser.add_argument("--rounds", type=int, default=3,
                        help="crashes injected into each actor (at most 4, default 3)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    options = parser.parse_args()
    if not 1 <= options.rounds <= 4:
        parser.error("--rounds must be 1 to 4: a 6th restart within 60 s escalates")

    client = docker.from_env()
    existing = client.containers.list(all=True, filters={"label": "org.tripleclabs.xavi.managed"})
    if existing:
        raise SystemExit("bench_control: the engine already has Xavi containers "
                         f"({', '.join(c.name for c in existing)}); use a private engine "
                         "(bench/compose/private-engine.sh) or remove them")

    results: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                               "requests": options.requests,
                               "flood_threads": options.flood_threads}
    with tempfile.TemporaryDirectory(prefix="xavi-bench-control-") as tmp:
        work = Path(tmp)
        process, path = start_agent(work)
        try:
            wait_for(lambda: stack_healthy(path), START_TIMEOUT, "the stack to be healthy")
            results.update(measure_latency(path, work, options.requests, options.flood_threads))
            results["recovery"] = measure_recovery(path, options.rounds)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            cleanup(client)

    report(results)
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    return 0


def report(results: dict[str, Any]) -> None:
    base = results["baseline"]
    print(f"status response frame: {results['status_frame_bytes']} bytes; "
          f"python {results['python']}, {results['cpus']} CPUs")
    print(f"{'condition':<14}{'p50 ms':>9}{'p99 ms':>9}{'p50/base':>10}{'p99/base':>10}")
    for name in ("baseline", "idle", "flood", "restart_loop"):
        row = results[name]
        print(f"{name:<14}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}"
              f"{row['p50_ms'] / base['p50_ms']:>10.1f}{row['p99_ms'] / base['p99_ms']:>10.1f}")
    print(f"flood: {results['flood']['background_requests']} background requests; restart loop: "
          f"{results['restart_loop']['container_restarts']} container restarts")
    recovery = results["recovery"]
    ratios = [r["ratio"] for r in recovery]
    print(f"\nrecovery after an injected crash ({len(recovery)} crashes): "
          f"median ratio to backoff {statistics.median(ratios):.2f}, max {max(ratios):.2f}")
    print(f"{'actor':<20}{'round':>6}{'seconds':>9}{'backoff':>9}{'ratio':>7}")
    for row in recovery:
        print(f"{row['target']:<20}{row['round']:>6}{row['seconds']:>9.3f}"
              f"{row['backoff_s']:>9.2f}{row['ratio']:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
