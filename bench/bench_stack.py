"""Benchmark Xavi's cold start against ``docker-compose up -d``, and the idle agent's cost.

Cold start: the four images are present locally, and no container, data
volume or network of the stack exists. The benchmark measures the wall time
from launching ``python -m xavi`` (or ``docker-compose -p xavibench up -d``
with ``bench/compose/docker-compose.yml``) until all four containers run, and
until Postgres and Valkey also report healthy. It polls ``docker inspect``
through the Docker SDK every 50 ms. Rounds alternate which contender goes
first; the report gives medians and the ratio Xavi/compose (goal: at most 1.0
for "running and healthy"). It also gives each launched process's CPU time,
which depends far less than wall time on other load on the machine.

Idle cost: a second agent, started on the stack that a first agent created,
adopts the four containers. From then on its resident memory (``VmRSS`` of the
agent and its child processes, sampled every second) and CPU time
(``utime + stime`` from ``/proc/PID/stat``) are measured for
``--idle-seconds``. The goals are a max RSS of 60 MiB and an average of 1 % of
one core; the report gives value/goal.

Numbers are reported, never asserted. Cleanup removes only the benchmark's
own Docker objects (see ``bench/compose/stack_engine.py``) before and after
every start, and every process the benchmark starts is stopped by its PID.

Usage: ``python bench/bench_stack.py [--rounds 3] [--idle-seconds 60] [--quick]
[--json FILE] [--private-engine]``. Needs root for ``--private-engine``, a
running dockerd, the ``xavi-local/*`` images (``scripts/build-images.sh``) and
``docker-compose`` 1.29. ``DOCKER_HOST`` selects the engine for both contenders.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench" / "compose")]

from stack_engine import (
    IMAGES,
    LIMITS,
    NODE_NAME,
    POLL_INTERVAL,
    SERVICES,
    START_TIMEOUT,
    BenchError,
    StartResult,
    check_images,
    cleanup,
    private_engine,
    run_compose_cold,
    stop_process,
    tail_file,
    wait_for_stack,
)

XAVI_PORTS = {"postgres": 25432, "valkey": 26379}
GOSSIP_PORT = 27946
GOAL_RSS_MIB = 60.0
GOAL_CPU_PERCENT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# Xavi -----------------------------------------------------------------------


def write_xavi_config(config_dir: Path) -> None:
    """Write an ``xavi.json`` with the local images, loopback ports and the shared limits."""
    config: dict[str, Any] = {
        "images": dict(IMAGES),
        "cluster": {"node_name": NODE_NAME, "bind_addr": "127.0.0.1",
                    "advertise_addr": "127.0.0.1", "bind_port": GOSSIP_PORT},
        "services": list(SERVICES),
    }
    for service, (memory, cpus) in LIMITS.items():
        config[service] = {"max_ram": memory, "max_cpu": cpus}
    for service, port in XAVI_PORTS.items():
        config[service]["port"] = port
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "xavi.json").write_text(json.dumps(config, indent=2) + "\n")


def xavi_environment(work: Path, bytecode_dir: Path | None) -> dict[str, str]:
    """Return the agent's environment, with its control socket under ``work``.

    With a socket path of its own, another agent listening on the default path
    cannot make this one exit. With ``bytecode_dir``, Python reads and writes cached
    bytecode there, as an installed package has it, even where
    ``PYTHONDONTWRITEBYTECODE`` is set.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "XAVI_SOCKET": str(work / "xavi.sock")}
    if bytecode_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_dir)
    return env


def compile_xavi(bytecode_dir: Path) -> None:
    """Fill ``bytecode_dir`` by importing the agent once, before any clock starts."""
    env = xavi_environment(bytecode_dir, bytecode_dir)
    subprocess.run([sys.executable, "-c", "import xavi.main"], cwd=REPO_ROOT, env=env,
                   check=True)


def start_xavi(work: Path, log_name: str,
               bytecode_dir: Path | None) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``python -m xavi`` on the config under ``work``; return it and its log path."""
    log_path = work / log_name
    env = xavi_environment(work, bytecode_dir)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "xavi", "--config-dir", str(work / "config"),
             "--state-dir", str(work / "state")],
            cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    return process, log_path


def run_xavi_cold(client: docker.DockerClient, work: Path,
                  bytecode_dir: Path | None) -> tuple[StartResult, float]:
    """Cold-start the stack with Xavi; return the timings and the agent's stop time.

    The clock starts before the interpreter does, so Python's start-up and
    imports count, as docker-compose's do.
    """
    write_xavi_config(work / "config")
    names = {service: f"xavi-{service}" for service in SERVICES}
    started = time.monotonic()
    process, log_path = start_xavi(work, "xavi-cold.log", bytecode_dir)
    try:
        result = wait_for_stack(client, names, started, process, log_path, may_exit=False)
        result.client_cpu_s = round(cpu_seconds(process.pid), 3)
    finally:
        stop_s = stop_process(process)
    return result, stop_s


# Idle cost ------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def memory_kib(pids: list[int], field: str = "VmRSS") -> int:
    """Return the sum of a ``/proc/PID/status`` memory field (kB) over ``pids``."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """Return the CPU time of ``pid``, its live descendants and its reaped children."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command come state and ppid, so utime, stime, cutime and
        # cstime (fields 14-17 of proc(5)) are at indexes 11-14 here.
        ticks += int(fields[11]) + int(fields[12])
        if member == pid:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def wait_for_adoption(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until the agent has logged ``container_adopted`` for every service."""
    # TODO(bench-stack): ask `xavi ctl` for the adopted containers instead of
    # reading the log, because a renamed log event makes this wait time out.
    deadline = time.monotonic() + START_TIMEOUT
    pattern = re.compile(r"container_adopted service=(\w+)")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"the agent exited with code {process.returncode}; "
                             f"log {log_path}:\n{tail_file(log_path)}")
        if set(pattern.findall(log_path.read_text(errors="replace"))) >= set(SERVICES):
            return
        time.sleep(POLL_INTERVAL)
    raise BenchError(f"the agent did not adopt all containers within {START_TIMEOUT:.0f} s; "
                     f"log {log_path}")


def measure_idle(client: docker.DockerClient, work: Path, seconds: float,
                 bytecode_dir: Path | None) -> dict[str, Any]:
    """Start an agent on a stack that a first agent created, and sample its idle cost."""
    first, first_stop_s = run_xavi_cold(client, work, bytecode_dir)
    started = time.monotonic()
    process, log_path = start_xavi(work, "xavi-idle.log", bytecode_dir)
    try:
        wait_for_adoption(process, log_path)
        adopt_s = time.monotonic() - started
        cpu_start = cpu_seconds(process.pid)
        window_start = time.monotonic()
        max_rss_kib = max_processes = samples = 0
        while time.monotonic() - window_start < seconds:
            tree = process_tree(process.pid)
            max_rss_kib = max(max_rss_kib, memory_kib(tree))
            max_processes = max(max_processes, len(tree))
            samples += 1
            time.sleep(1.0)
        elapsed = time.monotonic() - window_start
        cpu_used = cpu_seconds(process.pid) - cpu_start
        peak_kib = memory_kib([process.pid], "VmHWM")
        threads = len(list(Path(f"/proc/{process.pid}/task").iterdir()))
        errors = len(re.findall(r" (ERROR|CRITICAL) ", log_path.read_text(errors="replace")))
    finally:
        stop_process(process)
    rss_mib = max_rss_kib / 1024
    cpu_percent = 100 * cpu_used / elapsed
    return {
        "seconds": round(elapsed, 1), "rss_samples": samples,
        "max_rss_mib": round(rss_mib, 1), "peak_rss_mib": round(peak_kib / 1024, 1),
        "cpu_percent": round(cpu_percent, 3), "threads": threads, "processes": max_processes,
        "adopt_s": round(adopt_s, 3), "log_errors": errors,
        "rss_ratio_to_goal": round(rss_mib / GOAL_RSS_MIB, 3),
        "cpu_ratio_to_goal": round(cpu_percent / GOAL_CPU_PERCENT, 3),
        "first_agent": asdict(first), "first_agent_stop_s": round(first_stop_s, 3),
    }


# Reporting ------------------------------------------------------------------


def machine_facts(client: docker.DockerClient) -> dict[str, Any]:
    """Return the facts that make a recorded number comparable."""
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "")
    compose = subprocess.run(["docker-compose", "version", "--short"], capture_output=True,
                             text=True, check=False).stdout.strip()
    revision = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=False).stdout.strip()
    changed = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "xavi"],
                             capture_output=True, text=True, check=False).stdout.splitlines()
    return {
        "cpus": os.cpu_count(), "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "docker_host": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        "docker_engine": client.version().get("Version"), "docker_compose": compose,
        "xavi_revision": revision, "xavi_uncommitted_files": len(changed),
    }


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Return medians, ranges and the Xavi/compose ratios of the cold-start rounds."""
    summary: dict[str, Any] = {}
    for contender in ("xavi", "compose"):
        for key in ("running_s", "healthy_s", "client_cpu_s"):
            values = [r[contender][key] for r in rounds]
            summary[f"{contender}_{key}"] = {"median": round(statistics.median(values), 3),
                                             "min": min(values), "max": max(values)}
    for key in ("running_s", "healthy_s", "client_cpu_s"):
        ratio = summary[f"xavi_{key}"]["median"] / summary[f"compose_{key}"]["median"]
        summary[f"ratio_{key}"] = round(ratio, 3)
    return summary


def print_report(result: dict[str, Any]) -> None:
    """Print the readable tables."""
    summary = result["cold_start"]
    print(f"Cold start with images present, {len(result['rounds'])} round(s), "
          "median (min-max) in seconds")
    print(f"{'':<22}{'Xavi':>20}{'docker-compose':>20}{'Xavi/compose':>14}{'goal':>8}")
    for key, label, goal in (("running_s", "all running", ""),
                             ("healthy_s", "running and healthy", "<= 1.0"),
                             ("client_cpu_s", "client CPU time", "")):
        cells = []
        for contender in ("xavi", "compose"):
            stats = summary[f"{contender}_{key}"]
            cells.append(f"{stats['median']:.2f} ({stats['min']:.2f}-{stats['max']:.2f})")
        print(f"{label:<22}{cells[0]:>20}{cells[1]:>20}{summary[f'ratio_{key}']:>14.2f}"
              f"{goal:>8}")
    idle = result.get("idle")
    if idle:
        print(f"\nIdle agent over {idle['seconds']:.0f} s after adopting 4 containers "
              f"(adoption took {idle['adopt_s']:.2f} s)")
        print(f"{'':<22}{'value':>12}{'goal':>12}{'value/goal':>12}")
        print(f"{'max RSS':<22}{idle['max_rss_mib']:>8.1f} MiB{GOAL_RSS_MIB:>8.0f} MiB"
              f"{idle['rss_ratio_to_goal']:>12.2f}")
        print(f"{'CPU of one core':<22}{idle['cpu_percent']:>10.2f} %"
              f"{GOAL_CPU_PERCENT:>10.0f} %{idle['cpu_ratio_to_goal']:>12.2f}")


# Command line -----------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; ``--quick`` sets 1 round and 10 s of idle sampling."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="cold-start rounds per contender, alternating order (default 3)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="seconds of idle sampling, 0 to skip it (default 60)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 round and 10 s of idle sampling")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers here")
    parser.add_argument("--private-engine", action="store_true",
                        help="run both contenders on a dockerd of the benchmark's own "
                             "(bench/compose/private-engine.sh) instead of DOCKER_HOST's")
    parser.add_argument("--remove-foreign", action="store_true",
                        help="remove xavi-<service> containers that this benchmark did not create")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="start the agent without a bytecode cache of its own, so "
                             "PYTHONDONTWRITEBYTECODE, when set, makes it compile its "
                             "modules at every start")
    parser.add_argument("--keep-work-dir", action="store_true",
                        help="keep the temporary config, state and log folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.idle_seconds = 1, 10.0
    if args.rounds < 1 or args.idle_seconds < 0:
        parser.error("--rounds must be at least 1 and --idle-seconds at least 0")
    return args


def run_rounds(client: docker.DockerClient, root: Path, args: argparse.Namespace,
               result: dict[str, Any]) -> None:
    """Run the cold-start rounds and the idle measurement into ``result``."""
    bytecode_dir = None
    if not args.no_bytecode_cache:
        bytecode_dir = root / "bytecode"
        compile_xavi(bytecode_dir)
    for index in range(args.rounds):
        order = ("xavi", "compose") if index % 2 == 0 else ("compose", "xavi")
        record: dict[str, Any] = {"round": index + 1, "order": list(order)}
        for contender in order:
            work = root / f"round{index + 1}-{contender}"
            work.mkdir()
            load = float(Path("/proc/loadavg").read_text().split()[0])
            if contender == "xavi":
                timing, stop_s = run_xavi_cold(client, work, bytecode_dir)
                record["xavi"] = {**asdict(timing), "agent_stop_s": round(stop_s, 3)}
            else:
                record["compose"] = asdict(run_compose_cold(client, work))
            record[contender]["load_average_1m"] = load
            cleanup(client, remove_foreign=args.remove_foreign)
            print(f"round {index + 1} {contender}: {record[contender]}", file=sys.stderr,
                  flush=True)
        result["rounds"].append(record)
    result["cold_start"] = summarise(result["rounds"])
    if args.idle_seconds > 0:
        work = root / "idle"
        work.mkdir()
        result["idle"] = measure_idle(client, work, args.idle_seconds, bytecode_dir)
        cleanup(client, remove_foreign=args.remove_foreign)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark on the engine of DOCKER_HOST; return the result record."""
    client = docker.from_env(timeout=120)
    check_images(client)
    cleanup(client, remove_foreign=args.remove_foreign)
    root = Path(tempfile.mkdtemp(prefix="xavi-bench-"))
    print(f"work folder {root}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_facts(client),
        "settings": {"rounds": args.rounds, "idle_seconds": args.idle_seconds,
                     "poll_interval_s": POLL_INTERVAL, "limits": LIMITS,
                     "private_engine": args.private_engine,
                     "bytecode_cache": not args.no_bytecode_cache},
        "rounds": [],
    }
    finished = False
    try:
        run_rounds(client, root, args, result)
        finished = True
    finally:
        if not finished:
            try:
                cleanup(client, remove_foreign=args.remove_foreign)
            except BenchError as exc:
                print(f"bench_stack: cleanup after the failed run failed: {exc}",
                      file=sys.stderr)
        if finished and not args.keep_work_dir:
            subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)
        else:
            print(f"kept the work folder {root} (configs, state, logs)", file=sys.stderr)
        client.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON file when asked."""
    args = parse_args(argv)
    try:
        if args.private_engine:
            with private_engine() as docker_host:
                os.environ["DOCKER_HOST"] = docker_host
                result = run(args)
        else:
            result = run(args)
    except BenchError as exc:
        print(f"bench_stack: error: {exc}", file=sys.stderr)
        return 1
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
