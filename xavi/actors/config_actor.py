"""ConfigActor: owns ``xavi.json``; loads, validates and publishes it.

On start it reads the file and publishes :class:`ConfigChanged`. On
:class:`Reload` it reads it again; an invalid file is reported with every
problem and the config in force stays (the bus retains the last good one, so a
restarted ConfigActor facing a broken file changes nothing either). An
unchanged file publishes nothing.
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

    def on_start(self) -> None:
        self._load("start")

    def handle(self, message: Any) -> Any:
        if isinstance(message, Reload):
            return self._load(message.reason)
        return super().handle(message)

    def _load(self, reason: str) -> bool:
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            self.last_error = str(exc)
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
