"""Docker-side helpers of ``bench/bench_stack.py``: cleanup, readiness polling, compose, engine.

- :func:`cleanup` removes only what the benchmark owns. That is the
  ``xavi-<service>`` containers with the node label ``xavi-bench``, the
  compose project ``xavibench`` (containers, networks and volumes, found by
  label), the volumes ``xavi-postgres-data`` and ``xavi-valkey-data``, and the
  ``xavi`` network when no container is attached to it. Any other
  ``xavi-<service>`` container stops the run, unless the caller allows
  removing it, because it shares names and data volumes with the benchmark's.
- :func:`wait_for_stack` polls ``docker inspect`` every 50 ms and stamps the
  first poll that shows each container running, and each provider healthy.
- :func:`run_compose_cold` is the docker-compose contender
  (``docker-compose.yml`` beside this module).
- :func:`private_engine` runs ``private-engine.sh`` for a dockerd of the
  benchmark's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from xavi.secrets import SECRETS_FILE, ensure_secrets
from xavi.services import write_secret_files

HERE = Path(__file__).resolve().parent
COMPOSE_FILE = HERE / "docker-compose.yml"
ENGINE_SCRIPT = HERE / "private-engine.sh"
COMPOSE_PROJECT = "xavibench"
NODE_NAME = "xavi-bench"
"""Xavi's node label on the benchmark's containers, which distinguishes them from others'."""
SERVICES = ("postgres", "valkey", "app", "backupbot")
PROVIDERS = ("postgres", "valkey")
"""Services with a healthcheck; the others count as ready once running."""
IMAGES = {
    "postgres": "xavi-local/postgres:15",
    "valkey": "xavi-local/valkey:8",
    "app": "xavi-local/app:latest",
    "backupbot": "xavi-local/backupbot:latest",
}
LIMITS = {
    "postgres": ("256m", "1.0"),
    "valkey": ("128m", "0.5"),
    "app": ("64m", "0.25"),
    "backupbot": ("64m", "0.25"),
}
"""(memory, CPUs) per service, the same for both contenders."""
COMPOSE_PORTS = {"postgres": 35432, "valkey": 36379}
XAVI_VOLUMES = ("xavi-postgres-data", "xavi-valkey-data")
XAVI_NETWORK = "xavi"
XAVI_CONTAINER_RE = re.compile(r"xavi-(postgres|valkey|app|backupbot)(-next)?")
LABEL_NODE = "org.tripleclabs.xavi.node"
LABEL_COMPOSE_PROJECT = "com.docker.compose.project"

POLL_INTERVAL = 0.05
START_TIMEOUT = 180.0
"""Seconds a contender may take to reach running and healthy before the run fails."""
STOP_TIMEOUT = 30.0
SETTLE_SECONDS = 1.0
"""Pause after each cleanup so the previous teardown's disk writes do not overlap a start."""


class BenchError(RuntimeError):
    """The benchmark cannot go on. The message gives the cause and the next step."""


@dataclass
class StartResult:
    """Seconds from launching a contender until its stack reached each state."""

    running_s: float
    """All four containers seen running."""
    healthy_s: float
    """All four running and Postgres and Valkey healthy."""
    command_s: float | None = None
    """When the launched command exited by itself (docker-compose), else None."""
    client_cpu_s: float | None = None
    """CPU time (user + system) of the launched process: all of it for docker-compose,
    up to readiness for the agent. It depends much less than wall time on other load."""


def cleanup(client: docker.DockerClient, *, remove_foreign: bool) -> None:
    """Remove the benchmark's containers, volumes and networks so the next start is cold."""
    api = client.api
    mine: list[str] = []
    foreign: list[str] = []
    for summary in api.containers(all=True):
        name = summary["Names"][0].lstrip("/")
        labels = summary.get("Labels") or {}
        if XAVI_CONTAINER_RE.fullmatch(name):
            owned = labels.get(LABEL_NODE) == NODE_NAME or remove_foreign
            (mine if owned else foreign).append(name)
        elif labels.get(LABEL_COMPOSE_PROJECT) == COMPOSE_PROJECT:
            mine.append(name)
    if foreign:
        raise BenchError(
            f"containers {', '.join(sorted(foreign))} exist and were not created by this "
            "benchmark, and they share its container names and data volumes. Remove them, "
            "pass --remove-foreign, or run on a private engine with --private-engine"
        )
    for name in mine:
        api.remove_container(name, force=True, v=True)

    project = {"label": [f"{LABEL_COMPOSE_PROJECT}={COMPOSE_PROJECT}"]}
    volumes = list(XAVI_VOLUMES)
    volumes += [v["Name"] for v in (api.volumes(filters=project).get("Volumes") or [])]
    for volume in volumes:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_volume(volume, force=True)
    networks = [n["Id"] for n in api.networks(filters=project)]
    # Removing an unused xavi network makes Xavi create it again, as compose
    # creates its project network on every cold start.
    networks += [n["Id"] for n in api.networks(names=[XAVI_NETWORK])
                 if n["Name"] == XAVI_NETWORK and not api.inspect_network(n["Id"])["Containers"]]
    for network in networks:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_network(network)
    time.sleep(SETTLE_SECONDS)


def check_images(client: docker.DockerClient) -> None:
    """Raise BenchError unless every image is present locally."""
    missing = []
    for image in IMAGES.values():
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        raise BenchError(f"missing images {', '.join(missing)}: run scripts/build-images.sh")


def wait_for_stack(client: docker.DockerClient, names: dict[str, str], started: float,
                   process: subprocess.Popen[bytes], log_path: Path, *,
                   may_exit: bool) -> StartResult:
    """Poll the containers in ``names`` (service -> container name) until all are ready.

    ``process`` is the launched contender. An exit with a non-zero code fails
    the run, and so does any exit unless ``may_exit`` is set, because
    docker-compose exits once the containers are started but the agent must
    keep running. A container that is ready is not inspected again, so the
    polling load falls as the stack comes up.
    """
    running: dict[str, float] = {}
    ready: dict[str, float] = {}
    command_s: float | None = None
    deadline = started + START_TIMEOUT
    next_poll = time.monotonic()
    while len(ready) < len(names):
        now = time.monotonic()
        if now > deadline:
            raise BenchError(f"the stack was not ready after {START_TIMEOUT:.0f} s: running "
                             f"{sorted(running)}, ready {sorted(ready)}; log {log_path}")
        exit_code = process.poll()
        if exit_code is not None and command_s is None:
            command_s = now - started
            if exit_code != 0 or not may_exit:
                command = process.args[0] if isinstance(process.args, list) else process.args
                raise BenchError(f"{command!s} exited with code {exit_code}; "
                                 f"log {log_path}:\n{tail_file(log_path)}")
        for service, name in names.items():
            if service in ready:
                continue
            try:
                state = client.api.inspect_container(name)["State"]
            except docker.errors.NotFound:
                continue
            seen = time.monotonic() - started
            if state.get("Running"):
                running.setdefault(service, seen)
                health = (state.get("Health") or {}).get("Status")
                if service not in PROVIDERS or health == "healthy":
                    ready[service] = seen
        next_poll += POLL_INTERVAL
        time.sleep(max(0.0, next_poll - time.monotonic()))
    return StartResult(running_s=round(max(running.values()), 3),
                       healthy_s=round(max(ready.values()), 3),
                       command_s=None if command_s is None else round(command_s, 3))


def tail_file(path: Path, lines: int = 20) -> str:
    """Return the last lines of a log file, or a note when it cannot be read."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror})"


def stop_process(process: subprocess.Popen[bytes]) -> float:
    """Send SIGTERM to a started process, SIGKILL it after STOP_TIMEOUT; return the seconds."""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"warning: pid {process.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f} s; "
                  "sending SIGKILL", file=sys.stderr)
            process.kill()
            process.wait()
    return time.monotonic() - started


def compose_environment(state_dir: Path) -> dict[str, str]:
    """Write the password files like Xavi does; return the variables the compose file uses."""
    secrets, _created = ensure_secrets(state_dir / SECRETS_FILE)
    for service in SERVICES:
        write_secret_files(state_dir, service, secrets)
    env = {
        "XAVI_BENCH_STATE_DIR": str(state_dir),
        "XAVI_BENCH_POSTGRES_PASSWORD": secrets.postgres_password,
        "XAVI_BENCH_VALKEY_PASSWORD": secrets.valkey_password,
    }
    for service in SERVICES:
        memory, cpus = LIMITS[service]
        prefix = f"XAVI_BENCH_{service.upper()}"
        env[f"{prefix}_IMAGE"] = IMAGES[service]
        env[f"{prefix}_MEM"] = memory
        env[f"{prefix}_CPUS"] = cpus
    for service, port in COMPOSE_PORTS.items():
        env[f"XAVI_BENCH_{service.upper()}_PORT"] = str(port)
    return env


def run_compose_cold(client: docker.DockerClient, work: Path) -> StartResult:
    """Cold-start the stack with ``docker-compose up -d``; return the timings.

    The password files are written before the clock starts, because a compose
    user prepares them beforehand; Xavi writes its own within its time.
    """
    env = {**os.environ, **compose_environment(work / "state")}
    log_path = work / "compose-up.log"
    # The benchmark reaps no other child while compose runs, so the growth of
    # RUSAGE_CHILDREN is compose's own CPU time, its child processes included.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log_path.open("wb") as log_file:
        started = time.monotonic()
        process = subprocess.Popen(
            ["docker-compose", "-p", COMPOSE_PROJECT, "-f", str(COMPOSE_FILE), "up", "-d"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    names = {service: f"{COMPOSE_PROJECT}_{service}_1" for service in SERVICES}
    try:
        result = wait_for_stack(client, names, started, process, log_path, may_exit=True)
        if result.command_s is None:
            process.wait(timeout=STOP_TIMEOUT)
            result.command_s = round(time.monotonic() - started, 3)
    finally:
        stop_process(process)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    result.client_cpu_s = round(used, 3)
    return result


@contextlib.contextmanager
def private_engine() -> Iterator[str]:
    """Run a dockerd of the benchmark's own with the images loaded; yield its DOCKER_HOST."""
    directory = Path(tempfile.mkdtemp(prefix="xavi-bench-engine-", dir="/var/tmp"))
    try:
        started = subprocess.run([str(ENGINE_SCRIPT), "start", str(directory)],
                                 capture_output=True, text=True, check=False)
        if started.returncode != 0:
            raise BenchError(f"starting a private engine failed:\n{started.stderr.strip()}")
        yield started.stdout.strip().splitlines()[-1]
    finally:
        # Also after a failed start: the script may have started dockerd before failing.
        if (directory / "dockerd.pid").exists():
            stopped = subprocess.run([str(ENGINE_SCRIPT), "stop", str(directory)],
                                     capture_output=True, text=True, check=False)
            if stopped.returncode != 0:
                print(f"bench_stack: stopping the private engine failed:\n"
                      f"{stopped.stderr.strip()}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=False)
