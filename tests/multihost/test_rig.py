"""The multi-host rig builds isolated hosts, injects faults and leaves nothing behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.multihost.rig import (
    BRIDGE,
    LOCAL_IMAGES,
    REPO,
    Host,
    ProcessId,
    Rig,
    RigError,
    run_command,
    wait_until,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

VALKEY = LOCAL_IMAGES["valkey"]
VALKEY_ONLY = [{"n": 3, "images": [VALKEY]}]


def start_valkey(host: Host) -> Any:
    """Run Valkey on ``host``, published at its address, and wait until it responds."""
    container = host.docker().containers.run(
        VALKEY, detach=True, name="published-valkey",
        ports={"6379/tcp": (host.address, 6379)})
    wait_until(lambda: b"PONG" in container.exec_run(["valkey-cli", "ping"]).output, 30,
               f"Valkey on {host.name} to respond locally")
    return container


def start_probe(host: Host) -> Any:
    """Run an idle Valkey container on ``host`` whose valkey-cli probes other hosts."""
    return host.docker().containers.run(VALKEY, detach=True, entrypoint=["sleep", "infinity"])


def pings(probe: Any, address: str, *extra: str) -> bool:
    """Return whether Valkey at ``address``:6379 replies PONG within 3 s."""
    result = probe.exec_run(["timeout", "3", "valkey-cli", "-h", address, "-p", "6379",
                             *extra, "ping"])
    return result.exit_code == 0 and b"PONG" in result.output


def leftovers(workdir: Path, processes: list[ProcessId]) -> list[str]:
    """Return every trace of a stopped rig that is still on the machine."""
    found = []
    namespaces = run_command(["ip", "netns", "list"]).stdout
    found += [line for line in namespaces.splitlines() if line.startswith("xavi-host")]
    links = run_command(["ip", "-o", "link"]).stdout
    found += [f"link {name}" for name in (BRIDGE, "xv-host") if f" {name}" in links]
    forward = run_command(["iptables", "-S", "FORWARD"]).stdout
    found += [f"iptables {line}" for line in forward.splitlines() if BRIDGE in line]
    found += [str(path) for path in Path("/sys/fs/cgroup").glob(f"*/{workdir.name}-*")]
    found += [f"workdir {workdir}"] if workdir.exists() else []
    found += [f"PID {process.pid}" for process in processes if process.alive()]
    return found


def test_hosts_boot_with_own_engines(rig: Rig) -> None:
    ids = set()
    for host in rig.hosts:
        info = host.docker().info()
        ids.add(info["ID"])
        assert info["Name"] == host.name
        tags = {tag for image in host.docker().images.list() for tag in image.tags}
        assert tags == set(LOCAL_IMAGES.values())
        assert host.run(["hostname"]).stdout.strip() == host.name
        assert f"inet {host.address}/24" in host.run(["ip", "-4", "addr", "show", "eth0"]).stdout
    assert len(ids) == 3
    assert [host.address for host in rig.hosts] == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]


@pytest.mark.parametrize("rig", VALKEY_ONLY, indirect=True)
def test_hosts_have_no_route_out_of_rig(rig: Rig) -> None:
    for host in rig.hosts:
        routes = host.run(["ip", "-4", "route"], check=True).stdout
        assert "default" not in routes
        assert "10.77.0.0/24 dev eth0" in routes


@pytest.mark.parametrize("rig", VALKEY_ONLY, indirect=True)
def test_published_port_crosses_hosts_until_partition(rig: Rig) -> None:
    host_a, host_b = rig.hosts[0], rig.hosts[1]
    start_valkey(host_b)
    probe = start_probe(host_a)
    assert wait_until(lambda: pings(probe, host_b.address), 15, "A to reach B's Valkey")

    host_b.partition()
    assert not pings(probe, host_b.address)

    host_b.heal()
    assert wait_until(lambda: pings(probe, host_b.address), 15, "A to reach B after heal")


@pytest.mark.parametrize("rig", VALKEY_ONLY, indirect=True)
def test_cut_from_drops_only_that_peer(rig: Rig) -> None:
    host_a, host_b, host_c = rig.hosts
    start_valkey(host_a)
    from_b, from_c = start_probe(host_b), start_probe(host_c)
    assert wait_until(lambda: pings(from_b, host_a.address), 15, "B to reach A")

    host_a.cut_from(host_b)
    assert not pings(from_b, host_a.address)
    assert pings(from_c, host_a.address)

    host_a.heal_from(host_b)
    assert wait_until(lambda: pings(from_b, host_a.address), 15, "B to reach A after heal_from")


@pytest.mark.parametrize("rig", VALKEY_ONLY, indirect=True)
def test_poweroff_kills_host_and_boot_restores(rig: Rig) -> None:
    host_a, host_b = rig.hosts[0], rig.hosts[1]
    start_valkey(host_b)
    probe = start_probe(host_a)
    before = [ProcessId.of(pid) for pid in host_b.processes()]
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in host_b.processes()}
    assert {"dockerd", "containerd", "valkey-server"} <= names

    host_b.poweroff()
    assert [process for process in before if process and process.alive()] == []
    assert not host_b.powered_on
    assert not pings(probe, host_b.address)
    assert host_a.docker().ping()

    host_b.boot()
    assert host_b.docker().ping()
    assert {tag for image in host_b.docker().images.list() for tag in image.tags} == {VALKEY}
    host_b.docker().containers.get("published-valkey").start()
    assert wait_until(lambda: pings(probe, host_b.address), 30, "A to reach B after boot")


@pytest.mark.parametrize("rig", [{"n": 2, "images": [VALKEY]}], indirect=True)
def test_agent_runs_inside_host_and_dies_with_it(rig: Rig) -> None:
    host_a, host_b = rig.hosts
    agent = host_b.start_agent(rig.agent_config(host_b, ["valkey"], peers=[]))
    secrets = host_b.agent_dir / "config" / "xavi.secrets"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert agent.inner is not None and agent.inner.pid in host_b.processes()

    probe = start_probe(host_a)
    password = rig.secrets["valkey_password"]
    try:
        wait_until(lambda: pings(probe, host_b.address, "--no-auth-warning", "-a", password),
                   90, "A to reach the agent's Valkey on B")
    except RigError as exc:
        pytest.fail(f"{exc}; agent log:\n{host_b.agent_log()[-3000:]}")

    host_b.poweroff()
    assert agent.poll() is not None
    assert not agent.inner.alive()


def test_stop_leaves_nothing_behind() -> None:
    rig = Rig(2, images=[VALKEY])
    try:
        rig.start()
        start_valkey(rig.hosts[0])
        sleeper = rig.hosts[1].popen(["sleep", "infinity"])
        processes = [*rig.started, *(ProcessId.of(pid) for h in rig.hosts for pid in h.processes())]
        assert sleeper.inner in processes
    finally:
        rig.stop()
    assert leftovers(rig.workdir, [p for p in processes if p is not None]) == []
    rig.stop()  # a second stop is harmless


@pytest.mark.parametrize("rig", [{"n": 1, "images": [VALKEY]}], indirect=True)
def test_start_rejects_second_rig(rig: Rig) -> None:
    second = Rig(1, images=[VALKEY])
    with pytest.raises(RigError, match="already exist"):
        second.start()
    assert not second.workdir.exists()
    assert rig.hosts[0].docker().ping()
    state = json.loads((rig.workdir / "rig.json").read_text())
    assert state["hosts"]["hostA"]["init"] is not None


def test_rig_rejects_long_workdir() -> None:
    with pytest.raises(RigError, match="longer than"):
        Rig(1, Path("/var/tmp") / ("x" * 100))


def test_start_rejects_non_empty_workdir() -> None:
    workdir = Path(f"/var/tmp/xavi-rig-test-{os.urandom(4).hex()}")
    keep = workdir / "keep.txt"
    workdir.mkdir()
    keep.write_text("not the rig's")
    try:
        with pytest.raises(RigError, match="is not empty"):
            Rig(1, workdir, images=[VALKEY]).start()
        assert keep.read_text() == "not the rig's"
        assert sorted(workdir.iterdir()) == [keep]
    finally:
        shutil.rmtree(workdir)
    assert leftovers(workdir, []) == []


def test_interrupted_start_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    real_wait_ready = Host.wait_ready

    def interrupt_on_second_host(host: Host) -> None:
        if host.index == 1:
            raise KeyboardInterrupt
        real_wait_ready(host)

    monkeypatch.setattr(Host, "wait_ready", interrupt_on_second_host)
    rig = Rig(2, images=[VALKEY])
    with pytest.raises(KeyboardInterrupt):
        rig.start()
    assert len(rig.started) >= 4
    assert leftovers(rig.workdir, rig.started) == []


INNER_TEST = """
    import json, threading
    import pytest
    from tests.multihost.conftest import rig

    @pytest.mark.parametrize("rig", [{{"n": 1, "images": ["{image}"]}}], indirect=True)
    def test_inner(rig):
        rig.hosts[0].popen(["sleep", "infinity"])
        report = {{"workdir": str(rig.workdir),
                   "started": [[p.pid, p.start_time] for p in rig.started]}}
        with open("{report}", "w") as handle:
            json.dump(report, handle)
        {ending}
"""


@pytest.mark.parametrize(("ending", "outcome"), [
    ("assert False", "1 failed"),
    ("threading.Event().wait()", "KeyboardInterrupt"),
], ids=["failed-test", "ctrl-c"])
def test_fixture_tears_down_after_failure(tmp_path: Path, ending: str, outcome: str) -> None:
    report = tmp_path / "report.json"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST.format(
        image=VALKEY, report=report, ending=ending)))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    inner = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until(lambda: report.exists() or inner.poll() is not None, 60, "the inner test to run")
    if ending != "assert False":
        inner.send_signal(signal.SIGINT)
    output = inner.communicate(timeout=60)[0].decode(errors="replace")
    assert inner.returncode != 0, output
    assert outcome in output
    state = json.loads(report.read_text())
    started = [ProcessId(pid, start) for pid, start in state["started"]]
    assert leftovers(Path(state["workdir"]), started) == [], output


def test_command_line_drives_rig() -> None:
    workdir = Path(f"/var/tmp/xavi-rig-test-{os.urandom(4).hex()}")  # tmp_path is too long
    environment = {**os.environ, "XAVI_RIG_DIR": str(workdir)}

    def multihost(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(REPO / "scripts" / "multihost.sh"), *args],
                              env=environment, capture_output=True, text=True, timeout=300,
                              check=False)

    try:
        up = multihost("up", "2")
        assert up.returncode == 0, up.stderr
        assert "DOCKER_HOST=unix://" in up.stdout
        assert multihost("exec", "hostB", "hostname").stdout.strip() == "hostB"

        assert multihost("partition", "hostB").returncode == 0
        assert re.search(r"hostB +10\.77\.0\.12 +link down", multihost("status").stdout)
        assert multihost("heal", "hostB").returncode == 0
        assert re.search(r"hostB +10\.77\.0\.12 +link up", multihost("status").stdout)

        assert multihost("poweroff", "hostB").returncode == 0
        rejected = multihost("exec", "hostB", "true")
        assert rejected.returncode == 1
        assert "hostB is powered off" in rejected.stderr
        assert multihost("boot", "hostB").returncode == 0
        assert multihost("exec", "hostB", "docker", "--host", "unix://" + str(
            workdir / "hostB" / "docker.sock"), "info").returncode == 0
    finally:
        down = multihost("down")
    assert down.returncode == 0, down.stderr
    assert leftovers(workdir, []) == []
