"""Faults injected through ``xavi ctl`` into every actor of an agent running the whole stack.

One in-process agent (short supervisor timings, fault injection enabled)
runs the four services on the real engine for the whole module. Each test
takes its own snapshot of the containers (ID and ``StartedAt``) and checks
that no actor fault restarted any of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pykka
import pytest

from tests.integration.conftest import (
    REPO,
    containers_by_service,
    example_config,
    free_port,
    remove_xavi_objects,
    stack_ready,
    wait_until,
)
from xavi.actors.control import ControlSettings
from xavi.actors.control_commands import STATUS_TIMEOUT
from xavi.actors.control_path import SocketSettings
from xavi.actors.supervisor import SupervisorSettings
from xavi.config import SERVICES
from xavi.ctl import CtlError, call
from xavi.main import Agent

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SETTINGS = SupervisorSettings(ping_interval=0.2, ping_timeout=1.5, backoff_base=0.1,
                              backoff_max=1.0, max_restarts=5, restart_window=60.0,
                              stop_timeout=10.0)
ACTORS = ["secrets", "config", "discovery", "remote-config", "container:postgres",
          "container:valkey", "container:app", "container:backupbot", "control"]
"""Every child except the GossipActor, whose faults are tested without Docker in
``test_control.py``: its restart can fail to bind its port and then crash-loops until
the agent escalates, which would stop every later test of this module."""
RESTART_BOUND = 5.0
"""Seconds from an injected crash until the new instance runs: backoff 0.1-0.2 s plus start."""
HANG_SECONDS = 4.0
HANG_BOUND = SETTINGS.ping_timeout + SETTINGS.ping_interval + 3.0
"""Seconds from an injected hang until the new instance runs."""


@dataclass
class Stack:
    agent: Agent
    socket: Path
    engine: docker.DockerClient
    config_dir: Path


@pytest.fixture(scope="module")
def stack(engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> \
        Iterator[Stack]:
    base = tmp_path_factory.mktemp("ctl-stack")
    remove_xavi_objects(engine)
    config_dir = base / "cfg"
    config_dir.mkdir()
    config = example_config(base, cluster={"bind_port": free_port(), "bind_addr": "127.0.0.1",
                                           "advertise_addr": "127.0.0.1",
                                           "node_name": "ctl-node"})
    (config_dir / "xavi.json").write_text(json.dumps(config))
    path = base / "run" / "xavi.sock"
    control = ControlSettings(SocketSettings(path), config_dir, fault_injection=True)
    agent = Agent(config_dir, base / "state", None, SETTINGS, control=control)
    agent.start()
    try:
        wait_until(lambda: stack_ready(engine, SERVICES), 120, "the stack to run")
        wait_until(lambda: answer_of(path, "status"), 20, "the control socket")
        yield Stack(agent, path, engine, config_dir)
    finally:
        agent.stop()
        pykka.ActorRegistry.stop_all()
        remove_xavi_objects(engine)


def answer_of(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Return the result of a successful command, or None while the socket cannot respond."""
    try:
        answer = call(path, cmd, args, timeout=10)
    except CtlError:
        return None
    return answer["result"] if answer["ok"] else None


def snapshot(engine: docker.DockerClient) -> dict[str, tuple[str, str]]:
    return {service: (c.id, c.attrs["State"]["StartedAt"])
            for service, c in containers_by_service(engine).items()}


def actor_row(path: Path, name: str) -> dict[str, Any] | None:
    status = answer_of(path, "status")
    if status is None:
        return None
    return next((a for a in status["actors"] if a["name"] == name), None)


def service_row(path: Path, service: str) -> dict[str, Any]:
    status = answer_of(path, "status")
    assert status is not None
    return next(s for s in status["services"] if s["service"] == service)


def wait_restarted(path: Path, name: str, restarts: int, bound: float) -> dict[str, Any]:
    def restarted() -> dict[str, Any] | None:
        row = actor_row(path, name)
        if row and row["restarts"] == restarts + 1 and row["state"] == "running" \
                and row["status"] is not None:
            return row
        return None

    return dict(wait_until(restarted, bound, f"{name} to run again after restart"))


def check_rebuilt(stack: Stack, name: str, row: dict[str, Any],
                  before: dict[str, tuple[str, str]]) -> None:
    status = row["status"]
    if name.startswith("container:"):
        service = name.split(":", 1)[1]
        wait_until(lambda: (actor_row(stack.socket, name) or {}).get("status", {})
                   .get("container"), 10, f"{name} to adopt its container")
        adopted = (actor_row(stack.socket, name) or {})["status"]["container"]
        assert adopted == before[service][0][:12]
    elif name == "config":
        assert status["generation"] == 1
    elif name == "discovery":
        assert set(status["locations"]) >= {"postgres", "valkey"}
    elif name == "control":
        assert status["socket"] == str(stack.socket)


@pytest.mark.parametrize("name", ACTORS)
def test_crash_restarts_actor_without_touching_containers(stack: Stack, name: str) -> None:
    before = snapshot(stack.engine)
    row = actor_row(stack.socket, name)
    assert row is not None

    answer = call(stack.socket, "fault", {"kind": "crash", "actor": name})
    injected = time.monotonic()

    assert answer["ok"], answer
    after_row = wait_restarted(stack.socket, name, row["restarts"], RESTART_BOUND)
    assert time.monotonic() - injected < RESTART_BOUND
    # NOTE: the supervisor may see the actor stopped before its crash report arrives
    # (pykka marks it stopped before on_failure runs); then it records that instead.
    assert after_row["last_error"] in ("InjectedCrash: injected crash in " + name,
                                       "stopped without reporting a crash")
    check_rebuilt(stack, name, after_row, before)
    assert snapshot(stack.engine) == before


@pytest.mark.parametrize("name", ACTORS)
def test_hang_is_detected_and_actor_restarted(stack: Stack, name: str) -> None:
    before = snapshot(stack.engine)
    row = actor_row(stack.socket, name)
    assert row is not None

    answer = call(stack.socket, "fault", {"kind": "hang", "actor": name,
                                          "seconds": HANG_SECONDS})
    injected = time.monotonic()
    during = answer_of(stack.socket, "status")
    status_took = time.monotonic() - injected

    assert answer["ok"], answer
    assert during is not None
    assert status_took < STATUS_TIMEOUT + 1.0
    hung_row = next(a for a in during["actors"] if a["name"] == name)
    assert hung_row["state"] in ("not answering", "restarting")
    after_row = wait_restarted(stack.socket, name, row["restarts"], HANG_BOUND)
    assert "did not answer a ping" in after_row["last_error"]
    check_rebuilt(stack, name, after_row, before)
    assert snapshot(stack.engine) == before


def test_restart_command_restarts_same_container(stack: Stack) -> None:
    before = snapshot(stack.engine)
    row = service_row(stack.socket, "valkey")

    answer = call(stack.socket, "restart", {"service": "valkey"}, timeout=90)

    assert answer["ok"], answer
    after = snapshot(stack.engine)
    assert after["valkey"][0] == before["valkey"][0]
    assert after["valkey"][1] != before["valkey"][1]
    assert {s: v for s, v in after.items() if s != "valkey"} == \
        {s: v for s, v in before.items() if s != "valkey"}
    new_row = service_row(stack.socket, "valkey")
    assert new_row["restarts"] == row["restarts"] + 1
    assert new_row["last_exit"] == row["last_exit"]
    wait_until(lambda: stack_ready(stack.engine, SERVICES), 60, "valkey to be healthy again")


def test_docker_fault_shows_in_status_and_clears(stack: Stack) -> None:
    before = snapshot(stack.engine)

    on = call(stack.socket, "fault", {"kind": "docker", "service": "app", "enabled": True})
    failing = service_row(stack.socket, "app")
    off = call(stack.socket, "fault", {"kind": "docker", "service": "app", "enabled": False})

    assert on["ok"], on
    assert off["ok"], off
    assert "injected fault" in (failing["last_error"] or "")
    assert service_row(stack.socket, "app")["last_error"] is None
    assert snapshot(stack.engine) == before


def test_gossip_fault_reaches_gossip_actor(stack: Stack) -> None:
    answer = call(stack.socket, "fault", {"kind": "gossip", "drop_percent": 0.0})

    assert answer["ok"], answer
    assert answer["result"]["drop_percent"] == 0.0


def test_keyring_change_keeps_containers(stack: Stack) -> None:
    import base64
    import os

    before = snapshot(stack.engine)
    key = base64.b64encode(os.urandom(16)).decode()

    installed = call(stack.socket, "keys", {"op": "install", "key": key})
    removed = call(stack.socket, "keys", {"op": "remove", "key": key})
    settled = answer_of(stack.socket, "status")  # asked after every actor got the new secrets

    assert installed["ok"], installed
    assert removed["ok"], removed
    assert settled is not None
    assert snapshot(stack.engine) == before


def run_ctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xavi", "ctl", "--socket", str(stack.socket),
                           *args], capture_output=True, text=True, timeout=30, cwd=REPO,
                          check=False)


@pytest.mark.parametrize("cmd", ["status", "members", "services"])
def test_ctl_prints_table_and_json(stack: Stack, cmd: str) -> None:
    table = run_ctl(stack, cmd)
    as_json = run_ctl(stack, "--json", cmd)

    assert table.returncode == 0, table.stderr
    assert as_json.returncode == 0, as_json.stderr
    parsed = json.loads(as_json.stdout)
    assert parsed["ok"] is True
    if cmd == "status":
        assert "ACTOR" in table.stdout
        assert "SERVICE" in table.stdout
        assert {s["service"] for s in parsed["result"]["services"]} == set(SERVICES)
        for service in SERVICES:
            assert f"\n{service} " in table.stdout
    elif cmd == "members":
        assert "ctl-node" in table.stdout
        assert [m["name"] for m in parsed["result"]["members"]] == ["ctl-node"]
    else:
        where = {s["service"]: s["where"] for s in parsed["result"]["services"]}
        assert where == {s: "local" for s in SERVICES}
        assert "xavi-postgres:5432" in table.stdout
