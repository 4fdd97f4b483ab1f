"""Fixtures for tests against the real Docker Engine and the locally built images.

The engine and the images come from ``scripts/setup.sh`` (run by
``.ci/run``). Each test starts from an engine without Xavi's containers and
volumes and removes them again afterwards, touching only objects that carry
Xavi's label or its volume names.
"""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from tests.support import free_port, wait_until
from xavi.docker_api import LABEL_MANAGED

__all__ = ["free_port", "wait_until"]  # re-exported for the test modules

IMAGES = {
    "postgres": "xavi-local/postgres:15",
    "valkey": "xavi-local/valkey:8",
    "app": "xavi-local/app:latest",
    "backupbot": "xavi-local/backupbot:latest",
}
POSTGRES_PORT = 25432
VALKEY_PORT = 26379
VOLUMES = ("xavi-postgres-data", "xavi-valkey-data")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker Engine: {exc}; run 'bash scripts/setup.sh' first")
    missing = [image for image in IMAGES.values() if not _image_present(client, image)]
    if missing:
        pytest.fail(f"local images missing: {missing}; run 'bash scripts/build-images.sh'")
    yield client
    client.close()


def _image_present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False


def remove_xavi_objects(client: docker.DockerClient) -> None:
    """Remove Xavi's containers (by label) and its named volumes."""
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        container.remove(force=True)
    for name in VOLUMES:
        try:
            client.volumes.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass


@pytest.fixture
def clean_engine(engine: docker.DockerClient) -> Iterator[docker.DockerClient]:
    remove_xavi_objects(engine)
    yield engine
    remove_xavi_objects(engine)


def example_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Return the README's example config pointed at the local images and test ports."""
    config: dict[str, Any] = {
        "docker": {"registry": "docker.io"},
        "images": dict(IMAGES),
        "valkey": {"max_ram": "128m", "max_cpu": "0.5", "port": VALKEY_PORT},
        "postgres": {"max_ram": "256m", "max_cpu": "1.0",
                     "storage_path": str(tmp_path / "pgdata"), "port": POSTGRES_PORT},
        "cluster": {"bind_port": 17946, "advertise_addr": "127.0.0.1", "node_name": "test-node"},
    }
    config.update(overrides)
    return config


@dataclass
class AgentProcess:
    """``python -m xavi`` in a subprocess, its log in a file."""

    config_dir: Path
    state_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    outputs: list[str] = field(default_factory=list)

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        path = self.config_dir / "xavi.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(config, indent=2))
        temporary.replace(path)

    def start(self, *extra: str) -> None:
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "xavi", "--config-dir", str(self.config_dir),
             "--state-dir", str(self.state_dir), "--log-level", "DEBUG", *extra],
            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
        )
        handle.close()

    def run_to_exit(self, *extra: str, timeout: float = 30) -> int:
        self.start(*extra)
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 30, count: int = 1) -> str:
        regex = re.compile(pattern)

        def found() -> str | None:
            matches = regex.findall(self.log())
            if len(matches) >= count:
                return str(matches[-1])
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"agent exited with {self.process.returncode} before "
                                     f"logging {pattern!r}:\n{self.log()[-3000:]}")
            return None

        return str(wait_until(found, timeout, f"log line matching {pattern!r}"))

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProcess]:
    handle = AgentProcess(tmp_path / "cfg", tmp_path / "state", tmp_path / "agent.log")
    yield handle
    if handle.process is not None and handle.process.poll() is None:
        handle.process.kill()
        handle.process.wait(timeout=10)


def containers_by_service(client: docker.DockerClient) -> dict[str, Any]:
    """Return Xavi's containers keyed by service label."""
    found = {}
    for summary in client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"}):
        try:
            container = client.containers.get(summary["Id"])
        except docker.errors.NotFound:
            continue  # removed between the listing and the inspection
        found[container.labels["org.tripleclabs.xavi.service"]] = container
    return found


def stack_ready(client: docker.DockerClient, services: tuple[str, ...]) -> dict[str, Any] | None:
    """Return the containers once every service runs and providers report healthy."""
    found = containers_by_service(client)
    if set(found) != set(services):
        return None
    for name, container in found.items():
        try:
            container.reload()
        except docker.errors.NotFound:
            return None
        state = container.attrs["State"]
        if state["Status"] != "running":
            return None
        if name in ("postgres", "valkey") and state.get("Health", {}).get("Status") != "healthy":
            return None
    return found


def build_crashing_image(client: docker.DockerClient) -> str:
    """Build (once) an image that exits with code 3 as soon as it starts."""
    tag = "xavi-test/crashes-at-once:1"
    if not _image_present(client, tag):
        dockerfile = f"FROM {IMAGES['app']}\nENTRYPOINT []\nCMD [\"/bin/sh\", \"-c\", \"exit 3\"]\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag



@pytest.fixture(autouse=True)
def control_socket_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every agent a test starts at a control socket of its own (``XAVI_SOCKET``).

    Without it, agents started by tests would share ``/run/xavi/xavi.sock`` with
    each other and with a real agent, and the second of two would refuse to start.
    """
    path = tmp_path / "run" / "xavi.sock"
    monkeypatch.setenv("XAVI_SOCKET", str(path))
    return path
