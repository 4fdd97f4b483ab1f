"""The commands of the control socket, run in the socket's handler threads.

A request is ``{"cmd": NAME, "args": {...}}``. Each command returns a
JSON-compatible result or raises :class:`CommandError`; :func:`execute` turns
both into response maps, and any other exception into an ``internal`` error
that is logged, so a request can never take the ControlServer down.

Commands read the agent's state by asking the supervisor and the actors
(``ask`` with a timeout, never ``tell`` and wait). A handler thread is not an
actor, so no actor waits on it and its asks cannot deadlock. A hung actor
delays a request by at most ``STATUS_TIMEOUT`` seconds and is then reported
as "not answering".
Fault-injection commands live in :mod:`xavi.actors.control_faults`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from xavi import __version__, log
from xavi.actors.config_actor import Reload
from xavi.actors.messages import (
    GetChildRefs,
    GetStatus,
    KeyringChanged,
    Publish,
    RestartContainer,
    SecretsLoaded,
)
from xavi.actors.secrets_actor import register_with_redactor
from xavi.bundle import encode_bundle
from xavi.config import SERVICES, Config
from xavi.errors import XaviError
from xavi.keyring import OPERATIONS, change_keyring, list_keys
from xavi.protocol.control_frames import error_response, ok_response
from xavi.secrets import SECRETS_FILE, Secrets, read_secrets
from xavi.services import container_name

STATUS_TIMEOUT = 2.0
"""Seconds a status-like command waits for all the actors it asks, together."""
ASK_TIMEOUT = 10.0
"""Seconds to wait for the actor that carries out a reload or a fault."""
RESTART_TIMEOUT = 60.0
"""Seconds to wait for a container restart (Docker's stop waits up to 10 s before killing)."""
NOT_ANSWERING = "not answering"
GOSSIP_ACTOR_CLASS = "GossipActor"
HOST_SPECIFIC_KEYS = ("node_name", "advertise_addr", "bind_addr")
"""``cluster`` keys left out of a bundle, because each host has its own value."""


class CommandError(XaviError):
    """A command cannot be carried out; ``code`` is a stable word for scripts."""

    def __init__(self, message: str, code: str = "failed") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Facts:
    """The latest config and secrets the ControlServer received from the bus."""

    config: Config | None = None
    secrets: Secrets | None = None


@dataclass(frozen=True)
class CommandContext:
    """Inputs of one command, built for each request."""

    supervisor: pykka.ActorRef[Any] | None
    config_dir: Path
    fault_injection: bool
    agent_started: float
    """``time.monotonic()`` when the agent started."""
    facts: Facts
    peer_uid: int
    socket_path: str


Command = Callable[[CommandContext, dict[str, Any]], Any]


def execute(request: dict[str, Any], context: CommandContext,
            commands: dict[str, Command]) -> dict[str, Any]:
    """Run one request and return its response map."""
    name = request.get("cmd")
    args = request.get("args", {})
    if not isinstance(name, str) or not isinstance(args, dict):
        return error_response('a request is {"cmd": string, "args": map}', "bad_request")
    command = commands.get(name)
    if command is None:
        return error_response(f"unknown command {name!r}; commands: "
                              f"{', '.join(sorted(commands))}", "unknown_command")
    log.debug("control_request", cmd=name, uid=context.peer_uid)
    try:
        result = command(context, args)
    except CommandError as exc:
        return error_response(log.redact(str(exc)), exc.code)
    except XaviError as exc:
        return error_response(log.redact(str(exc)), "failed")
    except Exception as exc:  # noqa: BLE001 - reported to the client and logged, never raised
        log.error("control_command_failed", cmd=name, error=f"{type(exc).__name__}: {exc}")
        return error_response(f"internal error in {name}: {type(exc).__name__}; see the agent "
                              "log", "internal")
    if name == "bundle":
        return ok_response(result)  # root only; carrying the secrets is its purpose
    # A secret value can reach a reply through text the operator wrote, such as
    # a config error quoting an invalid value, so replies are scrubbed as logs are.
    return ok_response(_redact_tree(result))


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return log.redact(value)
    if isinstance(value, dict):
        return {key: _redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_tree(item) for item in value]
    return value


# Helpers --------------------------------------------------------------------


def string_arg(args: dict[str, Any], name: str) -> str:
    """Return a required string argument or raise a ``bad_request`` CommandError."""
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise CommandError(f"missing or invalid argument {name!r}: expected a string",
                           "bad_request")
    return value


def _wait(future: Any, deadline: float) -> Any:
    try:
        return future.get(timeout=max(0.0, deadline - time.monotonic()))
    except pykka.Timeout:
        return NOT_ANSWERING
    except pykka.ActorDeadError:
        return NOT_ANSWERING


def supervisor_of(context: CommandContext) -> pykka.ActorRef[Any]:
    """Return the supervisor's ref, or raise when the agent is stopping."""
    if context.supervisor is None or not context.supervisor.is_alive():
        raise CommandError("the supervisor is not running (the agent is stopping)",
                           "not_running")
    return context.supervisor


def child_refs(context: CommandContext, timeout: float = STATUS_TIMEOUT) -> \
        dict[str, pykka.ActorRef[Any]]:
    """Return the supervisor's running children by name."""
    refs = _wait(supervisor_of(context).ask(GetChildRefs(), block=False),
                 time.monotonic() + timeout)
    if refs == NOT_ANSWERING:
        raise CommandError("the supervisor is not answering", "not_answering")
    return dict(refs)


def ask_child(context: CommandContext, name: str, message: Any, timeout: float) -> Any:
    """Ask the named child and return its reply; raise CommandError when there is none."""
    ref = child_refs(context).get(name)
    if ref is None:
        raise CommandError(f"no running actor named {name!r}", "not_found")
    answer = _wait(ref.ask(message, block=False), time.monotonic() + timeout)
    if answer == NOT_ANSWERING:
        raise CommandError(f"actor {name} did not reply within {timeout:g} s", "not_answering")
    return answer


def gossip_ref() -> pykka.ActorRef[Any] | None:
    """Return the newest running GossipActor, or None when gossip does not run."""
    refs = [r for r in pykka.ActorRegistry.get_by_class_name(GOSSIP_ACTOR_CLASS) if r.is_alive()]
    return refs[-1] if refs else None


# status, members, services ----------------------------------------------------


def _actor_rows(children: Any, answers: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for child in children if isinstance(children, list) else []:
        name = child["name"]
        answer = answers.get(name)
        if not child["alive"]:
            state = "restarting"
        elif answer == NOT_ANSWERING:
            state = NOT_ANSWERING
        else:
            state = "running"
        rows.append({"name": name, "state": state, "restarts": child["restarts"],
                     "last_error": child["last_error"], "uptime_s": child["uptime_s"],
                     "status": answer if isinstance(answer, dict) else None})
    return rows


def _service_rows(answers: dict[str, Any], config: Config | None) -> list[dict[str, Any]]:
    rows = []
    names = [n for n in answers if n.startswith("container:")]
    enabled = config.services if config is not None else ()
    for service in enabled:
        if f"container:{service}" not in names:
            names.append(f"container:{service}")
    for name in names:
        service = name.split(":", 1)[1]
        answer = answers.get(name)
        if not isinstance(answer, dict):
            why = "actor not answering" if answer == NOT_ANSWERING else "actor restarting"
            rows.append({"service": service, "container": None, "state": "unknown",
                         "health": "unknown", "restarts": None, "last_exit": None,
                         "last_error": why})
            continue
        rows.append({
            "service": service,
            "container": answer.get("container"),
            "state": "running" if answer.get("running") else "stopped",
            "health": "healthy" if answer.get("healthy") else "unhealthy",
            "restarts": answer.get("restarts"),
            "last_exit": answer.get("last_exit"),
            "last_error": answer.get("last_error"),
        })
    return rows


def cmd_status(context: CommandContext, _args: dict[str, Any]) -> dict[str, Any]:
    """Return the node, the actors and the services, asking all actors at once."""
    supervisor = supervisor_of(context)
    deadline = time.monotonic() + STATUS_TIMEOUT
    children_future = supervisor.ask(GetStatus(), block=False)
    refs = _wait(supervisor.ask(GetChildRefs(), block=False), deadline)
    futures = {name: ref.ask(GetStatus(), block=False)
               for name, ref in (refs.items() if isinstance(refs, dict) else ())}
    children = _wait(children_future, deadline)
    answers = {name: _wait(future, deadline) for name, future in futures.items()}
    config = context.facts.config
    return {
        "node": config.cluster.node_name if config is not None else None,
        "version": __version__,
        "uptime_s": round(time.monotonic() - context.agent_started, 1),
        "socket": context.socket_path,
        "fault_injection": context.fault_injection,
        "supervisor": NOT_ANSWERING if children == NOT_ANSWERING else "running",
        "actors": _actor_rows(children, answers),
        "services": _service_rows(answers, config),
    }


def cmd_members(_context: CommandContext, _args: dict[str, Any]) -> dict[str, Any]:
    """Return the gossip members as the GossipActor reports them."""
    ref = gossip_ref()
    if ref is None:
        return {"members": [], "note": "gossip not running"}
    answer = _wait(ref.ask(GetStatus(), block=False), time.monotonic() + STATUS_TIMEOUT)
    if answer == NOT_ANSWERING:
        raise CommandError("the gossip actor is not answering", "not_answering")
    members = answer.get("members") if isinstance(answer, dict) else None
    if not isinstance(members, list):
        return {"members": [], "note": "gossip not running"}
    rows = []
    for member in members:
        if isinstance(member, dict):
            rows.append({"name": member.get("name"), "address": member.get("address"),
                         "state": member.get("state"),
                         "services": _service_list(member.get("services")),
                         **{k: v for k, v in member.items()
                            if k not in ("name", "address", "state", "services")}})
    return {"members": rows}


def _service_list(value: Any) -> list[str]:
    """Return a member's services as a list, from a list or a serf-style ``a=1,b=2`` tag."""
    if isinstance(value, str):
        return [item for item in value.split(",") if item]
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return []


def cmd_services(context: CommandContext, _args: dict[str, Any]) -> dict[str, Any]:
    """Return where this host reaches each service, from the DiscoveryActor."""
    status = ask_child(context, "discovery", GetStatus(), STATUS_TIMEOUT)
    locations = status.get("locations") or {}
    config = context.facts.config
    enabled = config.services if config is not None else ()
    node = config.cluster.node_name if config is not None else None
    rows = []
    for service in SERVICES:
        location = locations.get(service)
        if location is not None:
            where = "local" if location.get("local") else "remote"
            if location.get("missing"):
                # No live host provides it; dependents keep this last good address.
                where = "missing"
            rows.append({"service": service,
                         "where": where,
                         "node": location.get("node"),
                         "address": f"{location.get('host')}:{location.get('port')}"})
        elif service in enabled:
            rows.append({"service": service, "where": "local", "node": node,
                         "address": container_name(service)})
        else:
            rows.append({"service": service, "where": "none", "node": None, "address": None})
    return {"services": rows}


# reload, restart ------------------------------------------------------------


def cmd_reload(context: CommandContext, _args: dict[str, Any]) -> dict[str, Any]:
    """Make the ConfigActor read the config file again; fail when it rejects the file."""
    accepted = ask_child(context, "config", Reload("control"), ASK_TIMEOUT)
    status = ask_child(context, "config", GetStatus(), STATUS_TIMEOUT)
    log.info("control_reload", uid=context.peer_uid, accepted=accepted)
    if not accepted:
        raise CommandError(f"the config was rejected and the config in force is kept: "
                           f"{status.get('last_error')}", "config_rejected")
    return {"accepted": True, "generation": status.get("generation")}


def cmd_restart(context: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Restart one service's container (stop and start; same container)."""
    service = string_arg(args, "service")
    if service not in SERVICES:
        raise CommandError(f"unknown service {service!r}; services: {', '.join(SERVICES)}",
                           "bad_request")
    ref = child_refs(context).get(f"container:{service}")
    if ref is None:
        raise CommandError(f"service {service} is not enabled on this host or its actor is "
                           "restarting", "not_found")
    log.info("control_restart", uid=context.peer_uid, service=service)
    reply: pykka.ThreadingFuture[dict[str, Any]] = pykka.ThreadingFuture()
    ref.tell(RestartContainer(reply))
    try:
        result = reply.get(timeout=RESTART_TIMEOUT)
    except pykka.Timeout:
        raise CommandError(f"restarting {service} did not finish within {RESTART_TIMEOUT:g} s; "
                           "see the agent log", "timeout") from None
    if result.get("error"):
        raise CommandError(f"restarting {service} failed: {result['error']}")
    return dict(result)


# keys, bundle ---------------------------------------------------------------


def cmd_keys(context: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """List or change the gossip keyring in the secrets file, then tell everyone."""
    operation = string_arg(args, "op")
    path = context.config_dir / SECRETS_FILE
    if operation == "list":
        secrets = read_secrets(path)
        if secrets is None:
            raise CommandError(f"{path} does not exist yet", "not_found")
        return {"keys": list_keys(secrets)}
    if operation not in OPERATIONS:
        raise CommandError(f"unknown keys operation {operation!r}; expected list, "
                           f"{', '.join(OPERATIONS)}", "bad_request")
    change = change_keyring(path, operation, string_arg(args, "key"))
    gossip = "unchanged"
    if change.changed:
        register_with_redactor(change.secrets)
        log.info("keyring_changed", op=operation, uid=context.peer_uid, result=change.message)
        supervisor_of(context).tell(Publish(SecretsLoaded(change.secrets), sender="control"))
        ref = gossip_ref()
        gossip = "not running"
        if ref is not None:
            ref.tell(KeyringChanged(change.secrets))
            gossip = "notified"
    return {"message": change.message, "changed": change.changed, "gossip": gossip,
            "keys": list_keys(change.secrets)}


def cmd_bundle(context: CommandContext, _args: dict[str, Any]) -> dict[str, Any]:
    """Return an auth bundle for a new host: this config without host-specific keys, plus secrets."""
    if context.peer_uid != 0:
        raise CommandError("only root may read the bundle, because it contains the cluster's "
                           "secrets; run 'sudo xavi ctl bundle'", "permission_denied")
    config = context.facts.config
    secrets = read_secrets(context.config_dir / SECRETS_FILE) or context.facts.secrets
    if config is None or secrets is None:
        raise CommandError("the agent has not loaded its config and secrets yet; try again",
                           "not_ready")
    raw = {key: value for key, value in config.raw.items()}
    cluster = dict(raw.get("cluster") or {})
    left_out = [key for key in HOST_SPECIFIC_KEYS if key in cluster]
    for key in left_out:
        del cluster[key]
    seed = None
    if config.cluster.advertise_addr:
        seed = f"{config.cluster.advertise_addr}:{config.cluster.bind_port}"
        peers = list(cluster.get("peers") or [])
        if seed not in peers:
            cluster["peers"] = [*peers, seed]
    if cluster or "cluster" in raw:
        raw["cluster"] = cluster
    log.info("bundle_issued", uid=context.peer_uid)
    return {"bundle": encode_bundle(raw, secrets), "left_out": [f"cluster.{k}" for k in left_out],
            "seed_peer": seed}
