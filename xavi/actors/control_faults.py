"""``fault`` commands of the control socket: crash, hang, Docker failures, gossip loss and delay.

They exist to test supervision on a real agent and are refused unless the
agent runs with ``--enable-fault-injection``. Crashes and hangs reach the
target through the supervisor (:class:`Inject`), so they hit the instance the
supervisor currently runs. Every injected fault is logged as
``fault_injected`` with the requesting uid.
"""

from __future__ import annotations

import math
from typing import Any

from xavi import log
from xavi.actors.control_commands import (
    ASK_TIMEOUT,
    CommandContext,
    CommandError,
    child_refs,
    gossip_ref,
    string_arg,
    supervisor_of,
)
from xavi.actors.messages import (
    Inject,
    InjectCrash,
    InjectDockerFailure,
    InjectGossipFault,
    InjectHang,
)

MAX_HANG_SECONDS = 300.0
"""Maximum injectable hang in seconds. A hung actor's thread cannot be stopped from outside,
so a longer hang would also delay the agent's exit by that much."""
MAX_GOSSIP_DELAY_MS = 60_000.0
"""Maximum injectable delay of gossip packets in milliseconds."""


def _number(args: dict[str, Any], name: str, low: float, high: float) -> float:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or not low <= value <= high:
        raise CommandError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}",
                           "bad_request")
    return float(value)


def _target(context: CommandContext, name: str) -> str:
    """Return the child name of ``name``, accepting a bare service name for its ContainerActor."""
    names = child_refs(context)
    if name in names:
        return name
    if f"container:{name}" in names:
        return f"container:{name}"
    raise CommandError(f"no running actor named {name!r}; actors: {', '.join(sorted(names))}",
                       "not_found")


def _inject(context: CommandContext, target: str, fault: Any, description: str) -> None:
    delivered = supervisor_of(context).ask(Inject(target, fault), timeout=ASK_TIMEOUT)
    if not delivered:
        raise CommandError(f"actor {target} is restarting; try again", "not_found")
    log.warning("fault_injected", target=target, fault=description, uid=context.peer_uid)


def cmd_fault(context: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    """Inject one fault: ``kind`` is crash, hang, docker or gossip."""
    if not context.fault_injection:
        raise CommandError("fault injection is disabled; start the agent with "
                           "--enable-fault-injection (test systems only)", "fault_injection_disabled")
    kind = string_arg(args, "kind")
    if kind == "crash":
        target = _target(context, string_arg(args, "actor"))
        _inject(context, target, InjectCrash(), "crash")
        return {"injected": "crash", "target": target}
    if kind == "hang":
        target = _target(context, string_arg(args, "actor"))
        seconds = _number(args, "seconds", 0.0, MAX_HANG_SECONDS)
        _inject(context, target, InjectHang(seconds), f"hang {seconds:g}s")
        return {"injected": "hang", "target": target, "seconds": seconds}
    if kind == "docker":
        service = string_arg(args, "service")
        enabled = args.get("enabled")
        if not isinstance(enabled, bool):
            raise CommandError("enabled must be true or false", "bad_request")
        target = f"container:{service}"
        if target not in child_refs(context):
            raise CommandError(f"service {service!r} has no running ContainerActor", "not_found")
        _inject(context, target, InjectDockerFailure(enabled),
                "docker calls fail" if enabled else "docker calls work")
        return {"injected": "docker", "target": target, "enabled": enabled}
    if kind == "gossip":
        return _gossip_fault(context, args)
    raise CommandError(f"unknown fault kind {kind!r}; expected crash, hang, docker or gossip",
                       "bad_request")


def _gossip_fault(context: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
    drop = _number(args, "drop_percent", 0.0, 100.0) if "drop_percent" in args else None
    delay = _number(args, "delay_ms", 0.0, MAX_GOSSIP_DELAY_MS) if "delay_ms" in args else None
    if drop is None and delay is None:
        raise CommandError("a gossip fault needs drop_percent or delay_ms", "bad_request")
    ref = gossip_ref()
    if ref is None:
        raise CommandError("gossip not running", "not_running")
    ref.tell(InjectGossipFault(drop_percent=drop, delay_ms=delay))
    log.warning("fault_injected", target="gossip", fault="gossip", drop_percent=drop,
                delay_ms=delay, uid=context.peer_uid)
    return {"injected": "gossip", "drop_percent": drop, "delay_ms": delay}
