"""The control socket of a real agent: permissions, peers, bad frames, one agent per socket.

These tests run ``python -m xavi`` with no services enabled, so they need no
Docker Engine; the tests of faults on a running stack are in
``test_control_faults.py``. Clients that must run as another user are forked
children that drop to uid 65534 (``nobody``), because the interpreter under
``/root`` cannot be executed by that user.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pykka
import pytest

from tests.integration.conftest import AgentProcess, free_port, wait_until
from xavi.actors.control import ControlSettings
from xavi.actors.control_path import SocketSettings
from xavi.actors.supervisor import SupervisorSettings
from xavi.ctl import EXIT_NOT_RUNNING, EXIT_PERMISSION, CtlError, call
from xavi.ctl import main as ctl_main
from xavi.main import EXIT_SOCKET, Agent
from xavi.protocol.control_frames import MAX_REQUEST_BYTES, read_frame

pytestmark = [pytest.mark.slow]

NOBODY = 65534
NOGROUP = grp.getgrnam("nogroup").gr_gid


def gossip_only_config(node: str = "ctl-test") -> dict[str, Any]:
    return {"services": [], "cluster": {"node_name": node, "bind_port": free_port(),
                                        "bind_addr": "127.0.0.1",
                                        "advertise_addr": "127.0.0.1"}}


def status_works(path: Path) -> bool:
    try:
        return bool(call(path, "status", timeout=5)["ok"])
    except CtlError:
        return False


def start_agent(agent: AgentProcess, socket_path: Path, *extra: str) -> None:
    agent.write_config(gossip_only_config())
    agent.start("--socket", str(socket_path), *extra)
    wait_until(lambda: status_works(socket_path), 20, "the control socket to answer status")


def raw_exchange(path: Path, data: bytes, shut: bool = True) -> dict[str, Any] | None:
    """Send raw bytes, then read one frame back (None when the agent just closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(path))
        conn.sendall(data)
        if shut:
            conn.shutdown(socket.SHUT_WR)
        return read_frame(conn, 1 << 20)


def call_as(uid: int, gid: int, path: Path, cmd: str) -> dict[str, Any]:
    """Run ``call(path, cmd)`` in a forked child that dropped to ``uid``/``gid``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            try:
                answer: dict[str, Any] = call(path, cmd, timeout=5)
            except CtlError as exc:
                answer = {"ctl_error": str(exc), "exit_code": exc.exit_code}
            os.write(write_end, json.dumps(answer).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        data = reader.read()
    os.waitpid(pid, 0)
    return dict(json.loads(data))


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder that uid 65534 can traverse (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="xavi-ctl-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# Modes and peers ----------------------------------------------------------------


def test_socket_is_private_by_default(agent: AgentProcess, control_socket_in_tmp: Path) -> None:
    start_agent(agent, control_socket_in_tmp)

    socket_mode = os.stat(control_socket_in_tmp).st_mode
    folder_mode = os.stat(control_socket_in_tmp.parent).st_mode

    assert stat.S_ISSOCK(socket_mode)
    assert stat.S_IMODE(socket_mode) == 0o600
    assert stat.S_IMODE(folder_mode) == 0o700


def test_socket_group_opens_to_group(agent: AgentProcess, control_socket_in_tmp: Path) -> None:
    start_agent(agent, control_socket_in_tmp, "--socket-group", "nogroup")

    found = os.stat(control_socket_in_tmp)
    folder = os.stat(control_socket_in_tmp.parent)

    assert stat.S_IMODE(found.st_mode) == 0o660
    assert found.st_gid == NOGROUP
    assert stat.S_IMODE(folder.st_mode) == 0o750
    assert folder.st_gid == NOGROUP


def test_other_uid_is_stopped_by_file_mode(agent: AgentProcess, open_dir: Path) -> None:
    path = open_dir / "run" / "xavi.sock"
    start_agent(agent, path)
    (open_dir / "run").chmod(0o755)  # leaves the socket's own mode 0600 as the only guard

    answer = call_as(NOBODY, NOGROUP, path, "status")

    assert answer["exit_code"] == EXIT_PERMISSION
    assert "permission denied" in answer["ctl_error"]


def test_other_uid_is_refused_by_credentials(agent: AgentProcess, open_dir: Path) -> None:
    path = open_dir / "run" / "xavi.sock"
    start_agent(agent, path)
    (open_dir / "run").chmod(0o755)
    path.chmod(0o666)  # a mistake by hand: the peer check must still refuse

    answer = call_as(NOBODY, NOGROUP, path, "status")

    assert answer["ok"] is False
    assert answer["code"] == "permission_denied"
    assert f"uid {NOBODY}" in answer["error"]
    agent.wait_for_log(rf"control_peer_rejected uid={NOBODY}")
    assert status_works(path)


def test_group_member_is_allowed(agent: AgentProcess, open_dir: Path) -> None:
    path = open_dir / "run" / "xavi.sock"
    start_agent(agent, path, "--socket-group", "nogroup")
    (open_dir / "run").chmod(0o755)

    answer = call_as(NOBODY, NOGROUP, path, "status")

    assert answer["ok"] is True
    assert answer["result"]["node"] == "ctl-test"


def test_bundle_is_refused_to_non_root(agent: AgentProcess, open_dir: Path) -> None:
    path = open_dir / "run" / "xavi.sock"
    start_agent(agent, path, "--socket-group", "nogroup")
    (open_dir / "run").chmod(0o755)

    answer = call_as(NOBODY, NOGROUP, path, "bundle")

    assert answer["ok"] is False
    assert answer["code"] == "permission_denied"
    assert call(path, "bundle")["ok"] is True


# One agent per socket -------------------------------------------------------------


def test_second_agent_refuses_to_start(agent: AgentProcess, control_socket_in_tmp: Path,
                                       tmp_path: Path) -> None:
    start_agent(agent, control_socket_in_tmp)
    second = AgentProcess(tmp_path / "cfg2", tmp_path / "state2", tmp_path / "agent2.log")
    second.write_config(gossip_only_config("second"))

    code = second.run_to_exit("--socket", str(control_socket_in_tmp), timeout=20)

    assert code == EXIT_SOCKET
    assert "another Xavi agent" in second.log()
    assert f"pid {agent.process.pid if agent.process else ''}" in second.log()
    assert not (tmp_path / "cfg2" / "xavi.secrets").exists()
    assert status_works(control_socket_in_tmp)


def test_agent_refuses_socket_served_by_other_program(agent: AgentProcess,
                                                      control_socket_in_tmp: Path) -> None:
    control_socket_in_tmp.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as squatter:
        squatter.bind(str(control_socket_in_tmp))
        squatter.listen(1)
        agent.write_config(gossip_only_config())

        code = agent.run_to_exit("--socket", str(control_socket_in_tmp), timeout=20)

    assert code == EXIT_SOCKET
    assert "already listening" in agent.log()


def test_stale_socket_is_replaced_after_kill9(agent: AgentProcess,
                                              control_socket_in_tmp: Path) -> None:
    start_agent(agent, control_socket_in_tmp)
    agent.kill9()
    assert stat.S_ISSOCK(os.lstat(control_socket_in_tmp).st_mode)
    assert ctl_main(["--socket", str(control_socket_in_tmp), "status"]) == EXIT_NOT_RUNNING

    agent.start("--socket", str(control_socket_in_tmp))

    wait_until(lambda: status_works(control_socket_in_tmp), 20, "the new agent to answer")
    agent.wait_for_log("control_socket_stale_replaced")


def test_clean_stop_removes_socket(agent: AgentProcess, control_socket_in_tmp: Path) -> None:
    start_agent(agent, control_socket_in_tmp)

    assert agent.stop() == 0
    assert not control_socket_in_tmp.exists()


def test_ctl_without_agent_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "nothing.sock"

    code = ctl_main(["--socket", str(path), "status"])

    assert code == EXIT_NOT_RUNNING
    assert f"no agent is listening on {path}: is xavi running?" in capsys.readouterr().err


# Bad input ------------------------------------------------------------------------


BAD_FRAMES = {
    "garbage": b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1",
    "not a map": struct.pack(">I", 3) + msgpack.packb([1, 2]),
    "truncated": struct.pack(">I", 100) + b"\x81",
    "oversized": struct.pack(">I", MAX_REQUEST_BYTES + 1) + b"\x00" * 4096,
    "huge": struct.pack(">I", 0xFFFFFFFF),
    "half header": b"\x00\x00",
}


@pytest.fixture
def serving(agent: AgentProcess, control_socket_in_tmp: Path) -> Path:
    start_agent(agent, control_socket_in_tmp)
    return control_socket_in_tmp


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_bad_frame_gets_error_and_agent_serves_on(serving: Path, agent: AgentProcess,
                                                  name: str) -> None:
    answer = raw_exchange(serving, BAD_FRAMES[name])

    assert answer is not None
    assert answer["ok"] is False
    assert answer["code"] == "bad_frame"
    assert status_works(serving)
    assert agent.process is not None and agent.process.poll() is None


def test_oversized_payload_sent_whole_still_gets_error(serving: Path) -> None:
    payload = msgpack.packb({"cmd": "status", "pad": "x" * (4 * MAX_REQUEST_BYTES)})

    answer = raw_exchange(serving, struct.pack(">I", len(payload)) + payload, shut=False)

    assert answer is not None
    assert answer["code"] == "bad_frame"
    assert status_works(serving)


@pytest.mark.parametrize(("request_map", "code"), [
    ({"args": {}}, "bad_request"),
    ({"cmd": 5}, "bad_request"),
    ({"cmd": "status", "args": [1]}, "bad_request"),
    ({"cmd": "launch"}, "unknown_command"),
    ({"cmd": "restart", "args": {}}, "bad_request"),
    ({"cmd": "keys", "args": {"op": "install", "key": "short"}}, "failed"),
    ({"cmd": "fault", "args": {"kind": "crash", "actor": "config"}},
     "fault_injection_disabled"),
])
def test_bad_request_gets_error_code(serving: Path, request_map: dict[str, Any],
                                     code: str) -> None:
    payload = msgpack.packb(request_map)

    answer = raw_exchange(serving, struct.pack(">I", len(payload)) + payload)

    assert answer is not None
    assert answer["ok"] is False
    assert answer["code"] == code


def test_silent_connection_times_out(serving: Path) -> None:
    started = time.monotonic()

    answer = raw_exchange(serving, b"\x00\x00\x00\x10", shut=False)

    assert answer is not None
    assert answer["code"] == "timeout"
    assert 4.0 < time.monotonic() - started < 8.0
    assert status_works(serving)


def test_connection_flood_is_limited_and_survived(serving: Path) -> None:
    held = []
    try:
        for _ in range(40):
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.settimeout(5)
            conn.connect(str(serving))
            held.append(conn)
        busy = 0
        for conn in held[16:]:
            answer = read_frame(conn, 1 << 20)
            busy += bool(answer and answer.get("code") == "busy")
        assert busy == len(held) - 16
    finally:
        for conn in held:
            conn.close()
    wait_until(lambda: status_works(serving), 10, "status after the flood")


def test_several_requests_on_one_connection(serving: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(str(serving))
        for cmd in ("status", "services", "members"):
            payload = msgpack.packb({"cmd": cmd, "args": {}})
            conn.sendall(struct.pack(">I", len(payload)) + payload)
            answer = read_frame(conn, 1 << 20)
            assert answer is not None
            assert answer["ok"] is True, answer


# Commands without Docker --------------------------------------------------------


def test_keys_rotation_through_socket(serving: Path, agent: AgentProcess) -> None:
    import base64

    key = base64.b64encode(os.urandom(32)).decode()
    secrets_path = agent.config_dir / "xavi.secrets"
    old_primary = json.loads(secrets_path.read_text())["cluster_key"]

    installed = call(serving, "keys", {"op": "install", "key": key})
    used = call(serving, "keys", {"op": "use", "key": key})
    removed = call(serving, "keys", {"op": "remove", "key": old_primary})

    assert installed["ok"], installed
    assert used["ok"], used
    assert removed["ok"], removed
    assert used["result"]["gossip"] == "notified"
    on_disk = json.loads(secrets_path.read_text())
    assert on_disk["cluster_key"] == key
    assert on_disk.get("extra_cluster_keys", []) == []
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600
    assert key not in agent.log()


def test_reload_reports_rejected_config(serving: Path, agent: AgentProcess) -> None:
    (agent.config_dir / "xavi.json").write_text('{"services": ["postgres", "nope"]}')

    answer = call(serving, "reload")

    assert answer["ok"] is False
    assert answer["code"] == "config_rejected"
    assert "nope" in answer["error"]


def test_members_without_gossip_answers_note(tmp_path: Path) -> None:
    path = tmp_path / "inproc.sock"
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "xavi.json").write_text(json.dumps(gossip_only_config()))
    agent = Agent(config_dir, tmp_path / "state", None,
                  control=ControlSettings(SocketSettings(path), config_dir))
    agent.child_specs = lambda: [s for s in Agent.child_specs(agent)  # type: ignore[method-assign]
                                 if s.name != "gossip"]
    agent.start()
    try:
        wait_until(lambda: status_works(path), 10, "the in-process agent")

        answer = call(path, "members")
    finally:
        agent.stop()
        pykka.ActorRegistry.stop_all()

    assert answer["result"] == {"members": [], "note": "gossip not running"}


def test_stop_leaves_no_control_thread(tmp_path: Path) -> None:
    path = tmp_path / "inproc.sock"
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "xavi.json").write_text(json.dumps(gossip_only_config()))
    agent = Agent(config_dir, tmp_path / "state", None,
                  control=ControlSettings(SocketSettings(path), config_dir))
    agent.start()
    wait_until(lambda: status_works(path), 10, "the in-process agent")
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(path))  # a connection that sends nothing keeps a handler thread busy
    try:
        agent.stop()
    finally:
        idle.close()
        pykka.ActorRegistry.stop_all()

    left = [t.name for t in threading.enumerate() if t.name.startswith("xavi-control")]
    assert left == []
    assert not path.exists()


def test_sigterm_stops_agent_with_open_connection(agent: AgentProcess,
                                                  control_socket_in_tmp: Path) -> None:
    start_agent(agent, control_socket_in_tmp)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(control_socket_in_tmp))
        agent.signal(signal.SIGTERM)

        assert agent.stop(timeout=20) == 0
    assert "control_threads_left" not in agent.log()


# Faults of the GossipActor ------------------------------------------------------

@pytest.fixture
def inproc_agent(tmp_path: Path) -> Iterator[Path]:
    """An in-process agent without services, fault injection on, short supervisor timings."""
    path = tmp_path / "inproc.sock"
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "xavi.json").write_text(json.dumps(gossip_only_config()))
    settings = SupervisorSettings(ping_interval=0.2, ping_timeout=1.5, backoff_base=0.1,
                                  backoff_max=1.0)
    agent = Agent(config_dir, tmp_path / "state", None, settings,
                  control=ControlSettings(SocketSettings(path), config_dir, True))
    agent.start()
    try:
        wait_until(lambda: status_works(path), 10, "the in-process agent")
        yield path
    finally:
        agent.stop()
        pykka.ActorRegistry.stop_all()


def gossip_row(path: Path) -> dict[str, Any] | None:
    try:
        answer = call(path, "status", timeout=5)
    except CtlError:
        return None
    return next((a for a in answer["result"]["actors"] if a["name"] == "gossip"), None)


@pytest.mark.parametrize("fault", [{"kind": "crash"}, {"kind": "hang", "seconds": 4.0}])
def test_gossip_actor_recovers_from_fault(inproc_agent: Path, fault: dict[str, Any]) -> None:
    answer = call(inproc_agent, "fault", {"actor": "gossip", **fault})

    assert answer["ok"], answer
    wait_until(lambda: (gossip_row(inproc_agent) or {}).get("restarts", 0) >= 1, 5,
               "the gossip actor to be restarted")
    wait_until(lambda: (row := gossip_row(inproc_agent)) and row["state"] == "running"
               and row["status"] is not None, 8, "the gossip actor to run again")
    assert (gossip_row(inproc_agent) or {})["restarts"] == 1
    # The new instance binds the port once the old one has released it.
    wait_until(lambda: [m["name"] for m in call(inproc_agent, "members")["result"]["members"]]
               == ["ctl-test"], 10, "the restarted gossip actor to list its node")
