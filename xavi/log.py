"""Logging: one event name plus ``key=value`` fields per line, through loguru.

Levels mean:
- ``DEBUG``: detail for developers (each reconcile step, each packet counter).
- ``INFO``: a change of state an operator cares about (container created, node joined).
- ``WARNING``: Xavi worked around a problem (pull failed, used the local image).
- ``ERROR``: something Xavi wanted to do failed and needs attention or a retry.
- ``CRITICAL``: the agent is about to exit because it cannot go on.

Callers never pass secret values; :func:`redact` is a last line of defence
that replaces the host's known secret values in any rendered line.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from loguru import logger

_secret_values: set[str] = set()
_secret_lock = threading.Lock()


def register_secrets(*values: str) -> None:
    """Add secret values that must never appear in a log line."""
    with _secret_lock:
        _secret_values.update(v for v in values if v and len(v) >= 6)


def redact(text: str) -> str:
    """Replace every registered secret value in ``text`` with ``***``."""
    with _secret_lock:
        values = list(_secret_values)
    for value in values:
        if value in text:
            text = text.replace(value, "***")
    return text


def _format_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text) or '"' in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _patch(record: Any) -> None:
    fields = {k: v for k, v in (record["extra"].get("fields") or {}).items() if v is not None}
    rendered = " ".join(f"{k}={_format_value(v)}" for k, v in fields.items())
    record["message"] = redact(f"{record['message']} {rendered}".rstrip())
    record["extra"]["fields"] = {k: redact(str(v)) for k, v in fields.items()}


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send log lines to stderr as text or as one JSON object per line."""
    logger.remove()
    if fmt == "json":
        logger.add(sys.stderr, level=level.upper(), serialize=True, backtrace=False,
                   diagnose=False)
    else:
        logger.add(
            sys.stderr,
            level=level.upper(),
            format="{time:YYYY-MM-DDTHH:mm:ss.SSSZ} {level: <8} {message}",
            backtrace=False,
            diagnose=False,
        )


_log = logger.patch(_patch)


def event(level: str, name: str, **fields: Any) -> None:
    """Log an event ``name`` with ``key=value`` fields at ``level``."""
    _log.bind(fields=fields).log(level.upper(), name)


def debug(name: str, **fields: Any) -> None:
    """Log a DEBUG event."""
    event("DEBUG", name, **fields)


def info(name: str, **fields: Any) -> None:
    """Log an INFO event."""
    event("INFO", name, **fields)


def warning(name: str, **fields: Any) -> None:
    """Log a WARNING event."""
    event("WARNING", name, **fields)


def error(name: str, **fields: Any) -> None:
    """Log an ERROR event."""
    event("ERROR", name, **fields)


def critical(name: str, **fields: Any) -> None:
    """Log a CRITICAL event."""
    event("CRITICAL", name, **fields)
