"""Pulls through a local registry with credentials: a failed pull leaves the running container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import docker
import pytest

from tests.integration.conftest import (
    IMAGES,
    REPO,
    AgentProcess,
    example_config,
    stack_ready,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

REGISTRY = "127.0.0.1:5000"
USER = "xavi"
PASSWORD = os.environ.get("XAVI_TEST_REGISTRY_PASSWORD", "xavi-test-only")


@pytest.fixture(scope="module")
def registry() -> str:
    subprocess.run(["bash", str(REPO / "scripts/start-registry.sh")], check=True,
                   capture_output=True, timeout=60)
    return REGISTRY


def push_copy_of_app(client: docker.DockerClient, registry: str, tag: str) -> str:
    """Push the local app image to the registry as ``tag`` and drop the local copy."""
    target = f"{registry}/xavi/app:{tag}"
    client.images.get(IMAGES["app"]).tag(target)
    client.images.push(target, auth_config={"username": USER, "password": PASSWORD})
    client.images.remove(target)
    return target


def test_pull_with_wrong_password_keeps_running_container(
        registry: str, clean_engine: docker.DockerClient, agent: AgentProcess,
        tmp_path: Path) -> None:
    image = push_copy_of_app(clean_engine, registry, "pull-test")
    agent.write_config(example_config(tmp_path, services=["app"]))
    agent.start()
    running = wait_until(lambda: stack_ready(clean_engine, ("app",)), 60, "the app to run")
    original_id = running["app"].id

    config = example_config(tmp_path, services=["app"])
    config["images"]["app"] = image
    config["docker"] = {"registry": registry, "username": USER, "password": "wrong-password"}
    agent.write_config(config)

    line = agent.wait_for_log(r"reconcile_failed service=app .*")
    assert image in line
    assert "unauthorized" in line.lower()
    assert "check docker.username and docker.password" in line
    container = clean_engine.containers.get("xavi-app")
    assert container.id == original_id
    assert container.status == "running"

    config["docker"]["password"] = PASSWORD
    agent.write_config(config)
    agent.wait_for_log(r"container_replaced service=app")
    replaced = clean_engine.containers.get("xavi-app")
    assert replaced.id != original_id
    assert replaced.attrs["Config"]["Image"] == image
    assert PASSWORD not in agent.log()
    assert "wrong-password" not in agent.log()
