"""ControlServer: the actor behind the control socket that ``xavi ctl`` talks to.

Theory of operation:

- The actor owns a :class:`~xavi.actors.control_socket.ControlListener`
  (socket, accept thread, handler threads). It opens it in ``on_start`` and
  closes it on stop and on crash, so no socket thread outlives its actor.
- The actor's own mailbox only carries bus facts (the config in force and
  the secrets, which some commands need), the supervisor's pings and status
  requests, and injected faults. Requests are served in the listener's
  handler threads, which ask the supervisor and the actors with timeouts
  (see :mod:`xavi.actors.control_commands`). A busy or hung ControlServer
  mailbox therefore does not stop the socket. The supervisor still detects
  the hang by its ping and starts a new instance, which takes the socket
  path over atomically.
- The supervisor starts the ControlServer last, after every ContainerActor,
  so that it can answer about all of them.

Spec: the socket's path, modes and peer rules are in
:mod:`xavi.actors.control_socket`; the frames in
:mod:`xavi.protocol.control_frames`; the commands in the README's "Control
socket" section.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pykka

from xavi import log
from xavi.actors.base import XaviActor
from xavi.actors.control_commands import (
    Command,
    CommandContext,
    Facts,
    cmd_bundle,
    cmd_keys,
    cmd_members,
    cmd_reload,
    cmd_restart,
    cmd_services,
    cmd_status,
    execute,
)
from xavi.actors.control_faults import cmd_fault
from xavi.actors.control_path import SocketSettings
from xavi.actors.control_socket import ControlListener, PeerCredentials
from xavi.actors.messages import ConfigChanged, SecretsLoaded

COMMANDS: dict[str, Command] = {
    "status": cmd_status,
    "members": cmd_members,
    "services": cmd_services,
    "reload": cmd_reload,
    "restart": cmd_restart,
    "keys": cmd_keys,
    "bundle": cmd_bundle,
    "fault": cmd_fault,
}
"""Every command of the control socket, by the name sent in ``cmd``."""


@dataclass(frozen=True)
class ControlSettings:
    """Settings of the agent's control socket."""

    socket: SocketSettings
    config_dir: Path
    """Folder of ``xavi.secrets``, which the ``keys`` commands change."""
    fault_injection: bool = False
    """Whether ``fault`` commands are accepted (``--enable-fault-injection``)."""


class ControlServer(XaviActor):
    """Serves the control socket for as long as it runs."""

    subscriptions = (ConfigChanged, SecretsLoaded)

    def __init__(self, supervisor: pykka.ActorRef[Any] | None, settings: ControlSettings,
                 agent_started: float) -> None:
        super().__init__("control", supervisor)
        self.settings = settings
        self.agent_started = agent_started
        self._facts = Facts()
        self._listener: ControlListener | None = None

    def on_start(self) -> None:
        self._listener = ControlListener(self.settings.socket, self._serve)
        self._listener.open()
        socket_settings = self.settings.socket
        log.info("control_socket_listening", path=socket_settings.path,
                 mode="0660" if socket_settings.group_gid is not None else "0600",
                 group=socket_settings.group_gid if socket_settings.group_gid is not None
                 else "none",
                 fault_injection="enabled" if self.settings.fault_injection else "disabled")

    def on_shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def handle(self, message: Any) -> Any:
        # The facts are replaced whole, never changed in place, because the
        # handler threads read them without a lock.
        if isinstance(message, ConfigChanged):
            self._facts = replace(self._facts, config=message.config)
        elif isinstance(message, SecretsLoaded):
            self._facts = replace(self._facts, secrets=message.secrets)
        else:
            return super().handle(message)
        return None

    def status(self) -> dict[str, Any]:
        listener = self._listener
        return {"socket": str(self.settings.socket.path),
                **(listener.stats() if listener is not None else {})}

    def _serve(self, request: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        """Run one request; called in a handler thread, not in the actor's thread."""
        context = CommandContext(
            supervisor=self.supervisor,
            config_dir=self.settings.config_dir,
            fault_injection=self.settings.fault_injection,
            agent_started=self.agent_started,
            facts=self._facts,
            peer_uid=peer.uid,
            socket_path=str(self.settings.socket.path),
        )
        return execute(request, context, COMMANDS)
