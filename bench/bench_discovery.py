"""Time from Postgres turning healthy on one host to the app on another host running against it.

Three simulated hosts of the multi-host rig (``tests/multihost/rig.py``), each
with its own dockerd and agent, at the default (LAN) gossip timings: hostA
runs the app, and Postgres moves between hostB and hostC once per round.

Each round first releases Postgres on the host that provides it: that host's
``xavi.json`` is rewritten atomically with ``"services": []``, and the round
waits until hostA logs ``service_missing service=postgres``. The app keeps its
last values then, so it is not recreated. Only then is Postgres enabled on the
other host. So every round has exactly one transition, and that transition is
driven by the new provider's health. The other order (enable first) would
leave two providers for a moment. Rendezvous hashing always prefers the same
one of them, so in every second round the app would move only when the old
provider was disabled, not when the new one turned healthy.

For the transition, the benchmark records these times. The agents and the
engines share the machine's clock, so times from different hosts compare
directly:

- ``t_healthy``: dockerd's ``health_status: healthy`` event of the new
  Postgres container (nanoseconds, from the provider's engine). The end of
  the first successful probe in ``State.Health.Log`` is recorded as a
  cross-check;
- ``t_advertised``: the provider's agent logs ``gossip_meta_updated`` with
  ``postgres=5432``;
- ``t_heard``: hostA logs ``member_updated`` (or ``member_joined``) for the
  provider with ``postgres=`` in its services;
- ``t_decided``: hostA logs ``service_locations postgres=ADDRESS:5432``;
- ``t_replaced``: hostA logs ``container_replaced service=app``, with
  ``docker_ms``, the time of the Docker calls of the replacement (image
  check, network check, create, stop, remove, rename, start);
- ``t_running``: ``State.StartedAt`` of hostA's new ``xavi-app`` container.

Reported, in milliseconds, p50 and p95 by nearest rank:

- advertise = t_advertised - t_healthy (the provider's agent noticing health);
- gossip = t_heard - t_advertised;
- decision = t_decided - t_heard;
- dispatch = (t_replaced - docker_ms) - t_decided (until the first Docker call);
- Docker = docker_ms;
- total = t_running - t_healthy;
- agent share = (t_replaced - docker_ms) - t_healthy, which is exactly
  advertise + gossip + decision + dispatch.

The goal is a total of at most 3 s at p95. The report gives total / 3 s and
agent share / 3 s. Agent log times have millisecond resolution, truncated.
``StartedAt`` comes before the start call returns, so ``total - docker_ms``
would understate the agent's part, and the agent share is used instead.

The report also gives context rows that are not part of the total. One is
Postgres' start to its health event: Docker runs the first probe one 2 s
interval after the start. The others run from the new provider's config save
to its ``container_created`` line and to the app running on hostA, which is
what an operator who enables Postgres waits for.

Usage: ``python bench/bench_discovery.py [--rounds 10] [--quick] [--json FILE]
[--agent-log-level INFO]``. It needs root, the main dockerd with the
``xavi-local/postgres:15`` and ``xavi-local/app:latest`` images
(``scripts/build-images.sh``), and the rig's tools. Only one rig can run on a
machine, so the benchmark first waits (every 30 s, up to 15 min) while
``xavi-host*`` namespaces exist. It always stops its own rig. Numbers are
reported, never asserted.

TODO(bench-discovery): move log parsing and the report into modules of their
own, because this file is past the 400-line guide and was the only code file
in scope when it was written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.multihost.rig import LOCAL_IMAGES, Host, Rig, RigError, wait_until

GOAL_S = 3.0
"""Goal for the p95 total, from healthy on one host to running on another."""
POSTGRES_PORT = 5432
SETUP_TIMEOUT = 180.0
"""Seconds for the first app to point at hostB, including Postgres' first initdb."""
RELEASE_TIMEOUT = 60.0
MOVE_TIMEOUT = 180.0
"""Seconds for one move, long because the first start on a host runs initdb into a new volume."""
LINE_TIMEOUT = 10.0
"""Seconds to wait for a log line that must already be written when the move ended."""
SETTLE_S = 3.0
"""Seconds after the last round during which a second, unwanted replacement would show."""
RIG_RETRY_S = 30.0
RIG_WAIT_S = 15 * 60.0
PROBE_MISMATCH_S = 0.1
"""Seconds by which the health event and the probe's end may differ before a round is flagged."""

LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\S+) (?P<level>[A-Z]+)\s+(?P<event>\w+)(?P<rest>.*)$")
LOG_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')
DOCKER_TIME = re.compile(r"^(?P<base>[^.]+)(?:\.(?P<fraction>\d+))?(?P<zone>Z|[+-]\d\d:\d\d)$")


class BenchError(Exception):
    """The benchmark could not take a measurement; the message names the step that failed."""


# Agent logs ------------------------------------------------------------------

@dataclass(frozen=True)
class LogEvent:
    """One parsed line of an agent's text log."""

    index: int
    time: float
    """Seconds since the epoch; the log prints milliseconds, truncated."""
    name: str
    fields: dict[str, str]


class AgentLog:
    """Reads a host's ``agent.log`` incrementally and parses complete lines only."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.path = host.directory / "agent.log"
        self.offset = 0
        self.events: list[LogEvent] = []
        self.lines = 0

    def refresh(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode(errors="replace").splitlines():
            self.lines += 1
            match = LOG_LINE.match(line)
            if match is None:
                continue  # a traceback or another line without a timestamp
            fields = {key: value[1:-1] if value.startswith('"') else value
                      for key, value in LOG_FIELD.findall(match["rest"])}
            stamp = datetime.fromisoformat(match["time"]).timestamp()
            self.events.append(LogEvent(self.lines, stamp, match["event"], fields))

    def mark(self) -> int:
        """Return the number of events read so far, a starting point for ``find``."""
        self.refresh()
        return len(self.events)

    def find(self, since: int, names: tuple[str, ...],
             matches: Callable[[dict[str, str]], bool] = lambda fields: True) -> LogEvent | None:
        self.refresh()
        for event in self.events[since:]:
            if event.name in names and matches(event.fields):
                return event
        return None

    def wait(self, since: int, names: tuple[str, ...], timeout: float, what: str,
             matches: Callable[[dict[str, str]], bool] = lambda fields: True) -> LogEvent:
        """Wait until a matching event is logged after ``since``, or raise BenchError on timeout."""
        def found() -> LogEvent | None:
            agent = self.host.agent
            if agent is not None and agent.poll() is not None:
                raise BenchError(f"the agent on {self.host.name} exited with {agent.poll()}")
            return self.find(since, names, matches)

        try:
            event: LogEvent = wait_until(found, timeout, what, 0.05)
        except RigError as exc:
            raise BenchError(f"{exc}; see {self.path}") from None
        return event


# Docker facts -----------------------------------------------------------------

def parse_docker_time(text: str) -> float:
    """Convert Docker's RFC 3339 time with nanoseconds into seconds since the epoch."""
    match = DOCKER_TIME.match(text)
    if match is None:
        raise BenchError(f"unexpected time format from Docker: {text!r}")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    fraction = (match["fraction"] or "0")[:9].ljust(9, "0")
    return datetime.fromisoformat(match["base"] + zone).timestamp() + int(fraction) / 1e9


def app_postgres_host(host: Host) -> str | None:
    """Return the POSTGRES_HOST of the host's ``xavi-app``, or None while it has none."""
    try:
        container = host.docker().containers.get("xavi-app")
    except Exception:  # noqa: BLE001 - absent, or being replaced at this moment
        return None
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    return env.get("POSTGRES_HOST")


def postgres_health(host: Host, since: float) -> dict[str, float]:
    """Return the start, health event and first successful probe of the host's ``xavi-postgres``."""
    container = host.docker().containers.get("xavi-postgres")
    state = container.attrs["State"]
    probes = [entry for entry in (state.get("Health") or {}).get("Log") or []
              if entry.get("ExitCode") == 0]
    facts = {"started": parse_docker_time(state["StartedAt"])}
    if probes:
        facts["probe_end"] = parse_docker_time(probes[0]["End"])
    # The engine keeps recent events in memory; with an "until" the stream ends by itself.
    events = host.docker().events(since=math.floor(since) - 1, until=f"{time.time():.6f}",
                                  decode=True, filters={"type": "container",
                                                        "container": container.id})
    for event in events:
        if event.get("Action") == "health_status: healthy":
            facts["healthy_event"] = event["timeNano"] / 1e9
            break
    events.close()
    return facts


# One move ----------------------------------------------------------------------

@dataclass
class Round:
    """The times of one move of Postgres, in seconds since the epoch, and its checks."""

    index: int
    old: str
    new: str
    load_1m: float
    t_config: float = 0.0
    """The new provider's ``xavi.json`` was renamed into place."""
    t_created: float = 0.0
    t_pg_started: float = 0.0
    t_healthy: float = 0.0
    t_probe_end: float = 0.0
    t_advertised: float = 0.0
    t_heard: float = 0.0
    t_decided: float = 0.0
    t_replaced: float = 0.0
    docker_ms: float = 0.0
    t_running: float = 0.0
    app_points_at_new: bool = False
    replacements: int = 0
    """``container_replaced service=app`` lines on hostA from this round's release to the next's."""
    notes: list[str] = field(default_factory=list)

    def durations_ms(self) -> dict[str, float]:
        calls_began = self.t_replaced - self.docker_ms / 1000
        spans = {
            "advertise": self.t_advertised - self.t_healthy,
            "gossip": self.t_heard - self.t_advertised,
            "decision": self.t_decided - self.t_heard,
            "dispatch": calls_began - self.t_decided,
            "docker": self.docker_ms / 1000,
            "total": self.t_running - self.t_healthy,
            "agent_share": calls_began - self.t_healthy,
            "health_wait": self.t_healthy - self.t_pg_started,
            "config_to_create": self.t_created - self.t_config,
            "config_to_running": self.t_running - self.t_config,
            "event_minus_probe": self.t_healthy - self.t_probe_end,
        }
        return {name: round(seconds * 1000, 1) for name, seconds in spans.items()}


def write_config(host: Host, config: dict[str, Any]) -> float:
    """Save ``xavi.json`` as deployment tools do; return the time of the rename."""
    path = host.agent_dir / "config" / "xavi.json"
    temporary = path.with_name(".xavi.json.bench")
    temporary.write_text(json.dumps(config, indent=2))
    stamp = time.time()
    os.replace(temporary, path)
    return stamp


def release(rig: Rig, logs: dict[str, AgentLog], app: Host, old: Host) -> int:
    """Disable Postgres on ``old`` and wait until hostA logs that no host provides it.

    Returns hostA's log mark taken before the change.
    """
    since = logs[app.name].mark()
    write_config(old, rig.agent_config(old, []))
    logs[app.name].wait(since, ("service_missing",), RELEASE_TIMEOUT,
                        f"{app.name} to log service_missing for postgres",
                        lambda fields: fields.get("service") == "postgres")
    wait_until(lambda: not old.docker().containers.list(all=True,
                                                        filters={"name": "^/xavi-postgres$"}),
               RELEASE_TIMEOUT, f"{old.name} to remove xavi-postgres", 0.1)
    return since


def move(rig: Rig, logs: dict[str, AgentLog], app: Host, old: Host, new: Host,
         index: int) -> Round:
    """Enable Postgres on ``new`` (released on ``old`` already) and time the app's move."""
    app_log, new_log = logs[app.name], logs[new.name]
    app_since, new_since = app_log.mark(), new_log.mark()
    record = Round(index, old.name, new.name, os.getloadavg()[0])
    record.t_config = write_config(new, rig.agent_config(new, ["postgres"]))

    address = f"{new.address}:{POSTGRES_PORT}"
    replaced = app_log.wait(app_since, ("container_replaced",), MOVE_TIMEOUT,
                            f"{app.name} to replace the app for {address}",
                            lambda fields: fields.get("service") == "app")
    record.t_replaced = replaced.time
    record.docker_ms = float(replaced.fields["docker_ms"])

    def with_postgres(fields: dict[str, str]) -> bool:
        return f"postgres={POSTGRES_PORT}" in fields.get("services", "")

    record.t_created = new_log.wait(new_since, ("container_created",), LINE_TIMEOUT,
                                    f"{new.name} to log container_created",
                                    lambda fields: fields.get("service") == "postgres").time
    record.t_advertised = new_log.wait(new_since, ("gossip_meta_updated",), LINE_TIMEOUT,
                                       f"{new.name} to advertise postgres", with_postgres).time
    record.t_heard = app_log.wait(app_since, ("member_updated", "member_joined"), LINE_TIMEOUT,
                                  f"{app.name} to hear {new.name}'s services",
                                  lambda fields: fields.get("member") == new.name
                                  and with_postgres(fields)).time
    record.t_decided = app_log.wait(app_since, ("service_locations",), LINE_TIMEOUT,
                                    f"{app.name} to choose {address}",
                                    lambda fields: fields.get("postgres") == address).time

    container = app.docker().containers.get("xavi-app")
    if not container.id.startswith(replaced.fields.get("new", "?")):
        record.notes.append("xavi-app is not the container the replacement logged")
    record.t_running = parse_docker_time(container.attrs["State"]["StartedAt"])
    record.app_points_at_new = app_postgres_host(app) == new.address

    health = postgres_health(new, record.t_config)
    record.t_pg_started = health["started"]
    record.t_probe_end = health.get("probe_end", math.nan)
    if "healthy_event" in health:
        record.t_healthy = health["healthy_event"]
    else:
        record.t_healthy = record.t_probe_end
        record.notes.append("no health_status event found; used the first successful probe")
    if abs(record.t_healthy - record.t_probe_end) > PROBE_MISMATCH_S:
        record.notes.append("the health event and the first successful probe differ")
    return record


# Statistics and report --------------------------------------------------------------

def nearest_rank(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


ROWS = (
    ("advertise", "advertise (t_advertised - t_healthy)"),
    ("gossip", "gossip (t_heard - t_advertised)"),
    ("decision", "decision (t_decided - t_heard)"),
    ("dispatch", "dispatch (first Docker call - t_decided)"),
    ("docker", "Docker (docker_ms)"),
    ("agent_share", "agent share (first Docker call - t_healthy)"),
    ("total", "total (t_running - t_healthy)"),
    ("health_wait", "context: Postgres start to healthy"),
    ("config_to_create", "context: config saved to container_created"),
    ("config_to_running", "context: config saved to app running"),
    ("event_minus_probe", "context: health event - probe end"),
)


def summarize(rounds: list[Round]) -> dict[str, dict[str, float]]:
    table = [r.durations_ms() for r in rounds]
    summary = {}
    for key, _ in ROWS:
        values = [row[key] for row in table if not math.isnan(row[key])]
        if values:
            summary[key] = {"p50": nearest_rank(values, 0.5), "p95": nearest_rank(values, 0.95),
                            "max": max(values), "min": min(values)}
    goal_ms = GOAL_S * 1000
    summary["ratios"] = {
        "total_p50_per_goal": round(summary["total"]["p50"] / goal_ms, 3),
        "total_p95_per_goal": round(summary["total"]["p95"] / goal_ms, 3),
        "agent_share_p95_per_goal": round(summary["agent_share"]["p95"] / goal_ms, 3),
        "docker_p95_per_goal": round(summary["docker"]["p95"] / goal_ms, 3),
    }
    return summary


def print_report(rounds: list[Round], summary: dict[str, dict[str, float]]) -> None:
    print(f"\n{len(rounds)} moves of Postgres between hostB and hostC; the app runs on hostA")
    print(f"{'ms':<46} {'p50':>8} {'p95':>8} {'min':>8} {'max':>8}")
    for key, label in ROWS:
        if key in summary:
            row = summary[key]
            print(f"{label:<46} {row['p50']:>8.1f} {row['p95']:>8.1f} "
                  f"{row['min']:>8.1f} {row['max']:>8.1f}")
    ratios = summary["ratios"]
    print(f"\ntotal / {GOAL_S:.0f} s: p50 {ratios['total_p50_per_goal']:.2f}, "
          f"p95 {ratios['total_p95_per_goal']:.2f} (goal <= 1)")
    print(f"agent share / {GOAL_S:.0f} s: p95 {ratios['agent_share_p95_per_goal']:.2f}; "
          f"Docker / {GOAL_S:.0f} s: p95 {ratios['docker_p95_per_goal']:.2f}")
    for record in rounds:
        problems = list(record.notes)
        if record.replacements != 1:
            problems.append(f"{record.replacements} app replacements instead of 1")
        if not record.app_points_at_new:
            problems.append("the app does not point at the new provider")
        if problems:
            print(f"round {record.index} ({record.old} -> {record.new}): {'; '.join(problems)}")


def machine_facts() -> dict[str, Any]:
    def command(*argv: str) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO_ROOT)
        return result.stdout.strip()

    dirty = command("git", "status", "--porcelain", "--", "xavi")
    return {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "dockerd": command("dockerd", "--version"),
            "commit": command("git", "rev-parse", "--short", "HEAD"),
            "uncommitted_files_under_xavi": len(dirty.splitlines()) if dirty else 0}


def without_nan(value: Any) -> Any:
    """Replace NaN (a time that was not found) with None, because JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nan(item) for item in value]
    return value


# Main ------------------------------------------------------------------------------

def wait_for_free_machine() -> None:
    """Wait while another rig's namespaces exist, because only one rig fits on a machine."""
    deadline = time.monotonic() + RIG_WAIT_S
    while True:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                 check=True).stdout
        busy = [line.split()[0] for line in listing.splitlines()
                if line.startswith("xavi-host")]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"another rig is still running after {RIG_WAIT_S / 60:.0f} min "
                             f"({', '.join(busy)}); try again later")
        print(f"another rig is running ({', '.join(busy)}); retrying in {RIG_RETRY_S:.0f} s",
              file=sys.stderr)
        time.sleep(RIG_RETRY_S)


def keep_logs(rig: Rig, folder: Path) -> Path:
    """Copy each host's agent log into ``folder`` before the rig's work folder is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    for host in rig.hosts:
        source = host.directory / "agent.log"
        if source.exists():
            shutil.copyfile(source, folder / f"{host.name}-agent.log")
    return folder


def measure(rig: Rig, rounds: int, log_level: str) -> list[Round]:
    app, first, second = rig.hosts
    logs = {host.name: AgentLog(host) for host in rig.hosts}
    extra = ("--log-level", log_level)
    first.start_agent(rig.agent_config(first, ["postgres"]), None, *extra)
    second.start_agent(rig.agent_config(second, []), None, *extra)
    app.start_agent(rig.agent_config(app, ["app"]), None, *extra)
    wait_until(lambda: app_postgres_host(app) == first.address, SETUP_TIMEOUT,
               f"the app on {app.name} to point at {first.name}", 0.2)
    # The renamed container shows before the agent logs its replacement. Round 1
    # counts replacements from its first mark, so that line must be written first.
    current = app.docker().containers.get("xavi-app").id[:12]
    logs[app.name].wait(0, ("container_created", "container_replaced"), LINE_TIMEOUT,
                        f"{app.name} to log the app container {current}",
                        lambda fields: current in (fields.get("container"), fields.get("new")))

    records: list[Round] = []
    marks: list[int] = []
    old, new = first, second
    for index in range(1, rounds + 1):
        marks.append(release(rig, logs, app, old))
        record = move(rig, logs, app, old, new, index)
        records.append(record)
        spans = record.durations_ms()
        print(f"round {index} {old.name} -> {new.name}: total {spans['total']:.0f} ms, "
              f"agent share {spans['agent_share']:.0f} ms, Docker {spans['docker']:.0f} ms, "
              f"load {record.load_1m:.2f}", file=sys.stderr)
        old, new = new, old

    # A sleep, because this waits for the absence of a second replacement, and no event marks that.
    time.sleep(SETTLE_S)
    app_log = logs[app.name]
    app_log.refresh()
    bounds = [*marks, len(app_log.events)]
    for record, start, end in zip(records, bounds, bounds[1:], strict=False):
        record.replacements = sum(1 for event in app_log.events[start:end]
                                  if event.name == "container_replaced"
                                  and event.fields.get("service") == "app")
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="moves of Postgres (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, a smoke run")
    parser.add_argument("--json", type=Path, help="write rounds and summary to this file")
    parser.add_argument("--keep-logs", type=Path,
                        help="copy the three agent logs into this folder at the end "
                             "(after a failure they go to a new folder under /tmp anyway)")
    parser.add_argument("--agent-log-level", default="INFO",
                        help="the agents' log level (default INFO; the rig's own default is DEBUG)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    # SIGTERM ends the run through the finally clause below, so the rig is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    wait_for_free_machine()
    rig = Rig(3, images=(LOCAL_IMAGES["postgres"], LOCAL_IMAGES["app"]))
    started = time.monotonic()
    try:
        rig.start()
        print(f"rig up in {rig.timings['total']:.1f} s at {rig.workdir}", file=sys.stderr)
        records = measure(rig, rounds, args.agent_log_level)
    except (BenchError, RigError) as exc:
        kept = keep_logs(rig, args.keep_logs or Path(tempfile.mkdtemp(prefix="bench-discovery-")))
        print(f"bench_discovery: error: {exc}; agent logs in {kept}", file=sys.stderr)
        return 1
    finally:
        if args.keep_logs:
            keep_logs(rig, args.keep_logs)
        rig.stop()

    summary = summarize(records)
    print_report(records, summary)
    if args.json:
        document = {"machine": machine_facts(), "rounds_requested": rounds,
                    "agent_log_level": args.agent_log_level,
                    "wall_s": round(time.monotonic() - started, 1), "summary": summary,
                    "rounds": [{**asdict(r), "durations_ms": r.durations_ms()} for r in records]}
        args.json.write_text(json.dumps(without_nan(document), indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
