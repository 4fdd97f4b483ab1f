"""RemoteConfigActor: polls ``control.url`` for this host's desired config.

HTTP contract (documented in the README, "Control URL"):

- Every ``control.interval`` seconds the agent sends
  ``POST {control.url}/v1/nodes/{node_name}/sync`` with a short JSON status
  report of this host as the body, ``Authorization: Bearer <control_token>``
  when the secrets file has a token, and ``If-None-Match: <ETag>`` of the last
  config it received.
- ``304 Not Modified`` (or ``204 No Content``): nothing to do. So an
  unchanged config costs one small conditional request per interval.
- ``200 OK`` with a JSON config body and an ``ETag``: the config is validated
  like a local file; a valid one is written atomically to ``xavi.json``
  (mode 0600), where the config watcher applies it. An invalid one is
  reported and nothing is written.
- Anything else, a timeout or a TLS failure counts as a failure: the next poll
  waits twice as long, up to ``MAX_BACKOFF`` seconds, and nothing is written.

TLS certificates are verified with the system's trust store (``urllib``'s
default context). Plain ``http://`` is accepted by the config validator only
for loopback addresses.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from xavi import __version__, log
from xavi.actors.base import XaviActor
from xavi.actors.messages import ConfigChanged, SecretsLoaded, ServiceHealth
from xavi.config import Config, parse_config_text
from xavi.errors import ConfigError

MAX_BACKOFF = 600.0
"""Maximum wait between polls after repeated failures, in seconds."""
REQUEST_TIMEOUT = 10.0
"""Seconds before a poll request is given up (at most the interval)."""
MAX_CONFIG_BYTES = 1024 * 1024
"""A larger response body is rejected."""


@dataclass(frozen=True)
class Poll:
    """Time to poll the control URL; ``epoch`` drops polls planned under an older config."""

    epoch: int


class RemoteConfigActor(XaviActor):
    """Fetches this host's desired config from the control URL and writes it to disk."""

    subscriptions = (ConfigChanged, SecretsLoaded, ServiceHealth)

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, config_dir: Path) -> None:
        super().__init__("remote-config", supervisor)
        self.path = config_dir / "xavi.json"
        self.config: Config | None = None
        self.generation = 0
        self.token: str | None = None
        self.etag: str | None = None
        self.failures = 0
        self.epoch = 0
        self.health: dict[str, dict[str, bool]] = {}
        self.started = time.monotonic()
        self.last_error: str | None = None
        self.last_success: float | None = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, ConfigChanged):
            old_url = self.config.control.url if self.config else None
            self.config = message.config
            self.generation = message.generation
            if message.config.control.url != old_url:
                self.etag = None
                self.failures = 0
                self._plan(0.0)
        elif isinstance(message, SecretsLoaded):
            self.token = message.secrets.control_token
        elif isinstance(message, ServiceHealth):
            self.health[message.service] = {"running": message.running,
                                            "healthy": message.healthy}
        elif isinstance(message, Poll):
            if message.epoch == self.epoch:
                self._poll()
        else:
            return super().handle(message)
        return None

    def _plan(self, delay: float) -> None:
        self.epoch += 1
        if self.config is None or not self.config.control.url:
            return
        self.schedule(delay, Poll(self.epoch))

    def _poll(self) -> None:
        assert self.config is not None and self.config.control.url
        interval = float(self.config.control.interval)
        try:
            changed = self._sync(self.config.control.url)
        except _PollFailed as exc:
            self.failures += 1
            self.last_error = str(exc)
            delay = min(interval * 2 ** self.failures, MAX_BACKOFF)
            log.error("control_poll_failed", url=self.config.control.url, error=exc,
                      retry_in_s=round(delay, 1), action="nothing applied")
            self._plan(delay)
            return
        self.failures = 0
        self.last_error = None
        self.last_success = time.time()
        if changed:
            log.info("control_config_written", path=self.path, etag=self.etag)
        self._plan(interval)

    def _sync(self, base_url: str) -> bool:
        assert self.config is not None
        node = self.config.cluster.node_name
        report = {
            "node": node,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started),
            "config_generation": self.generation,
            "services": self.health,
        }
        request = urllib.request.Request(
            f"{base_url}/v1/nodes/{urllib.request.quote(node)}/sync",
            data=json.dumps(report).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"xavi/{__version__}"},
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if self.etag:
            request.add_header("If-None-Match", self.etag)
        timeout = min(REQUEST_TIMEOUT, float(self.config.control.interval))
        try:
            with urllib.request.urlopen(request, timeout=timeout,
                                        context=ssl.create_default_context()) as response:
                status = response.status
                body = response.read(MAX_CONFIG_BYTES + 1)
                etag = response.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return False
            raise _PollFailed(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _PollFailed(f"request failed: {reason}") from None
        if status in (204, 304):
            return False
        if status != 200:
            raise _PollFailed(f"unexpected HTTP {status}")
        if len(body) > MAX_CONFIG_BYTES:
            raise _PollFailed(f"config larger than {MAX_CONFIG_BYTES} bytes")
        try:
            text = body.decode("utf-8")
            parse_config_text(text, "config from the control URL")
        except UnicodeDecodeError:
            raise _PollFailed("config is not UTF-8 text") from None
        except ConfigError as exc:
            raise _PollFailed(str(exc)) from None
        self.etag = etag
        return self._write_if_different(text)

    def _write_if_different(self, text: str) -> bool:
        try:
            current = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            current = None
        desired = json.loads(text)
        if current == desired:
            return False
        temporary = self.path.with_name(f".xavi.json.{os.getpid()}.remote.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(desired, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        return True

    def status(self) -> dict[str, Any]:
        return {
            "url": self.config.control.url if self.config else None,
            "etag": self.etag,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_success": self.last_success,
        }


class _PollFailed(Exception):
    """A failed poll; the message gives the reason and never contains the token."""
