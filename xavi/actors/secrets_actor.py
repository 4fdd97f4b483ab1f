"""SecretsActor: owns ``xavi.secrets``; creates it on first run and publishes its values.

The values travel only inside :class:`SecretsLoaded`, whose ``repr`` hides
them. They are registered with the log redactor as soon as they are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka

from xavi import log
from xavi.actors.base import XaviActor
from xavi.actors.messages import SecretsLoaded
from xavi.secrets import SECRETS_FILE, Secrets, ensure_secrets


def register_with_redactor(secrets: Secrets) -> None:
    """Make sure no log line can show any of these values."""
    log.register_secrets(secrets.postgres_password, secrets.valkey_password,
                         secrets.cluster_key, *secrets.extra_cluster_keys,
                         secrets.control_token or "")


class SecretsActor(XaviActor):
    """Publishes the host's secrets."""

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, config_dir: Path) -> None:
        super().__init__("secrets", supervisor)
        self.path = config_dir / SECRETS_FILE

    def on_start(self) -> None:
        secrets, created = ensure_secrets(self.path)
        register_with_redactor(secrets)
        if created:
            log.info("secrets_created", path=self.path, mode="0600")
        self.publish(SecretsLoaded(secrets=secrets))

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path)}
