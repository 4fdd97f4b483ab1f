"""Mixed clusters of Xavi agents and real Go memberlist nodes on loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from go_peer import GoPeer
from xavi_node import XaviNode, cluster_key, wait_until

from xavi.protocol.meta import parse_tags

pytestmark = [pytest.mark.interop, pytest.mark.slow]

CONVERGE = 20.0
DETECT = 40.0


def go_alive(peer: GoPeer) -> dict[str, str]:
    members = peer.request("members")["members"] or []
    return {m["name"]: m.get("state", "alive") for m in members}


def alive_names(view: dict[str, str]) -> set[str]:
    """Return the live members; a suspect one counts, because under load a probe may time out
    and the suspicion is refuted a moment later."""
    return {name for name, state in view.items() if state in ("alive", "suspect")}


def test_xavi_joins_go_and_go_joins_xavi(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    first = start_xavi("py-1")
    go = start_go(name="go-1", preset="lan", keys=cluster_key(first))
    second = start_xavi("py-2", peers=[f"127.0.0.1:{go.port}"])
    go.request("join", addrs=[first.address])
    names = {"py-1", "py-2", "go-1"}
    wait_until(lambda: alive_names(first.members()) == names, CONVERGE, "py-1 to see everyone")
    wait_until(lambda: alive_names(second.members()) == names, CONVERGE, "py-2 to see everyone")
    wait_until(lambda: set(go_alive(go)) == names, CONVERGE, "go-1 to see everyone")


def test_three_and_three_converge_and_detect_kills(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    seed = start_xavi("py-1")
    key = cluster_key(seed)
    gos = [start_go(name=f"go-{i}", preset="lan", keys=key) for i in range(1, 4)]
    for go in gos:
        go.request("join", addrs=[seed.address])
    pys = [seed] + [start_xavi(f"py-{i}", peers=[seed.address]) for i in (2, 3)]
    names = {f"py-{i}" for i in (1, 2, 3)} | {f"go-{i}" for i in (1, 2, 3)}
    for node in pys:
        wait_until(lambda n=node: alive_names(n.members()) == names, CONVERGE,
                   f"{node.name} to see all six")
    for go in gos:
        wait_until(lambda g=go: set(go_alive(g)) == names, CONVERGE, f"{go.name} to see all six")

    pys[2].kill()
    gos[2].process.kill()
    survivors_py, survivors_go = pys[:2], gos[:2]
    gone = {"py-3", "go-3"}
    for node in survivors_py:
        wait_until(lambda n=node: gone <= {k for k, v in n.members().items() if v == "dead"},
                   DETECT, f"{node.name} to mark py-3 and go-3 dead")
    for go in survivors_go:
        wait_until(lambda g=go: not (gone & set(go_alive(g))), DETECT,
                   f"{go.name} to drop py-3 and go-3")


def test_graceful_leave_is_seen_as_left(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    first = start_xavi("py-1")
    go = start_go(name="go-1", preset="lan", keys=cluster_key(first))
    leaver = start_xavi("py-2", peers=[first.address])
    go.request("join", addrs=[first.address])
    names = {"py-1", "py-2", "go-1"}
    wait_until(lambda: alive_names(first.members()) == names, CONVERGE, "convergence")
    wait_until(lambda: set(go_alive(go)) == names, CONVERGE, "go convergence")

    leaver.stop()
    wait_until(lambda: first.members().get("py-2") == "left", CONVERGE, "py-1 to see a leave")
    go.wait_event(lambda e: e.get("event") == "leave" and e.get("name") == "py-2",
                  timeout=CONVERGE, what="go-1's leave event for py-2")
    assert "py-2" not in go_alive(go)
    # memberlist 0.2.2 reports a leave and a failure through the same callback;
    # a failure would first be logged as a failed suspect.
    assert not any("Suspect py-2 has failed" in line for line in go.logs)

    go.request("leave", timeout_ms=2000)
    wait_until(lambda: first.members().get("go-1") == "left", CONVERGE, "py-1 to see go leave")


def test_metadata_change_crosses_both_ways(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    node = start_xavi("py-1")
    go = start_go(name="go-1", preset="lan", keys=cluster_key(node),
                  tags=json.dumps({"role": "test"}))
    go.request("join", addrs=[node.address])
    wait_until(lambda: "go-1" in alive_names(node.members()), CONVERGE, "join")

    go.request("set-meta", tags={"role": "changed"})
    wait_until(lambda: _go_tags(node, "go-1").get("role") == "changed", CONVERGE,
               "py-1 to see go-1's new tags")

    from xavi.actors.messages import ServiceHealth

    # A healthy local service changes this node's advertised services tag.
    node.write_config(bind_port=node.port)
    node.gossip().tell(_config_with_postgres(node))
    node.gossip().tell(ServiceHealth("postgres", True, True))
    wait_until(lambda: _go_member_tags(go, "py-1").get("services") == "postgres=5432",
               CONVERGE, "go-1 to see py-1's services tag")


def _go_tags(node: XaviNode, name: str) -> dict[str, str]:
    for member in node.status()["members"]:
        if member["name"] == name:
            return dict(member["tags"])
    return {}


def _go_member_tags(go: GoPeer, name: str) -> dict[str, str]:
    for member in go.request("members")["members"] or []:
        if member["name"] == name:
            return parse_tags(bytes.fromhex(member["meta_hex"]))
    return {}


def _config_with_postgres(node: XaviNode) -> Any:
    from xavi.actors.messages import ConfigChanged
    from xavi.config import validate

    raw = dict(node.config)
    raw["services"] = ["postgres"]
    return ConfigChanged(validate(raw), 99)


def test_wrong_key_is_rejected_on_both_sides(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="WARNING")
    try:
        other_key = base64.b64encode(b"k" * 32).decode()
        go = start_go(name="go-bad", preset="lan", keys=other_key)
        node = start_xavi("py-1", peers=[f"127.0.0.1:{go.port}"])
        go.wait_log("No installed keys could decrypt the message", timeout=CONVERGE)

        reply = go.request_raw("join", addrs=[node.address])
        assert not reply.get("ok")
        wait_until(lambda: node.status()["rejected_inputs"] >= 1, CONVERGE,
                   "py-1 to count the rejected stream")
        assert "go-bad" not in node.members()
        assert "py-1" not in go_alive(go)
        rejected = [line for line in lines if "gossip_input_rejected" in line]
        assert rejected and "peer=127.0.0.1:" in rejected[0]
        assert "another cluster key" in rejected[0]
    finally:
        logger.remove(sink)


def test_key_rotation_keeps_mixed_cluster_whole(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    from xavi.actors.messages import KeyringChanged
    from xavi.secrets import Secrets, read_secrets

    first = start_xavi("py-1")
    old_key = cluster_key(first)
    go = start_go(name="go-1", preset="lan", keys=old_key)
    second = start_xavi("py-2", peers=[first.address])
    go.request("join", addrs=[first.address])
    names = {"py-1", "py-2", "go-1"}
    wait_until(lambda: alive_names(first.members()) == names, CONVERGE, "convergence")
    new_key = base64.b64encode(bytes(range(32))).decode()

    def set_keys(primary: str, extra: list[str]) -> None:
        for node in (first, second):
            current = read_secrets(node.secrets_path)
            assert current is not None
            updated = Secrets(current.postgres_password, current.valkey_password, primary,
                              tuple(extra))
            node.gossip().tell(KeyringChanged(updated))

    def whole() -> bool:
        return alive_names(first.members()) == names and \
            alive_names(second.members()) == names and set(go_alive(go)) == names

    set_keys(old_key, [new_key])
    go.request("keyring", op="install", key=new_key)
    time.sleep(1.5)
    assert whole()
    set_keys(new_key, [old_key])
    go.request("keyring", op="use", key=new_key)
    time.sleep(1.5)
    assert whole()
    set_keys(new_key, [])
    go.request("keyring", op="remove", key=old_key)
    time.sleep(3)
    assert whole()


def test_crashed_gossip_actor_rejoins_without_being_declared_dead(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer]) -> None:
    from xavi.actors.messages import GetStatus

    first = start_xavi("py-1")
    go = start_go(name="go-1", preset="lan", keys=cluster_key(first))
    second = start_xavi("py-2", peers=[first.address])
    go.request("join", addrs=[first.address])
    names = {"py-1", "py-2", "go-1"}
    wait_until(lambda: alive_names(first.members()) == names, CONVERGE, "convergence")
    wait_until(lambda: set(go_alive(go)) == names, CONVERGE, "go convergence")

    second.crash_gossip()

    def restarted() -> bool:
        children = {c["name"]: c for c in second.supervisor.ask(GetStatus(), timeout=5)}
        return bool(children["gossip"]["restarts"] == 1 and children["gossip"]["alive"])

    wait_until(restarted, 10, "py-2's gossip actor to be restarted")
    second.wait_running()
    wait_until(lambda: alive_names(second.members()) == names, CONVERGE,
               "py-2 to see everyone again")
    time.sleep(6)  # longer than LAN's suspicion timeout for three nodes
    assert first.members()["py-2"] == "alive"
    assert "py-2" in go_alive(go)
    assert not any(e.get("event") == "leave" and e.get("name") == "py-2" for e in go.events)
