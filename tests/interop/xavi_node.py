"""Gossip-only Xavi agents run in this process, for mixed clusters with Go peers.

Each ``XaviNode`` is a real agent minus Docker: a supervisor with the
secrets, config, discovery and gossip actors, reading its own config dir
(``"services": []``) and binding real loopback sockets.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, cast

import pykka

from tests.support import free_port, wait_until
from xavi.actors.config_actor import ConfigActor
from xavi.actors.discovery import DiscoveryActor
from xavi.actors.gossip import GossipActor
from xavi.actors.messages import GetChildRefs, GetStatus, Inject, InjectCrash
from xavi.actors.secrets_actor import SecretsActor
from xavi.actors.supervisor import ChildSpec, Supervisor, SupervisorSettings
from xavi.secrets import ensure_secrets

__all__ = ["XaviNode", "cluster_key", "free_port", "gossip_restarts", "wait_until"]


class XaviNode:
    """One gossip-only agent; ``stop`` leaves the mesh, ``kill`` vanishes without a word."""

    def __init__(self, workdir: Path, name: str, *, secrets_from: Path | None = None,
                 peers: list[str] | None = None, timing: str = "lan",
                 port: int | None = None, delegate_protocol: str = "serf") -> None:
        self.name = name
        self.port = port or free_port()
        self.config_dir = workdir / name
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.config = {
            "services": [],
            "cluster": {"bind_addr": "127.0.0.1", "advertise_addr": "127.0.0.1",
                        "bind_port": self.port, "node_name": name, "peers": peers or [],
                        "timing": timing, "delegate_protocol": delegate_protocol},
        }
        (self.config_dir / "xavi.json").write_text(json.dumps(self.config))
        secrets = self.config_dir / "xavi.secrets"
        if secrets_from is not None:
            shutil.copy(secrets_from, secrets)
            secrets.chmod(0o600)
        else:
            ensure_secrets(secrets)
        self.secrets_path = secrets
        config_dir = self.config_dir
        specs = [
            ChildSpec("secrets", lambda sup: SecretsActor.start(sup, config_dir)),
            ChildSpec("config", lambda sup: ConfigActor.start(sup, config_dir)),
            ChildSpec("discovery", lambda sup: DiscoveryActor.start(sup),
                      DiscoveryActor.subscriptions),
            ChildSpec("gossip", lambda sup: GossipActor.start(sup), GossipActor.subscriptions),
        ]
        self.supervisor = Supervisor.start(
            specs, settings=SupervisorSettings(ping_interval=0.5, backoff_base=0.05))
        self.wait_running()

    def wait_running(self, timeout: float = 10.0) -> None:
        """Wait until the gossip actor has bound its sockets."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                refs = self.supervisor.ask(GetChildRefs(), timeout=5)
                if "gossip" in refs and refs["gossip"].ask(GetStatus(), timeout=5)["running"]:
                    return
            except pykka.ActorDeadError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"gossip of {self.name} did not start in {timeout}s")
            time.sleep(0.05)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def gossip(self) -> pykka.ActorRef[Any]:
        refs = self.supervisor.ask(GetChildRefs(), timeout=5)
        return refs["gossip"]

    def members(self) -> dict[str, str]:
        """Return member name -> state as this node's gossip actor sees it."""
        deadline = time.monotonic() + 5
        while True:
            try:
                status = self.gossip().ask(GetStatus(), timeout=5)
                return {m["name"]: m["state"] for m in status["members"]}
            except (KeyError, pykka.ActorDeadError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        return dict(self.gossip().ask(GetStatus(), timeout=5))

    def write_config(self, **cluster: Any) -> None:
        self.config["cluster"].update(cluster)
        path = self.config_dir / "xavi.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.config))
        path.with_suffix(".tmp").replace(path)

    def crash_gossip(self) -> None:
        assert self.supervisor.ask(Inject("gossip", InjectCrash()), timeout=5)

    def stop(self) -> None:
        """Stop the agent; the gossip actor leaves the mesh gracefully."""
        if self.supervisor.is_alive():
            self.supervisor.stop(timeout=20)

    def kill(self) -> None:
        """Drop off the network without a leave, as a crashed host would."""
        refs = self.supervisor.ask(GetChildRefs(), timeout=5)
        gossip = refs["gossip"]
        gossip_actor_sockets_close(gossip)
        self.stop()


def gossip_actor_sockets_close(ref: pykka.ActorRef[Any]) -> None:
    """Make the gossip actor go silent before it stops, so it sends no leave."""
    from xavi.actors.messages import InjectGossipFault

    ref.ask(InjectGossipFault(drop_percent=100.0), timeout=5)



def cluster_key(node: XaviNode) -> str:
    """Return the base64 cluster key from the node's secrets file."""
    return str(json.loads(node.secrets_path.read_text())["cluster_key"])


def gossip_restarts(node: XaviNode) -> int:
    """Return how often the node's supervisor restarted its gossip actor."""
    statuses = cast(list[dict[str, Any]], node.supervisor.ask(GetStatus(), timeout=5))
    children = {c["name"]: c for c in statuses}
    return int(children["gossip"]["restarts"])
