"""A test rig of N simulated hosts on one machine, each with its own Docker Engine.

Each host is a network namespace ``xavi-hostA``, ``xavi-hostB``, ... joined by a
veth pair (``xv-hostA`` in the root namespace, ``eth0`` inside) to the bridge
``xavibr0`` (10.77.0.1/24). Hosts get 10.77.0.11, .12, ... and no default
route, so their traffic reaches only the other hosts and the bridge address.
Each host runs ``tini -- dockerd`` as PID 1 of its own PID, mount and UTS
namespaces (hostname = host name), entered with ``nsenter --net`` because
``ip netns exec`` remounts /sys and hides the cgroup v1 mounts. When that PID 1
dies, the kernel kills every other process of the namespace (dockerd,
containerd, the containers, the Xavi agent), which models a power failure, and
Docker's mounts vanish with the mount namespace. Each dockerd has its own
data-root, exec-root, pid file, socket, engine key (so its own engine ID),
``--bip 172.30.N.1/24`` and ``--cgroup-parent``. A port published on host B's
address is reached from a container on host A through Docker's ordinary NAT,
as between real hosts. The only rule added to the root namespace is
``iptables -I FORWARD -i xavibr0 -o xavibr0 -j ACCEPT``, because the main
engine sets the FORWARD policy to DROP and br_netfilter filters bridged frames.

Use::

    rig = Rig(3)                  # or the ``rig`` fixture of conftest.py
    rig.start()                   # about 16 s with all four local images
    host_b = rig.host("hostB")    # .address, .docker_host, .docker(), .run(), .popen()
    host_b.start_agent(rig.agent_config(host_b, ["valkey"]))
    host_b.partition(); host_b.heal(); rig.hosts[0].cut_from(host_b)
    host_b.poweroff(); host_b.boot()
    rig.stop()

``a.cut_from(b)`` drops at a every packet from b's address (raw PREROUTING in
a's namespace), a one-way cut; ``heal_from`` undoes it. Network faults model
the wire, so they survive poweroff and boot.

State lives in a work folder (default ``/var/tmp/xavi-rig-XXXXXXXX``)::

    rig.json            what the rig created: names, PIDs with start times
    hostA/data          dockerd data-root (images survive poweroff and boot)
    hostA/exec          exec-root, wiped before each boot
    hostA/docker.sock   the engine's socket (Host.docker_host)
    hostA/dockerd.log
    hostA/agent/        config/xavi.json, config/xavi.secrets (0600), state/
    hostA/agent.log

``Rig.stop()`` removes only what ``rig.json`` records: it kills each host's
PID 1 (checked by PID and start time), then removes the cgroups under the
host's ``--cgroup-parent``, the veth, the namespace, the bridge, the FORWARD
rule and the work folder. It can be called again, and it defers Ctrl-C until
it is done. One rig at a time per machine, because the bridge and namespace
names are fixed.

Measured on a 2-core VM with a load average of 8 from other test runs, a
3-host boot takes 15.6 to 16.3 s. Of that, 13 to 14 s is ``docker load`` of the
four images (310 MB) into the three engines in parallel. The 2.4 s ``docker
save`` overlaps the dockerd starts, and the engines respond after 1 to 2 s.
Each host costs about 85 MiB RSS in dockerd and 37 MiB in containerd.

Command line (``scripts/multihost.sh`` wraps it)::

    python -m tests.multihost.rig up N | down | status | exec HOST CMD... |
                                  partition HOST | heal HOST | poweroff HOST | boot HOST
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

# TODO(multihost): split this file into process helpers, Host, and Rig with its
# command line (about 400 lines each), because this change was limited to four files.

REPO = Path(__file__).resolve().parents[2]
BRIDGE = "xavibr0"
BRIDGE_ADDRESS = "10.77.0.1"
FIRST_HOST_OCTET = 11
MAX_HOSTS = 26  # hostA .. hostZ
FORWARD_RULE = ("FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT")
LOCAL_IMAGES = {
    "postgres": "xavi-local/postgres:15",
    "valkey": "xavi-local/valkey:8",
    "app": "xavi-local/app:latest",
    "backupbot": "xavi-local/backupbot:latest",
}
GOSSIP_PORT = 7946
STATE_FILE = "rig.json"
CLI_WORKDIR = Path(os.environ.get("XAVI_RIG_DIR", "/var/tmp/xavi-rig-cli"))
READY_TIMEOUT = 30.0
"""Seconds a dockerd may take to respond to /_ping (about 1 s measured on a 2-core VM)."""
LONGEST_SOCKET = "/hostZ/exec/containerd/containerd.sock.ttrpc"
"""The longest Unix socket path below the work folder; Linux limits the whole path to 107 bytes."""
MAX_WORKDIR_LENGTH = 107 - len(LONGEST_SOCKET)
REQUIRED_TOOLS = ("ip", "iptables", "nsenter", "unshare", "tini", "dockerd", "docker")


class RigError(Exception):
    """The rig failed to build, change or tear down a host; the message names the next step."""


# Processes -------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """Return (state, start time in clock ticks) of a live PID, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


@dataclass(frozen=True)
class ProcessId:
    """A process named by PID and start time, so a reused PID is never taken for it."""

    pid: int
    start_time: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        stat = _proc_stat(pid)
        return None if stat is None else cls(pid, stat[1])

    def alive(self) -> bool:
        stat = _proc_stat(self.pid)
        return stat is not None and stat[1] == self.start_time and stat[0] != "Z"

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def wait_gone(self, timeout: float) -> bool:
        """Wait on a pidfd until the process exits; return whether it did."""
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return True
        try:
            if not self.alive():
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            poller.poll(int(timeout * 1000))
            return not self.alive()
        finally:
            os.close(fd)


def children(pid: int) -> list[int]:
    """Return the PIDs of a process's children, over all of its threads."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            listing = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue  # the thread or the process exited
        found += [int(child) for child in listing.split()]
    return found


def descendants(pid: int) -> list[int]:
    """Return a process and all of its descendants, parents first."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue += children(current)
    return found


def rss_kib(pid: int) -> int | None:
    """Return a process's resident set size in KiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; raise RigError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_command(argv: Sequence[str], *, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a root-namespace command; with ``check``, raise RigError with its stderr on failure."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, check=False)
    if check and result.returncode != 0:
        raise RigError(f"'{' '.join(argv)}' failed with exit code {result.returncode}: "
                       f"{result.stderr.strip()}")
    return result


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _disable_ipv6(interface: str) -> None:
    """Turn IPv6 off on a root-namespace interface so it sends no link-local traffic."""
    path = Path(f"/proc/sys/net/ipv6/conf/{interface}/disable_ipv6")
    if path.exists():
        path.write_text("1")


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Defer Ctrl-C while the block runs (main thread only), then raise KeyboardInterrupt if it came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` atomically with a file created with ``mode`` from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


# Hosts -----------------------------------------------------------------------

@dataclass
class HostProcess:
    """A command started inside a host by ``nsenter``, which stays its parent outside."""

    popen: subprocess.Popen[bytes]
    inner: ProcessId | None
    """The command itself, by root-namespace PID; None if it exited before it was seen."""

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def send_signal(self, signum: int) -> None:
        """Signal the command itself (nsenter 2.38 does not forward signals)."""
        if self.inner is not None and self.popen.poll() is None:
            self.inner.kill(signum)


class Host:
    """One simulated host: a network namespace, its veth, and a dockerd as PID 1's child."""

    def __init__(self, rig: Rig, index: int) -> None:
        self.rig = rig
        self.index = index
        self.name = f"host{chr(ord('A') + index)}"
        self.address = f"10.77.0.{FIRST_HOST_OCTET + index}"
        self.netns = f"xavi-{self.name}"
        self.veth = f"xv-{self.name}"
        self.bip = f"172.30.{index + 1}.1/24"
        self.directory = rig.workdir / self.name
        self.docker_host = f"unix://{self.directory}/docker.sock"
        self.cgroup_parent = f"{rig.workdir.name}-{self.name}"
        self.created: set[str] = set()
        """Network objects this rig created for the host: ``netns`` and ``veth``."""
        self.init: ProcessId | None = None
        """PID 1 of the host's PID namespace (tini); None while powered off."""
        self.unshare: ProcessId | None = None
        self._unshare_popen: subprocess.Popen[bytes] | None = None
        self.agent: HostProcess | None = None
        self._processes: list[HostProcess] = []
        self._client: Any = None

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} {'on' if self.powered_on else 'off'}>"

    @property
    def powered_on(self) -> bool:
        return self.init is not None and self.init.alive()

    # Network ------------------------------------------------------------------

    def create_network(self) -> None:
        run_command(["ip", "netns", "add", self.netns])
        self.created.add("netns")
        self.rig.save()
        run_command(["ip", "link", "add", self.veth, "type", "veth",
                     "peer", "name", "eth0", "netns", self.netns])
        self.created.add("veth")
        self.rig.save()
        _disable_ipv6(self.veth)
        run_command(["ip", "link", "set", self.veth, "master", BRIDGE, "up"])
        self.net_command("sh", "-c", "echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; "
                         "echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6", check=False)
        run_command(["ip", "-n", self.netns, "addr", "add", f"{self.address}/24", "dev", "eth0"])
        run_command(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        run_command(["ip", "-n", self.netns, "link", "set", "eth0", "up"])

    def net_command(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the host's network namespace only (works while powered off)."""
        return run_command(["nsenter", f"--net=/run/netns/{self.netns}", "--", *argv],
                           check=check)

    def partition(self) -> None:
        """Cut the host off from every other host (its cable is pulled)."""
        run_command(["ip", "link", "set", self.veth, "down"])

    def heal(self) -> None:
        run_command(["ip", "link", "set", self.veth, "up"])

    def cut_from(self, other: Host) -> None:
        """Drop at this host every packet from ``other``: a one-way cut.

        TCP between the two fails both ways (replies are lost), UDP from this
        host still reaches ``other``.
        """
        rule = ["PREROUTING", "-s", other.address, "-j", "DROP"]
        if self.net_command("iptables", "-t", "raw", "-C", *rule, check=False).returncode != 0:
            self.net_command("iptables", "-t", "raw", "-I", *rule)

    def heal_from(self, other: Host) -> None:
        rule = ["PREROUTING", "-s", other.address, "-j", "DROP"]
        while self.net_command("iptables", "-t", "raw", "-C", *rule, check=False).returncode == 0:
            self.net_command("iptables", "-t", "raw", "-D", *rule)

    # Power --------------------------------------------------------------------

    def boot(self) -> None:
        """Start the host's PID 1 and dockerd, and wait until the engine responds to /_ping."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        if self.powered_on:
            raise RigError(f"{self.name} is already powered on")
        if self._unshare_popen is not None:
            self._unshare_popen.poll()  # reap the previous boot's unshare if it ended by itself
        shutil.rmtree(self.directory / "exec", ignore_errors=True)
        for stale in ("dockerd.pid", "docker.sock"):
            (self.directory / stale).unlink(missing_ok=True)
        self.directory.mkdir(parents=True, exist_ok=True)

        dockerd = [
            "dockerd", "--data-root", f"{self.directory}/data",
            "--exec-root", f"{self.directory}/exec", "--pidfile", f"{self.directory}/dockerd.pid",
            "-H", self.docker_host, "--bip", self.bip, "--cgroup-parent", f"/{self.cgroup_parent}",
            "--config-file", f"{self.directory}/daemon.json",
        ]
        # The engine ID derives from this key, and the default /etc/docker/key.json
        # would give every host the same ID. The key is kept across boots.
        settings = {"deprecated-key-path": f"{self.directory}/key.json"}
        (self.directory / "daemon.json").write_text(json.dumps(settings))

        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "--",
                "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child",
                "--", "sh", "-c", 'echo "$1" >/proc/sys/kernel/hostname && shift && exec tini -- "$@"',
                "sh", self.name, *dockerd]
        with (self.directory / "dockerd.log").open("ab") as log:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._unshare_popen = popen
        self.unshare = ProcessId.of(popen.pid)
        self.rig.record_started(self.unshare)
        self.rig.save()

        child = wait_until(lambda: children(popen.pid) or popen.poll() is not None, 10,
                           f"{self.name}'s PID 1 to start")
        if popen.poll() is not None:
            raise RigError(f"{self.name} failed to start: {self.dockerd_log_tail()}")
        self.init = ProcessId.of(child[0])
        self.rig.record_started(self.init)
        self.rig.save()

    def wait_ready(self) -> None:
        def answers() -> bool:
            if not self.powered_on:
                raise RigError(f"{self.name}'s dockerd exited during startup: "
                               f"{self.dockerd_log_tail()}")
            return _engine_answers(self.directory / "docker.sock")

        wait_until(answers, READY_TIMEOUT, f"{self.name}'s dockerd on {self.docker_host}")
        self._client = _docker_client(self.docker_host)
        if self.init is not None:
            for pid in descendants(self.init.pid)[1:]:
                self.rig.record_started(ProcessId.of(pid))
        self.rig.save()

    def dockerd_log_tail(self, lines: int = 20) -> str:
        path = self.directory / "dockerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "last lines of dockerd.log:\n" + "\n".join(text.splitlines()[-lines:])

    def poweroff(self, timeout: float = 30) -> None:
        """Kill the host's PID 1, so dockerd, its containers and the agent die at once."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.init is not None:
            self.init.kill()
        elif self.unshare is not None:
            self.unshare.kill()  # --kill-child takes PID 1 down with it
        if self.unshare is not None and not self.unshare.wait_gone(timeout):
            raise RigError(f"{self.name} did not power off within {timeout} s "
                           f"(unshare PID {self.unshare.pid})")
        for popen in [self._unshare_popen, *(p.popen for p in self._processes)]:
            if popen is not None:
                popen.wait(timeout=timeout)  # reap; PID 1's death ended each of them
        self.init = self.unshare = self._unshare_popen = self.agent = None
        self._processes.clear()
        self.rig.save()

    def processes(self) -> list[int]:
        """Return the root-namespace PIDs of every process of the host, PID 1 first.

        These are the members of the host's PID namespace (PID 1's tree and
        commands entered with ``nsenter``) and their descendants (containers).
        """
        if not self.powered_on or self.init is None:
            return []
        try:
            namespace = os.readlink(f"/proc/{self.init.pid}/ns/pid")
        except OSError:
            return []
        members = [self.init.pid]
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != self.init.pid:
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == namespace:
                        members.append(int(entry))
                except OSError:
                    continue  # exited during the scan
        found: dict[int, None] = {}
        for member in members:
            found.update(dict.fromkeys(descendants(member)))
        return list(found)

    def dockerd_pid(self) -> int | None:
        for pid in self.processes()[1:]:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd":
                return pid
        return None

    def docker(self) -> Any:
        """Return this host's docker SDK client (valid until the next poweroff)."""
        if self._client is None:
            raise RigError(f"{self.name} is powered off; boot it first")
        return self._client

    # Commands inside the host --------------------------------------------------

    def _enter(self, cwd: str | Path | None) -> list[str]:
        if not self.powered_on or self.init is None:
            raise RigError(f"{self.name} is powered off; boot it first")
        return ["nsenter", f"--target={self.init.pid}", "--net", "--mount", "--uts", "--pid",
                f"--wd={cwd or os.getcwd()}", "--"]

    def run(self, cmd: str | Sequence[str], *, check: bool = False, timeout: float = 120,
            cwd: str | Path | None = None, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespaces; a string runs through ``sh -c``."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return subprocess.run(self._enter(cwd) + argv, capture_output=True, text=True,
                              timeout=timeout, check=check, input=input)

    def popen(self, cmd: Sequence[str], *, stdout: IO[Any] | int | None = None,
              stderr: IO[Any] | int | None = None, cwd: str | Path | None = None,
              env: dict[str, str] | None = None) -> HostProcess:
        """Start a long-running command inside the host; it dies when the host powers off."""
        popen = subprocess.Popen(self._enter(cwd) + list(cmd), stdin=subprocess.DEVNULL,
                                 stdout=stdout, stderr=stderr, env=env, start_new_session=True)
        found = wait_until(lambda: children(popen.pid) or popen.poll() is not None, 10,
                           f"{cmd[0]} to start inside {self.name}")
        inner = ProcessId.of(found[0]) if isinstance(found, list) else None
        self.rig.record_started(ProcessId.of(popen.pid))
        self.rig.record_started(inner)
        process = HostProcess(popen, inner)
        self._processes.append(process)
        return process

    # The Xavi agent -----------------------------------------------------------

    @property
    def agent_dir(self) -> Path:
        return self.directory / "agent"

    def start_agent(self, config: dict[str, Any], secrets: dict[str, Any] | None = None,
                    *extra_args: str) -> HostProcess:
        """Write the config and secrets, then start ``python -m xavi`` inside the host.

        Missing ``cluster.advertise_addr``, ``bind_addr`` and ``node_name`` are
        set to this host's; ``secrets`` defaults to the rig's shared secrets.
        """
        if self.agent is not None and self.agent.poll() is None:
            raise RigError(f"the agent on {self.name} is already running; stop it first")
        config = copy.deepcopy(config)
        cluster = config.setdefault("cluster", {})
        cluster.setdefault("advertise_addr", self.address)
        cluster.setdefault("bind_addr", self.address)
        cluster.setdefault("node_name", self.name)
        config_dir = self.agent_dir / "config"
        _write_atomically(config_dir / "xavi.json", json.dumps(config, indent=2), 0o644)
        shared = self.rig.secrets if secrets is None else secrets
        _write_atomically(config_dir / "xavi.secrets", json.dumps(shared, indent=2), 0o600)
        argv = [sys.executable, "-m", "xavi", "--config-dir", str(config_dir),
                "--state-dir", str(self.agent_dir / "state"), "--docker-host", self.docker_host,
                "--socket", str(self.agent_dir / "xavi.sock"), "--log-level", "DEBUG",
                *extra_args]
        with (self.directory / "agent.log").open("ab") as log:
            self.agent = self.popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        return self.agent

    def stop_agent(self, timeout: float = 30) -> int | None:
        """Stop the agent with SIGTERM; return its exit code (None if none was started)."""
        if self.agent is None:
            return None
        self.agent.send_signal(signal.SIGTERM)
        return self.agent.wait(timeout=timeout)

    def kill_agent(self) -> int | None:
        if self.agent is None:
            return None
        self.agent.send_signal(signal.SIGKILL)
        return self.agent.wait(timeout=30)

    def agent_log(self) -> str:
        path = self.directory / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for_agent_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = regex.search(self.agent_log())
            if match is None and self.agent is not None and self.agent.poll() is not None:
                raise RigError(f"the agent on {self.name} exited with {self.agent.poll()} "
                               f"before logging {pattern!r}:\n{self.agent_log()[-3000:]}")
            return match

        match: re.Match[str] = wait_until(found, timeout,
                                          f"{self.name}'s agent log to match {pattern!r}", 0.1)
        return match

    # Teardown -----------------------------------------------------------------

    def remove_cgroups(self) -> None:
        """Remove the cgroups dockerd made under ``--cgroup-parent``, deepest first."""
        for top in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            folders = sorted((p for p in top.rglob("*") if p.is_dir()),
                             key=lambda p: len(p.parts), reverse=True)
            for folder in [*folders, top]:
                wait_until(functools.partial(_try_rmdir, folder), 10, f"rmdir {folder}")

    def remove_network(self) -> None:
        if "veth" in self.created and _link_exists(self.veth):
            run_command(["ip", "link", "del", self.veth])
        self.created.discard("veth")
        if "netns" in self.created and Path(f"/run/netns/{self.netns}").exists():
            run_command(["ip", "netns", "del", self.netns])
        self.created.discard("netns")
        self.rig.save()

    def record(self) -> dict[str, Any]:
        return {"created": sorted(self.created), "init": _pair(self.init),
                "unshare": _pair(self.unshare)}

    def restore(self, record: dict[str, Any]) -> None:
        self.created = set(record["created"])
        self.init = _process(record["init"])
        self.unshare = _process(record["unshare"])
        if self.powered_on:
            self._client = _docker_client(self.docker_host)


def _engine_answers(path: Path) -> bool:
    """Return whether a Docker Engine responds to ``GET /_ping`` on the Unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(5)
            connection.connect(str(path))
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = connection.recv(4096)
    except OSError:
        return False  # no socket yet, or nothing listening on it
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def _docker_client(url: str) -> Any:
    import docker  # imported late: the command line's down and status work without the SDK

    return docker.DockerClient(base_url=url, timeout=30)


def _try_rmdir(folder: Path) -> bool:
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # EBUSY while the kernel finishes killing the cgroup's tasks
    return True


def _pair(process: ProcessId | None) -> list[int] | None:
    return None if process is None else [process.pid, process.start_time]


def _process(pair: list[int] | None) -> ProcessId | None:
    return None if pair is None else ProcessId(pair[0], pair[1])


# The rig ---------------------------------------------------------------------

class Rig:
    """N hosts on the bridge ``xavibr0``; ``start()`` builds them, ``stop()`` removes all of it."""

    def __init__(self, n: int, workdir: str | Path | None = None, *,
                 images: Sequence[str] = tuple(LOCAL_IMAGES.values())) -> None:
        if not 1 <= n <= MAX_HOSTS:
            raise RigError(f"a rig has 1 to {MAX_HOSTS} hosts, not {n}")
        if workdir is None:
            workdir = Path("/var/tmp") / f"xavi-rig-{os.urandom(4).hex()}"
        self.workdir = Path(workdir).absolute()
        if len(str(self.workdir).encode()) > MAX_WORKDIR_LENGTH:
            raise RigError(f"work folder {self.workdir} is longer than {MAX_WORKDIR_LENGTH} bytes, "
                           "so containerd's sockets below it would exceed the 107-byte limit "
                           "of Unix socket paths; use a shorter folder")
        self.created_workdir = not self.workdir.exists()
        """Whether ``stop()`` removes the work folder itself, not only what is in it."""
        self.images = tuple(images)
        self.hosts = [Host(self, index) for index in range(n)]
        self.owner = ProcessId.of(os.getpid())
        """The process whose rig this is; None for a command-line rig that outlives its process."""
        self.secrets: dict[str, Any] = {}
        """The ``xavi.secrets`` content that ``start_agent`` gives every host by default."""
        self.created: set[str] = set()
        """What this rig made: ``files`` in the work folder, ``bridge``, ``forward_rule``."""
        self.started: list[ProcessId] = []
        self.timings: dict[str, float] = {}
        """Seconds spent in each step of ``start()``: network, dockerd, images, total."""
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise RigError(f"no host {name!r}; this rig has {', '.join(h.name for h in self.hosts)}")

    def record_started(self, process: ProcessId | None) -> None:
        if process is not None:
            with self._lock:
                self.started.append(process)

    def start(self) -> None:
        """Build the bridge and every host, boot their engines and load the images."""
        begin = time.monotonic()
        try:
            self._check_machine()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.created.add("files")
            self.secrets = _generate_secrets()
            self.save()
            self._create_bridge()
            for host in self.hosts:
                host.create_network()
            self.timings["network"] = time.monotonic() - begin
            with ThreadPoolExecutor(max_workers=1) as pool:
                saved = pool.submit(self._save_images)
                for host in self.hosts:
                    host.spawn()
                for host in self.hosts:
                    host.wait_ready()
                self.timings["dockerd"] = time.monotonic() - begin - self.timings["network"]
                archive = saved.result()
            self._load_images(archive)
            self.timings["total"] = time.monotonic() - begin
        except BaseException:
            self.stop()
            raise

    def _check_machine(self) -> None:
        if os.geteuid() != 0:
            raise RigError("the rig creates namespaces and a bridge, so it must run as root")
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            raise RigError(f"missing commands {', '.join(missing)}; run scripts/install-deps.sh")
        in_use = [name for name in [BRIDGE, *(h.veth for h in self.hosts)] if _link_exists(name)]
        in_use += [h.netns for h in self.hosts if Path(f"/run/netns/{h.netns}").exists()]
        if in_use:
            raise RigError(f"{', '.join(in_use)} already exist: another rig is running or was not "
                           "torn down; see 'scripts/multihost.sh status', then "
                           "'scripts/multihost.sh down'")
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise RigError(f"{self.workdir} is not empty: a rig may be using it; "
                           "give an empty or new folder")
        absent = [image for image in self.images
                  if run_command(["docker", "image", "inspect", image], check=False).returncode]
        if absent:
            raise RigError(f"images missing from the main engine: {', '.join(absent)}; "
                           "run 'bash scripts/build-images.sh'")

    # NOTE: the bridge address 10.77.0.1 is the root namespace, so hosts can reach
    # root-namespace services that listen on every address (0.0.0.0).
    def _create_bridge(self) -> None:
        run_command(["ip", "link", "add", BRIDGE, "type", "bridge"])
        self.created.add("bridge")
        self.save()
        _disable_ipv6(BRIDGE)
        run_command(["ip", "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", BRIDGE])
        run_command(["ip", "link", "set", BRIDGE, "up"])
        run_command(["iptables", "-I", *FORWARD_RULE])
        self.created.add("forward_rule")
        self.save()

    def _remove_bridge(self) -> None:
        if "forward_rule" in self.created:
            run_command(["iptables", "-D", *FORWARD_RULE])
            self.created.discard("forward_rule")
        if "bridge" in self.created and _link_exists(BRIDGE):
            run_command(["ip", "link", "del", BRIDGE])
        self.created.discard("bridge")

    def _save_images(self) -> Path:
        begin = time.monotonic()
        archive = self.workdir / "images.tar"
        run_command(["docker", "save", "-o", str(archive), *self.images])
        self.timings["image_save"] = time.monotonic() - begin
        return archive

    # TODO(multihost): share read-only image layers between the hosts' data-roots,
    # because docker load into each engine is 13 of the 16 s of a 3-host boot.
    def _load_images(self, archive: Path) -> None:
        begin = time.monotonic()

        def load(host: Host) -> None:
            run_command(["docker", "--host", host.docker_host, "load", "-q", "-i", str(archive)])

        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(load, self.hosts))
        archive.unlink()
        self.timings["image_load"] = time.monotonic() - begin

    def agent_config(self, host: Host, services: Sequence[str],
                     peers: Sequence[Host] | None = None, **sections: Any) -> dict[str, Any]:
        """Return an agent config for ``host``: local images, the given services, the mesh.

        ``peers`` defaults to every other host, at its gossip port.
        """
        others = [h for h in self.hosts if h is not host] if peers is None else peers
        config: dict[str, Any] = {
            "images": dict(LOCAL_IMAGES),
            "services": list(services),
            "cluster": {"advertise_addr": host.address, "bind_addr": host.address,
                        "node_name": host.name,
                        "peers": [f"{peer.address}:{GOSSIP_PORT}" for peer in others]},
        }
        config.update(sections)
        return config

    def stop(self) -> None:
        """Remove everything the rig recorded; safe to call again and after a failed start."""
        problems: list[str] = []

        def attempt(step: Callable[[], None]) -> None:
            try:
                step()
            except (RigError, OSError, subprocess.SubprocessError) as exc:
                problems.append(str(exc))

        with deferred_sigint():
            for host in self.hosts:  # kill every host first so they die in parallel
                for process in (host.init, host.unshare):
                    if process is not None:
                        process.kill()
            for host in self.hosts:
                attempt(host.poweroff)
                attempt(host.remove_cgroups)
                attempt(host.remove_network)
            attempt(self._remove_bridge)
            if problems:
                self.save()
                raise RigError("teardown was incomplete; run 'scripts/multihost.sh down' after "
                               "fixing the cause: " + "; ".join(problems))
            if "files" in self.created and self.created_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            elif "files" in self.created and self.workdir.exists():
                for path in self.workdir.iterdir():  # start() found the folder empty
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            self.created.discard("files")

    # State file -----------------------------------------------------------------

    def save(self) -> None:
        """Write ``rig.json``; only once ``start()`` found the work folder empty and took it."""
        if "files" not in self.created or not self.workdir.exists():
            return
        state = {"n": len(self.hosts), "owner": _pair(self.owner), "created": sorted(self.created),
                 "created_workdir": self.created_workdir, "images": list(self.images),
                 "started": [_pair(p) for p in self.started],
                 "hosts": {host.name: host.record() for host in self.hosts}}
        _write_atomically(self.workdir / STATE_FILE, json.dumps(state, indent=1), 0o600)

    @classmethod
    def load(cls, workdir: Path) -> Rig:
        """Rebuild a rig from the ``rig.json`` another process wrote (for the command line)."""
        try:
            state = json.loads((workdir / STATE_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise RigError(f"no readable rig state in {workdir}: {exc}") from None
        rig = cls(state["n"], workdir, images=state["images"])
        rig.created_workdir = state["created_workdir"]
        rig.owner = _process(state["owner"])
        rig.created = set(state["created"])
        rig.started = [ProcessId(pid, start) for pid, start in state["started"]]
        for host in rig.hosts:
            host.restore(state["hosts"][host.name])
        return rig

    def stale(self) -> bool:
        """Whether the process that owned this rig is gone (a killed test run)."""
        return self.owner is not None and not self.owner.alive()


def _generate_secrets() -> dict[str, str]:
    from xavi.secrets import generate_cluster_key, generate_password

    return {"postgres_password": generate_password(), "valkey_password": generate_password(),
            "cluster_key": generate_cluster_key()}


# Command line ----------------------------------------------------------------

def known_rigs() -> list[Path]:
    """Return the work folders of every rig on this machine that left a ``rig.json``."""
    found = {CLI_WORKDIR} | set(Path("/var/tmp").glob("xavi-rig-*"))
    return sorted(folder for folder in found if (folder / STATE_FILE).exists())


def _print_status(rig: Rig) -> None:
    owner = "command line" if rig.owner is None else f"PID {rig.owner.pid}"
    print(f"rig {rig.workdir} (owner {owner}{', gone: stale' if rig.stale() else ''})")
    for host in rig.hosts:
        link = "absent"
        if _link_exists(host.veth):
            link = Path(f"/sys/class/net/{host.veth}/operstate").read_text().strip()
        dockerd = host.dockerd_pid()
        rss = rss_kib(dockerd) if dockerd else None
        print(f"  {host.name:6} {host.address:11} link {link:6} "
              f"{'on ' if host.powered_on else 'off'} dockerd {dockerd or '-'} "
              f"rss {f'{rss // 1024} MiB' if rss else '-'} "
              f"DOCKER_HOST={host.docker_host}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="multihost.sh", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="build N hosts").add_argument("n", type=int)
    commands.add_parser("down", help="tear down the command-line rig and every stale rig")
    commands.add_parser("status", help="list rigs and their hosts")
    run = commands.add_parser("exec", help="run a command inside a host")
    run.add_argument("host")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    for name in ("partition", "heal", "poweroff", "boot"):
        commands.add_parser(name, help=f"{name} a host").add_argument("host")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            rig = Rig(args.n, CLI_WORKDIR)
            rig.owner = None
            rig.start()
            _print_status(rig)
            steps = (f"{step} {seconds:.1f} s" for step, seconds in rig.timings.items())
            print("timings: " + ", ".join(steps))
            return 0
        if args.command in ("down", "status"):
            for folder in known_rigs():
                rig = Rig.load(folder)
                if args.command == "status":
                    _print_status(rig)
                elif folder == CLI_WORKDIR or rig.stale():
                    rig.stop()
                    print(f"removed rig {folder}")
                else:
                    owner = rig.owner.pid if rig.owner else "?"
                    print(f"left rig {folder} alone: its owner PID {owner} is running")
            return 0
        host = Rig.load(CLI_WORKDIR).host(args.host)
        if args.command == "exec":
            os.execvp("nsenter", host._enter(None) + (args.cmd or ["sh"]))
        getattr(host, args.command)()
        return 0
    except RigError as exc:
        print(f"multihost: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
