"""Service discovery across three simulated hosts, each with its own Docker Engine and agent.

One scenario on one rig, because a rig takes about 15 s to boot: the app on
hostA finds Postgres on hostB and Valkey on hostC; Postgres moves to hostC by
a config change; the host that provides Postgres powers off; a host is
partitioned and healed. A real Go memberlist node sits in the mesh throughout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.interop.go_peer import GoPeer, build_go_peer
from tests.multihost.rig import BRIDGE_ADDRESS, GOSSIP_PORT, Host, Rig, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.interop, pytest.mark.slow]

MESH = 40.0
"""Seconds for gossip to spread a change at LAN timings, with room for a loaded machine."""
DEATH = 60.0
"""Seconds for a powered-off host to be declared dead at LAN timings."""


def ctl(host: Host, *command: str) -> Any:
    """Run ``xavi ctl --json`` against the host's agent (its socket is on the shared disk)."""
    result = subprocess.run(
        [sys.executable, "-m", "xavi", "ctl", "--socket", str(host.agent_dir / "xavi.sock"),
         "--json", *command], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)["result"]


def member_states(host: Host) -> dict[str, str]:
    answer = ctl(host, "members")
    if not answer:
        return {}
    return {m["name"]: m["state"] for m in answer["members"]}


def app_env(host: Host) -> dict[str, str]:
    try:
        container = host.docker().containers.get("xavi-app")
    except Exception:  # noqa: BLE001 - absent or being replaced
        return {}
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def app_id(host: Host) -> str:
    return str(host.docker().containers.get("xavi-app").id)


def replaced_count(host: Host, since: int) -> int:
    return len(re.findall(r"container_replaced service=app", host.agent_log()[since:]))


def points_at(host: Host, service: str, provider: Host) -> bool:
    env = app_env(host)
    return env.get(f"{service.upper()}_HOST") == provider.address


def test_discovery_across_three_hosts(rig: Rig, tmp_path: Path) -> None:
    a, b, c = rig.hosts
    key = rig.secrets["cluster_key"]
    go = GoPeer(build_go_peer(), name="go-observer", bind=BRIDGE_ADDRESS, port=GOSSIP_PORT,
                preset="lan", keys=key)
    try:
        run_scenario(rig, a, b, c, go)
    finally:
        go.close()


def run_scenario(rig: Rig, a: Host, b: Host, c: Host, go: GoPeer) -> None:
    secrets = rig.secrets
    b.start_agent(rig.agent_config(b, ["postgres"]))
    c.start_agent(rig.agent_config(c, ["valkey"]))
    a.start_agent(rig.agent_config(a, ["app"]))
    a.wait_for_agent_log(r"gossip_started")
    go.request("join", addrs=[f"{a.address}:{GOSSIP_PORT}"])

    # 1. The app on A reaches Postgres on B and Valkey on C with the shared passwords.
    wait_until(lambda: points_at(a, "postgres", b) and points_at(a, "valkey", c), MESH,
               "the app on hostA to point at hostB and hostC", 0.5)
    env = app_env(a)
    assert env["POSTGRES_PORT"] == "5432"
    assert env["VALKEY_PORT"] == "6379"
    login = a.run(["psql", "-h", b.address, "-U", "postgres", "-d", "postgres", "-tAc",
                   "select 40 + 2"], timeout=30)
    assert login.returncode != 0  # no password given: refused
    login = a.run(f"PGPASSWORD='{secrets['postgres_password']}' psql -h {b.address} "
                  "-U postgres -d postgres -tAc 'select 40 + 2'", timeout=30)
    assert login.stdout.strip() == "42", login.stderr
    pong = a.run(["redis-cli", "-h", c.address, "-p", "6379", "--no-auth-warning", "-a",
                  secrets["valkey_password"], "ping"], timeout=30)
    assert pong.stdout.strip() == "PONG", pong.stderr
    wait_until(lambda: "postgres=ok valkey=ok" in
               a.docker().containers.get("xavi-app").logs(tail=5).decode(), 30,
               "the app container to reach both providers", 0.5)
    names = {"hostA", "hostB", "hostC", "go-observer"}
    wait_until(lambda: set(member_states(a)) >= names, MESH, "hostA to list every member", 0.5)

    # 2. Postgres moves from B to C by config: A's app is recreated once, nothing else is.
    log_mark = len(a.agent_log())
    valkey_id = c.docker().containers.get("xavi-valkey").id
    c_config = rig.agent_config(c, ["valkey", "postgres"])
    write_config(c, c_config)
    wait_until(lambda: "postgres=5432" in members_services(a).get("hostC", ""), MESH,
               "hostC to advertise postgres", 0.5)
    write_config(b, rig.agent_config(b, []))
    wait_until(lambda: points_at(a, "postgres", c), MESH, "the app to point at hostC", 0.5)
    time.sleep(3)  # let a second, unwanted recreation show itself
    assert replaced_count(a, log_mark) == 1
    assert c.docker().containers.get("xavi-valkey").id == valkey_id
    assert not b.docker().containers.list(all=True, filters={"name": "xavi-postgres"})

    # 3a. Postgres on B again; power off the provider A uses: A moves to the other one.
    write_config(b, rig.agent_config(b, ["postgres"]))
    wait_until(lambda: "postgres=5432" in members_services(a).get("hostB", ""), MESH,
               "hostB to advertise postgres again", 0.5)
    chosen = b if points_at(a, "postgres", b) else c
    other = c if chosen is b else b
    chosen.poweroff()
    wait_until(lambda: member_states(a).get(chosen.name) == "dead", DEATH,
               f"hostA to mark {chosen.name} dead", 0.5)
    wait_until(lambda: member_states(other).get(chosen.name) == "dead", DEATH,
               f"{other.name} to mark {chosen.name} dead", 0.5)
    wait_until(lambda: points_at(a, "postgres", other), MESH,
               f"the app to move to {other.name}", 0.5)
    if chosen is c:
        # C also provided Valkey: nobody does now, so A keeps the last value and says so.
        services = ctl(a, "services")
        assert "valkey" in json.dumps(services)
        assert points_at(a, "valkey", c)
        assert "service_missing service=valkey" in a.agent_log()

    # 3b. Partition the surviving provider and heal it: the mesh and the answers converge.
    other.partition()
    wait_until(lambda: member_states(a).get(other.name) in ("suspect", "dead"), DEATH,
               f"hostA to notice {other.name} is cut off", 0.5)
    other.heal()
    wait_until(lambda: member_states(a).get(other.name) == "alive", DEATH,
               f"hostA to see {other.name} alive again", 0.5)
    wait_until(lambda: member_states(other).get("hostA") == "alive", DEATH,
               f"{other.name} to see hostA alive again", 0.5)
    wait_until(lambda: points_at(a, "postgres", other), MESH, "the app to keep its provider", 0.5)

    # 4. The Go node took part all along and disturbed nothing.
    go_members = {m["name"] for m in go.request("members")["members"] or []}
    assert {"hostA", other.name} <= go_members
    assert member_states(a).get("go-observer") == "alive"
    for host in (a, other):
        assert "member_name_conflict" not in host.agent_log()
        assert "Traceback" not in host.agent_log()


def members_services(host: Host) -> dict[str, str]:
    answer = ctl(host, "members")
    if not answer:
        return {}
    return {m["name"]: ",".join(m["services"]) for m in answer["members"]}


def write_config(host: Host, config: dict[str, Any]) -> None:
    path = host.agent_dir / "config" / "xavi.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(config, indent=2))
    temporary.replace(path)
