"""An actor crashed in a loop through ``xavi ctl`` backs off, then the agent exits with code 5."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (
    AgentProcess,
    containers_by_service,
    example_config,
    free_port,
    stack_ready,
    wait_until,
)
from xavi.actors.supervisor import SupervisorSettings
from xavi.config import SERVICES
from xavi.ctl import CtlError, call
from xavi.main import EXIT_ESCALATED

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DEFAULTS = SupervisorSettings()
TARGET = "container:valkey"


def test_crash_loop_backs_off_then_exits_5(agent: AgentProcess, clean_engine: docker.DockerClient,
                                           tmp_path: Path, control_socket_in_tmp: Path) -> None:
    agent.write_config(example_config(tmp_path, cluster={
        "bind_port": free_port(), "bind_addr": "127.0.0.1", "advertise_addr": "127.0.0.1",
        "node_name": "escalation-node"}))
    agent.start("--enable-fault-injection")
    wait_until(lambda: stack_ready(clean_engine, SERVICES), 120, "the stack to run")
    before = {s: (c.id, c.attrs["State"]["StartedAt"])
              for s, c in containers_by_service(clean_engine).items()}
    assert agent.process is not None

    def crash_accepted() -> bool:
        try:
            answer = call(control_socket_in_tmp, "fault", {"kind": "crash", "actor": TARGET},
                          timeout=5)
        except CtlError:
            return False
        return bool(answer["ok"])

    def restarts_seen() -> int | None:
        """Return the target's restart count once it runs again; None while it restarts."""
        try:
            answer = call(control_socket_in_tmp, "status", timeout=5)
        except CtlError:
            return None
        row = next(a for a in answer["result"]["actors"] if a["name"] == TARGET)
        return int(row["restarts"]) if row["state"] == "running" else None

    crashes = 0
    while agent.process.poll() is None and crashes <= DEFAULTS.max_restarts:
        wait_until(crash_accepted, 30, f"crash number {crashes + 1} to be accepted",
                   interval=0.05)
        crashes += 1
        if crashes <= DEFAULTS.max_restarts:
            # The next crash must hit the new instance, not the one about to crash.
            restarted = functools.partial(lambda expected: restarts_seen() == expected, crashes)
            wait_until(restarted, 30, f"restart number {crashes} of {TARGET}", interval=0.05)

    assert agent.process.wait(timeout=60) == EXIT_ESCALATED
    log = agent.log()
    delays = [float(d) for d in re.findall(
        rf"actor_restart_scheduled actor={TARGET} reason=\w+ delay_s=([\d.]+)", log)]
    expected = [min(DEFAULTS.backoff_base * 2 ** i, DEFAULTS.backoff_max)
                for i in range(DEFAULTS.max_restarts)]
    assert delays == pytest.approx(expected)
    assert crashes == DEFAULTS.max_restarts + 1
    assert f"restart_intensity_exceeded reason=\"actor {TARGET} restarted" in log
    assert log.count("fault_injected target=container:valkey fault=crash") == crashes
    after = {s: (c.id, c.attrs["State"]["StartedAt"])
             for s, c in containers_by_service(clean_engine).items()}
    assert after == before
