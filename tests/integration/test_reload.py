"""Hot reload on the real engine: only what changed is touched, data survives."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
import valkey

from tests.integration.conftest import (
    IMAGES,
    VALKEY_PORT,
    AgentProcess,
    containers_by_service,
    example_config,
    stack_ready,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def ids(client: docker.DockerClient) -> dict[str, str]:
    return {service: c.id for service, c in containers_by_service(client).items()}


def test_limit_change_is_applied_in_place(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    config = example_config(tmp_path, services=["valkey", "app"])
    agent.write_config(config)
    agent.start()
    wait_until(lambda: stack_ready(clean_engine, ("valkey", "app")), 60, "the stack to run")
    before = ids(clean_engine)

    config["valkey"]["max_ram"] = "200m"
    agent.write_config(config)
    agent.wait_for_log(r"limits_updated service=valkey")

    container = clean_engine.containers.get("xavi-valkey")
    assert container.attrs["HostConfig"]["Memory"] == 200 * 1024**2
    assert ids(clean_engine) == before
    assert "container_replaced" not in agent.log()


def test_image_change_replaces_only_that_service(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    clean_engine.images.get(IMAGES["app"]).tag("xavi-test/app", "v2")
    config = example_config(tmp_path, services=["valkey", "app"])
    agent.write_config(config)
    agent.start()
    wait_until(lambda: stack_ready(clean_engine, ("valkey", "app")), 60, "the stack to run")
    before = ids(clean_engine)

    config["images"]["app"] = "xavi-test/app:v2"
    agent.write_config(config)
    agent.wait_for_log(r"container_replaced service=app")

    after = ids(clean_engine)
    assert after["valkey"] == before["valkey"]
    assert after["app"] != before["app"]
    assert clean_engine.containers.get("xavi-app").attrs["Config"]["Image"] == "xavi-test/app:v2"


def test_removed_service_loses_container_not_data(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    config = example_config(tmp_path, services=["valkey"])
    agent.write_config(config)
    agent.start()
    wait_until(lambda: stack_ready(clean_engine, ("valkey",)), 60, "valkey to run")
    password = json.loads((agent.config_dir / "xavi.secrets").read_text())["valkey_password"]
    client = valkey.Valkey(host="127.0.0.1", port=VALKEY_PORT, password=password,
                           socket_timeout=5)
    client.set("kept", "yes")
    client.execute_command("BGREWRITEAOF")
    wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 10,
               "valkey to write its append-only file")

    config["services"] = []
    agent.write_config(config)
    agent.wait_for_log(r"container_removed service=valkey .*data=kept")
    assert containers_by_service(clean_engine) == {}
    assert clean_engine.volumes.get("xavi-valkey-data") is not None

    config["services"] = ["valkey"]
    agent.write_config(config)
    wait_until(lambda: stack_ready(clean_engine, ("valkey",)), 60, "valkey to run again")
    client = valkey.Valkey(host="127.0.0.1", port=VALKEY_PORT, password=password,
                           socket_timeout=5)
    assert wait_until(lambda: _get_or_none(client, "kept"), 10, "the key to be readable") == b"yes"


def _get_or_none(client: valkey.Valkey, key: str) -> bytes | None:
    try:
        return client.get(key)
    except valkey.exceptions.BusyLoadingError:
        return None


def test_invalid_config_keeps_running_stack(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    config = example_config(tmp_path, services=["valkey"])
    agent.write_config(config)
    agent.start()
    wait_until(lambda: stack_ready(clean_engine, ("valkey",)), 60, "valkey to run")
    before = ids(clean_engine)

    (agent.config_dir / "xavi.json").write_text('{\n  "services": ["valkey"],\n}\n')
    line = agent.wait_for_log(r"config_rejected .*")
    assert "line 3, column 1" in line
    (agent.config_dir / "xavi.json").unlink()
    agent.wait_for_log(r"config_missing .*keeping the config in force")
    assert ids(clean_engine) == before
    assert agent.process is not None and agent.process.poll() is None
