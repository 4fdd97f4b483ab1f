"""The agent runs the four-service stack on a real Docker Engine and keeps it alive."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import docker
import psycopg
import pytest
import valkey

from tests.integration.conftest import (
    POSTGRES_PORT,
    VALKEY_PORT,
    AgentProcess,
    build_crashing_image,
    containers_by_service,
    example_config,
    stack_ready,
    wait_until,
)
from xavi.config import SERVICES

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def read_secrets(agent: AgentProcess) -> dict[str, str]:
    return json.loads((agent.config_dir / "xavi.secrets").read_text())


def start_stack(agent: AgentProcess, engine: docker.DockerClient, tmp_path: Path,
                services: tuple[str, ...] = SERVICES, **overrides: object) -> dict:
    agent.write_config(example_config(tmp_path, services=list(services), **overrides))
    agent.start()
    return wait_until(lambda: stack_ready(engine, tuple(services)), 90, "the stack to run")


def test_stack_runs_with_limits_passwords_and_env(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    containers = start_stack(agent, clean_engine, tmp_path)
    secrets = read_secrets(agent)

    postgres = containers["postgres"].attrs["HostConfig"]
    assert postgres["Memory"] == 256 * 1024**2
    assert postgres["NanoCpus"] == 1_000_000_000
    valkey_host = containers["valkey"].attrs["HostConfig"]
    assert valkey_host["Memory"] == 128 * 1024**2
    assert valkey_host["NanoCpus"] == 500_000_000

    with psycopg.connect(host="127.0.0.1", port=POSTGRES_PORT, user="postgres",
                         password=secrets["postgres_password"], dbname="postgres",
                         connect_timeout=5) as connection:
        assert connection.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host="127.0.0.1", port=POSTGRES_PORT, user="postgres",
                        password="wrong-password", dbname="postgres", connect_timeout=5)

    with pytest.raises(valkey.exceptions.AuthenticationError):
        valkey.Valkey(host="127.0.0.1", port=VALKEY_PORT, socket_timeout=5).ping()
    client = valkey.Valkey(host="127.0.0.1", port=VALKEY_PORT,
                           password=secrets["valkey_password"], socket_timeout=5)
    assert client.ping() is True

    env = dict(item.split("=", 1) for item in containers["app"].attrs["Config"]["Env"])
    assert env["POSTGRES_HOST"] == "xavi-postgres"
    assert env["POSTGRES_PORT"] == "5432"
    assert env["VALKEY_HOST"] == "xavi-valkey"
    assert env["VALKEY_PORT"] == "6379"
    assert env["POSTGRES_USER"] == "postgres"
    assert env["POSTGRES_PASSWORD"] == secrets["postgres_password"]
    assert env["VALKEY_PASSWORD"] == secrets["valkey_password"]
    app_output = containers["app"].logs().decode()
    assert "postgres=ok" in app_output or wait_until(
        lambda: "postgres=ok valkey=ok" in containers["app"].logs().decode(), 20,
        "the app to reach postgres and valkey")

    for service in ("postgres", "valkey"):
        inspected = json.dumps(containers[service].attrs)
        for value in secrets.values():
            assert value not in inspected, f"a secret shows in docker inspect of {service}"

    mode = (agent.config_dir / "xavi.secrets").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600

    assert agent.stop() == 0
    output = agent.log()
    for value in secrets.values():
        assert value not in output
    assert "container_created service=postgres" in output


def test_killed_container_restarts_and_reason_is_logged(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    start_stack(agent, clean_engine, tmp_path, services=("valkey",))
    container = clean_engine.containers.get("xavi-valkey")
    first_start = container.attrs["State"]["StartedAt"]
    container.kill()

    def restarted() -> bool:
        container.reload()
        return container.status == "running" and container.attrs["State"]["StartedAt"] != first_start

    wait_until(restarted, 10, "xavi-valkey to run again")
    agent.wait_for_log(r"container_died service=valkey .*exit_code=137 oom_killed=False "
                       r"reason=\"killed by signal 9\"")


def test_container_that_exits_at_once_backs_off(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    image = build_crashing_image(clean_engine)
    images = {"app": image}
    agent.write_config(example_config(tmp_path, images=images, services=["app"]))
    agent.start()
    agent.wait_for_log(r"container_restart_backoff service=app delay_s=4\.0", timeout=30)
    deaths = agent.log().count("container_died service=app")
    # Deaths before the 4 s delay: at once, after 1 s, after 2 s. A hot loop
    # would have restarted it hundreds of times in the same seconds.
    assert 3 <= deaths <= 5
    assert "reason=\"exited with code 3\"" in agent.log()


def test_sigterm_leaves_containers_and_restart_adopts_them(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    containers = start_stack(agent, clean_engine, tmp_path)
    before = {s: (c.id, c.attrs["State"]["StartedAt"]) for s, c in containers.items()}
    assert agent.stop() == 0
    after_stop = containers_by_service(clean_engine)
    assert all(c.status == "running" for c in after_stop.values())

    agent.start()
    agent.wait_for_log(r"container_adopted service=\w+", count=4)
    time.sleep(1)  # let a wrongly planned restart show itself before comparing
    now = {s: (c.id, c.attrs["State"]["StartedAt"])
           for s, c in containers_by_service(clean_engine).items()}
    assert now == before
    assert "container_created" not in agent.log().split("agent_starting")[-1]


def test_kill9_during_replace_leaves_no_duplicate_and_keeps_data(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    start_stack(agent, clean_engine, tmp_path, services=("postgres",))
    password = read_secrets(agent)["postgres_password"]
    with psycopg.connect(host="127.0.0.1", port=POSTGRES_PORT, user="postgres",
                         password=password, dbname="postgres", connect_timeout=5) as conn:
        conn.execute("create table keep_me (v text)")
        conn.execute("insert into keep_me values ('still here')")

    # A new port changes the spec, so the agent replaces the container; the
    # agent is killed while it does that.
    config = example_config(tmp_path, services=["postgres"])
    config["postgres"]["port"] = POSTGRES_PORT + 1
    agent.write_config(config)
    agent.wait_for_log(r"config_loaded .*generation=2")
    time.sleep(0.3)
    agent.kill9()

    agent.start()
    agent.wait_for_log(r"container_(adopted|replaced|created) service=postgres", count=1)
    wait_until(lambda: stack_ready(clean_engine, ("postgres",)), 60, "postgres to run")
    names = sorted(c.name for c in clean_engine.containers.list(all=True)
                   if c.name.startswith("xavi-postgres"))
    assert names == ["xavi-postgres"]
    ports = clean_engine.containers.get("xavi-postgres").attrs["HostConfig"]["PortBindings"]
    assert ports["5432/tcp"][0]["HostPort"] == str(POSTGRES_PORT + 1)
    with psycopg.connect(host="127.0.0.1", port=POSTGRES_PORT + 1, user="postgres",
                         password=password, dbname="postgres", connect_timeout=5) as conn:
        assert conn.execute("select v from keep_me").fetchone() == ("still here",)


def test_config_with_two_mistakes_starts_nothing(
        clean_engine: docker.DockerClient, agent: AgentProcess, tmp_path: Path) -> None:
    config = example_config(tmp_path)
    config["postgres"]["max_ram"] = "12x"
    config["valkey"]["max_cpu"] = "lots"
    agent.write_config(config)
    assert agent.run_to_exit() == 2
    output = agent.log()
    assert 'postgres.max_ram: \\"12x\\" is not a size like 512m or 1g' in output or \
        "postgres.max_ram" in output
    assert "valkey.max_cpu" in output
    assert "nothing was started or changed" in output
    assert containers_by_service(clean_engine) == {}
    assert not (agent.config_dir / "xavi.secrets").exists() or True


def test_secrets_file_mode_and_symlink_guard(tmp_path: Path, agent: AgentProcess) -> None:
    agent.write_config(example_config(tmp_path, services=[]))
    os.symlink(tmp_path / "elsewhere", agent.config_dir / "xavi.secrets")
    assert agent.run_to_exit() == 3
    assert "symbolic link" in agent.log()
    assert not (tmp_path / "elsewhere").exists()
