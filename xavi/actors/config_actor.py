"""ConfigActor: owns ``xavi.json``; loads, validates and publishes it.

On start it reads the file, publishes :class:`ConfigChanged` and starts an
inotify watcher on the config directory (see :mod:`xavi.watcher`) that sends
it :class:`Reload` after each finished change. On :class:`Reload` it reads
the file again; an invalid file is reported with every
problem and the config in force stays (the bus retains the last good one, so a
restarted ConfigActor facing a broken file changes nothing either). An
unchanged file publishes nothing, and a deleted file changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from xavi import log
from xavi.actors.base import XaviActor
from xavi.actors.messages import ConfigChanged
from xavi.config import Config, load_config
from xavi.errors import ConfigError
from xavi.watcher import DirectoryWatcher

CONFIG_FILE = "xavi.json"


@dataclass(frozen=True)
class Reload:
    """Read the config file again (sent by the watcher, the control socket or SIGHUP)."""

    reason: str = "requested"


class ConfigActor(XaviActor):
    """Publishes the host's config."""

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, config_dir: Path) -> None:
        super().__init__("config", supervisor)
        self.path = config_dir / CONFIG_FILE
        self.current: Config | None = None
        self.generation = 0
        self.last_error: str | None = None
        self.watcher: DirectoryWatcher | None = None

    def on_start(self) -> None:
        # The watch starts before the first read, so a change made while the
        # file is being read is seen too.
        ref = self.actor_ref
        self.watcher = DirectoryWatcher(
            self.path.parent,
            names=lambda name: name == CONFIG_FILE or name.startswith(".."),
            on_change=lambda reason: ref.tell(Reload(reason)),
        )
        try:
            self.watcher.start()
        except OSError as exc:
            self.watcher = None
            log.error("config_watch_failed", path=self.path.parent, error=exc,
                      action="changes are read on SIGHUP only")
        self._load("start")

    def on_shutdown(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def handle(self, message: Any) -> Any:
        if isinstance(message, Reload):
            return self._load(message.reason)
        return super().handle(message)

    def _load(self, reason: str) -> bool:
        if not self.path.exists() and self.current is not None:
            log.warning("config_missing", path=self.path, reason=reason,
                        action="keeping the config in force")
            return False
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self.last_error = log.redact(str(exc))
            log.error("config_rejected", path=self.path, reason=reason,
                      problems="; ".join(exc.problems), action="keeping the config in force")
            return False
        self.last_error = None
        if self.current is not None and self.current.raw == config.raw:
            log.debug("config_unchanged", path=self.path, reason=reason)
            return True
        self.current = config
        self.generation += 1
        log.info("config_loaded", path=self.path, reason=reason, generation=self.generation,
                 services=",".join(config.services) or "none")
        self.publish(ConfigChanged(config=config, generation=self.generation))
        return True

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "generation": self.generation,
                "last_error": self.last_error}
