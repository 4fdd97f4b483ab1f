"""A real serf agent and gossip-only Xavi agents in one mesh, on loopback.

serf is Debian's package 0.9.4, built on the same memberlist 0.2.2 that
Xavi speaks. Xavi advertises serf's delegate protocol range (2-5) and
encodes its metadata as serf tags (a ``0xff`` byte, then a msgpack map), so
``serf members`` lists Xavi nodes with their ``xavi`` and ``services`` tags.
serf's own traffic (intents, user events, queries) travels in memberlist
user messages, which Xavi decodes and ignores.

Each ``SerfAgent`` runs ``serf agent`` on free loopback ports with the Xavi
node's cluster key. Its output is drained from a thread, and it is stopped
by PID (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from xavi_node import XaviNode, cluster_key, free_port, gossip_restarts, wait_until

from xavi import __version__
from xavi.actors import gossip_io
from xavi.actors.messages import ConfigChanged, ServiceHealth
from xavi.config import validate
from xavi.protocol.messages import Message, User

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SERF = shutil.which("serf")
CONVERGE = 20.0
"""Seconds a membership change may take to show on every side (LAN timing)."""
COMMAND_TIMEOUT = 10.0
"""Seconds one serf CLI call may take."""
STOP_TIMEOUT = 10.0
"""Seconds a serf agent gets to exit after SIGTERM before it is killed."""
SERF_USER_EVENT = 3
SERF_QUERY = 4
"""serf's message types (first byte of a memberlist user message) for user events and queries."""
EXPECTED_XAVI_WARNINGS = ("service_missing",)
"""Warnings a gossip-only agent logs anyway: it runs no Postgres or Valkey, and no peer does."""

class SerfAgent:
    """One ``serf agent`` process; ``stop`` ends it by PID."""

    def __init__(self, workdir: Path, name: str, key: str, *, retry_join: str | None = None
                 ) -> None:
        assert SERF is not None
        self.name = name
        self.port = free_port()
        self.rpc_port = free_port()
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [SERF, "agent", f"-node={name}", f"-bind=127.0.0.1:{self.port}",
                f"-rpc-addr=127.0.0.1:{self.rpc_port}", f"-encrypt={key}",
                "-profile=lan", "-log-level=debug"]
        if retry_join is not None:
            args += [f"-retry-join={retry_join}", "-retry-interval=1s"]
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self._drain = threading.Thread(target=self._drain_output, name=f"serf-{name}",
                                       daemon=True)
        self._drain.start()
        self.wait_output("Serf agent running!")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _drain_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_output(self, text: str, timeout: float = CONVERGE) -> str:
        """Return the first output line containing ``text``; fail if none comes in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None
                                      and not self._drain.is_alive()):
                    raise AssertionError(f"serf {self.name} printed no line containing {text!r}"
                                         f" (exit code {self.process.poll()}); output:\n"
                                         + "\n".join(self.lines[-40:]))
                self._changed.wait(min(remaining, 0.2))

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a serf CLI command against this agent's RPC address."""
        assert SERF is not None
        return subprocess.run([SERF, args[0], f"-rpc-addr=127.0.0.1:{self.rpc_port}", *args[1:]],
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              check=False)

    def members(self) -> dict[str, dict[str, Any]]:
        """Return name -> member record from ``serf members -format json``."""
        result = self.command("members", "-format=json")
        assert result.returncode == 0, f"serf members failed: {result.stderr}"
        return {m["name"]: m for m in json.loads(result.stdout)["members"]}

    def problems(self) -> list[str]:
        """Return the output lines that report errors, or warnings of memberlist."""
        with self._changed:
            return [line for line in self.lines
                    if "[ERR]" in line or "[WARN] memberlist" in line]

    def stop(self) -> None:
        """Send SIGTERM to the agent's PID, then SIGKILL if it has not exited in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)
        self._drain.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def serf_status(agent: SerfAgent, name: str) -> str | None:
    member = agent.members().get(name)
    return None if member is None else str(member["status"])


@pytest.fixture
def start_serf(tmp_path: Path) -> Iterator[Callable[..., SerfAgent]]:
    if SERF is None:
        pytest.fail("serf is not installed; run apt-get install serf")
    agents: list[SerfAgent] = []

    def start(name: str, key: str, **options: Any) -> SerfAgent:
        agent = SerfAgent(tmp_path, name, key, **options)
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        agent.stop()


@pytest.fixture
def xavi_warnings() -> Iterator[list[str]]:
    """Xavi's log lines at WARNING and above, except the expected ones, as ``LEVEL event ...``."""
    lines: list[str] = []

    def keep(message: Any) -> None:
        text = str(message)
        if not any(f" {event}" in text for event in EXPECTED_XAVI_WARNINGS):
            lines.append(text.rstrip("\n"))

    sink = logger.add(keep, level="WARNING", format="{level} {message}")
    yield lines
    logger.remove(sink)


def test_serf_joins_xavi_and_lists_its_tags(
        start_xavi: Callable[..., XaviNode], start_serf: Callable[..., SerfAgent],
        xavi_warnings: list[str]) -> None:
    node = start_xavi("py-1")
    serf = start_serf("serf-1", cluster_key(node), retry_join=node.address)

    wait_until(lambda: serf_status(serf, "py-1") == "alive", CONVERGE, "serf to list py-1")
    wait_until(lambda: node.members().get("serf-1") == "alive", CONVERGE,
               "py-1 to list serf-1")
    member = serf.members()["py-1"]
    assert member["addr"] == node.address
    assert member["tags"] == {"xavi": __version__, "services": ""}
    assert member["protocol"]["min"] == 2
    assert member["protocol"]["max"] == 5

    # A healthy local service changes the services tag, and serf lists the new value.
    raw = dict(node.config)
    raw["services"] = ["postgres"]
    node.gossip().tell(ConfigChanged(validate(raw), 99))
    node.gossip().tell(ServiceHealth("postgres", True, True))
    wait_until(lambda: serf.members()["py-1"]["tags"].get("services") == "postgres=5432",
               CONVERGE, "serf to see py-1's services tag")
    assert serf.members()["py-1"]["status"] == "alive"

    assert serf.problems() == []
    assert xavi_warnings == []
    assert node.status()["rejected_inputs"] == 0


def test_xavi_joins_serf_from_its_peers(
        start_xavi: Callable[..., XaviNode], start_serf: Callable[..., SerfAgent],
        tmp_path: Path, xavi_warnings: list[str]) -> None:
    from xavi.secrets import ensure_secrets

    secrets = tmp_path / "shared.secrets"
    ensure_secrets(secrets)
    key = str(json.loads(secrets.read_text())["cluster_key"])
    serf = start_serf("serf-1", key)
    node = start_xavi("py-1", peers=[serf.address], secrets_from=secrets)

    wait_until(lambda: node.members().get("serf-1") == "alive", CONVERGE,
               "py-1 to join serf-1")
    wait_until(lambda: serf_status(serf, "py-1") == "alive", CONVERGE, "serf to list py-1")
    assert serf.members()["py-1"]["tags"]["xavi"] == __version__
    assert serf.members()["serf-1"]["status"] == "alive"
    assert serf.problems() == []
    assert xavi_warnings == []


@pytest.fixture
def user_message_kinds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """First bytes of the user messages that Xavi nodes of this process decode from UDP."""
    kinds: list[int] = []
    decode = gossip_io.decode_packet

    def spy(data: bytes, **options: Any) -> list[Message]:
        messages = decode(data, **options)
        kinds.extend(m.payload[0] for m in messages if isinstance(m, User) and m.payload)
        return messages

    monkeypatch.setattr(gossip_io, "decode_packet", spy)
    return kinds


def test_serf_events_and_queries_leave_xavi_healthy(
        start_xavi: Callable[..., XaviNode], start_serf: Callable[..., SerfAgent],
        user_message_kinds: list[int], xavi_warnings: list[str]) -> None:
    node = start_xavi("py-1")
    serf = start_serf("serf-1", cluster_key(node), retry_join=node.address)
    wait_until(lambda: serf_status(serf, "py-1") == "alive", CONVERGE, "serf to list py-1")

    for i in range(5):
        sent = serf.command("event", f"deploy-{i}", f"payload {i}")
        assert sent.returncode == 0, sent.stderr
    # The query runs for its whole timeout, long enough for several gossip rounds.
    query = serf.command("query", "-timeout=2s", "-format=json", "uptime", "now")
    assert query.returncode == 0, query.stderr
    query_result = json.loads(query.stdout)
    serf.wait_output("Received event: user-event: deploy-4")
    assert SERF_USER_EVENT in user_message_kinds
    assert SERF_QUERY in user_message_kinds

    # Xavi does not respond to serf queries, so only serf-1 itself acknowledges this one.
    assert "py-1" not in (query_result.get("Acks") or [])
    assert "py-1" not in (query_result.get("Responses") or {})
    status = node.status()
    assert status["rejected_inputs"] == 0
    assert {m["name"]: m["state"] for m in status["members"]} == {
        "py-1": "alive", "serf-1": "alive"}
    assert gossip_restarts(node) == 0
    assert serf_status(serf, "py-1") == "alive"
    assert serf.problems() == []
    assert xavi_warnings == []


def test_serf_leave_is_seen_as_left(
        start_xavi: Callable[..., XaviNode], start_serf: Callable[..., SerfAgent],
        xavi_warnings: list[str]) -> None:
    node = start_xavi("py-1")
    serf = start_serf("serf-1", cluster_key(node), retry_join=node.address)
    wait_until(lambda: node.members().get("serf-1") == "alive", CONVERGE,
               "py-1 to list serf-1")

    left = serf.command("leave")
    assert left.returncode == 0, left.stderr
    serf.process.wait(timeout=STOP_TIMEOUT)
    wait_until(lambda: node.members().get("serf-1") == "left", CONVERGE,
               "py-1 to see serf-1 leave")
    assert serf.problems() == []
    assert xavi_warnings == []


# TODO(serf-leave-intent): serf shows a stopped Xavi node as failed, because
# Xavi sends no serf leave intent (a serf user message). serf treats a leave as
# graceful only after that intent, and memberlist's own leave is not enough.
@pytest.mark.xfail(reason="Xavi sends no serf leave intent, so serf reports its leave as "
                          "EventMemberFailed")
def test_xavi_leave_is_seen_as_left_by_serf(
        start_xavi: Callable[..., XaviNode], start_serf: Callable[..., SerfAgent]) -> None:
    first = start_xavi("py-1")
    second = start_xavi("py-2", peers=[first.address])
    serf = start_serf("serf-1", cluster_key(first), retry_join=first.address)
    wait_until(lambda: serf_status(serf, "py-2") == "alive", CONVERGE, "serf to list py-2")

    def status_once_gone() -> str | None:
        status = serf_status(serf, "py-2")
        return None if status == "alive" else status

    second.stop()
    status = wait_until(status_once_gone, CONVERGE, "serf to list py-2 as gone")
    assert status == "left"
    assert not any("EventMemberFailed: py-2" in line for line in serf.lines)


def test_serf_rejects_plain_delegate_protocol(
        start_xavi: Callable[..., XaviNode], start_serf: Callable[..., SerfAgent],
        xavi_warnings: list[str]) -> None:
    node = start_xavi("py-1", delegate_protocol="plain")
    serf = start_serf("serf-1", cluster_key(node))

    joined = serf.command("join", node.address)
    assert joined.returncode != 0
    incompatible = "Node 'py-1' delegate protocol version (0) is incompatible: [2, 0]"
    assert incompatible in joined.stderr + joined.stdout
    serf.wait_output(f"Failed to join 127.0.0.1: {incompatible}")

    node.write_config(peers=[serf.address])
    wait_until(lambda: any("gossip_peer_incompatible" in line for line in xavi_warnings),
               CONVERGE, "py-1 to report serf-1 as incompatible")
    warning = next(line for line in xavi_warnings if "gossip_peer_incompatible" in line)
    assert "delegate protocol version 5" in warning
    assert "cluster.delegate_protocol" in warning
    serf.wait_output(f"Failed push/pull merge: {incompatible}")

    assert set(node.members()) == {"py-1"}
    assert set(serf.members()) == {"serf-1"}
