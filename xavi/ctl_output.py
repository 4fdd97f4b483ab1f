"""Readable output of ``xavi ctl``: aligned tables and one-line confirmations.

Only the default output is made here; ``--json`` prints the agent's response
as it is. A missing value is shown as ``-``; newlines inside a value are
shown as ``; `` so that each row stays on one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO


def cell(value: Any) -> str:
    """Return the table text of one value."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    lines = [line.strip().removeprefix("- ") for line in str(value).splitlines()]
    return "; ".join(line for line in lines if line).replace(":; ", ": ")


def duration(seconds: Any) -> str:
    """Return ``seconds`` as ``1d 2h``, ``3h 4m``, ``5m 6s`` or ``7s``."""
    if not isinstance(seconds, int | float):
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return rows under their headers, each column as wide as its widest cell."""
    text_rows = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text_rows)]) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *text_rows]:
        line = "  ".join(value.ljust(widths[i]) for i, value in enumerate(row))
        lines.append(line.rstrip())
    return "\n".join(lines)


def _status(result: dict[str, Any]) -> str:
    header = table(("", ""), [
        ("node", result.get("node")),
        ("version", result.get("version")),
        ("uptime", duration(result.get("uptime_s"))),
        ("socket", result.get("socket")),
        ("fault injection", "enabled" if result.get("fault_injection") else "disabled"),
    ])
    header = "\n".join(line for line in header.splitlines()[1:])
    parts = [header]
    if result.get("supervisor") != "running":
        parts.append(f"supervisor: {result.get('supervisor')}")
    parts.append(table(
        ("ACTOR", "STATE", "RESTARTS", "UPTIME", "LAST ERROR"),
        [(a["name"], a["state"], a["restarts"], duration(a.get("uptime_s")), a["last_error"])
         for a in result.get("actors", [])],
    ))
    services = result.get("services", [])
    if services:
        parts.append(table(
            ("SERVICE", "CONTAINER", "STATE", "HEALTH", "RESTARTS", "LAST EXIT", "LAST ERROR"),
            [(s["service"], s["container"], s["state"], s["health"], s["restarts"],
              s["last_exit"], s["last_error"]) for s in services],
        ))
    else:
        parts.append("no services enabled on this host")
    return "\n\n".join(parts)


def _members(result: dict[str, Any]) -> str:
    members = result.get("members", [])
    if not members:
        return f"no members ({result.get('note') or 'none reported'})"
    return table(("NAME", "ADDRESS", "STATE", "SERVICES"),
                 [(m["name"], m["address"], m["state"], m["services"]) for m in members])


def _services(result: dict[str, Any]) -> str:
    return table(("SERVICE", "WHERE", "NODE", "ADDRESS"),
                 [(s["service"], s["where"], s["node"], s["address"])
                  for s in result.get("services", [])])


def _keys(args: dict[str, Any], result: dict[str, Any]) -> str:
    rows = table(("FINGERPRINT", "PRIMARY"),
                 [(k["fingerprint"], k["primary"]) for k in result.get("keys", [])])
    if args.get("op") == "list":
        return rows
    return f"{result.get('message')} (gossip: {result.get('gossip')})\n\n{rows}"


def render(cmd: str, args: dict[str, Any], result: Any, stdout: TextIO, stderr: TextIO) -> None:
    """Print the result of a successful command."""
    if cmd == "status":
        text = _status(result)
    elif cmd == "members":
        text = _members(result)
    elif cmd == "services":
        text = _services(result)
    elif cmd == "reload":
        text = f"config reloaded (generation {result.get('generation')})"
    elif cmd == "restart":
        text = (f"restarted {result.get('service')} (container {result.get('container')}, "
                f"restarts {result.get('restarts')})")
    elif cmd == "keys":
        text = _keys(args, result)
    elif cmd == "bundle":
        if result.get("left_out"):
            print(f"left out (host-specific): {', '.join(result['left_out'])}", file=stderr)
        if result.get("seed_peer"):
            print(f"added seed peer: {result['seed_peer']}", file=stderr)
        text = result["bundle"]
    elif cmd == "fault":
        text = f"injected {result.get('injected')}: " + ", ".join(
            f"{k}={cell(v)}" for k, v in result.items() if k != "injected")
    else:
        text = str(result)
    print(text, file=stdout)
