"""Crashes injected into actors of a running agent: the supervisor recovers them, containers stay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pykka
import pytest

from tests.integration.conftest import example_config, stack_ready, wait_until
from xavi.actors.container import ContainerActor
from xavi.actors.messages import GetStatus, Inject, InjectCrash
from xavi.actors.supervisor import SupervisorSettings
from xavi.config import SERVICES
from xavi.main import Agent

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def running_agent(clean_engine: docker.DockerClient, tmp_path: Path) -> Iterator[Agent]:
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "xavi.json").write_text(json.dumps(example_config(tmp_path)))
    settings = SupervisorSettings(ping_interval=0.2, ping_timeout=2.0, backoff_base=0.1)
    agent = Agent(config_dir, tmp_path / "state", None, settings)
    agent.start()
    yield agent
    agent.stop()
    pykka.ActorRegistry.stop_all()


def supervisor_status(agent: Agent) -> dict[str, dict[str, Any]]:
    assert agent.supervisor is not None
    return {c["name"]: c for c in agent.supervisor.ask(GetStatus(), timeout=5)}


def container_actor_status(service: str) -> dict[str, Any] | None:
    for ref in pykka.ActorRegistry.get_by_class(ContainerActor):
        status = ref.ask(GetStatus(), timeout=5)
        if status["service"] == service:
            return dict(status)
    return None


@pytest.mark.parametrize("target", ["container:valkey", "container:app", "config", "secrets",
                                    "discovery"])
def test_crashed_actor_is_restarted_and_containers_untouched(
        running_agent: Agent, clean_engine: docker.DockerClient, target: str) -> None:
    containers = wait_until(lambda: stack_ready(clean_engine, SERVICES), 90, "the stack to run")
    before = {s: (c.id, c.attrs["State"]["StartedAt"]) for s, c in containers.items()}
    assert running_agent.supervisor is not None

    assert running_agent.supervisor.ask(Inject(target, InjectCrash()), timeout=5)

    def recovered() -> bool:
        status = supervisor_status(running_agent)[target]
        return bool(status["restarts"] == 1 and status["alive"])

    wait_until(recovered, 10, f"{target} to be restarted")
    if target.startswith("container:"):
        service = target.split(":", 1)[1]
        wait_until(lambda: (container_actor_status(service) or {}).get("container"), 10,
                   f"the new {target} to adopt its container")
        assert container_actor_status(service)["container"] == before[service][0][:12]

    others = {name: s["restarts"] for name, s in supervisor_status(running_agent).items()
              if name != target}
    assert set(others.values()) == {0}
    after = {s: (c.id, c.attrs["State"]["StartedAt"])
             for s, c in (stack_ready(clean_engine, SERVICES) or {}).items()}
    assert after == before
