"""Command line of the agent and the wiring of its supervisor.

``xavi`` (or ``python -m xavi``) runs the agent; ``xavi run`` says so
explicitly; ``xavi ctl`` is the control socket's client (:mod:`xavi.ctl`,
with its own exit codes). Exit codes of the agent (also in the README):

- 0: stopped by SIGTERM or SIGINT; containers keep running.
- 1: an unexpected internal error.
- 2: invalid command line, config or auth bundle; nothing was started or changed.
- 3: the secrets file is malformed or unsafe.
- 4: the Docker Engine cannot be reached.
- 5: an actor kept crashing (restart intensity exceeded); a service manager should restart Xavi.
- 6: another agent holds the control socket, or the socket cannot be created; nothing was
  started or changed.
"""

from __future__ import annotations

import argparse
import grp
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pykka

from xavi import __version__, log
from xavi.actors.config_actor import ConfigActor, Reload
from xavi.actors.control import ControlServer, ControlSettings
from xavi.actors.control_path import (
    DEFAULT_SOCKET,
    SocketInUse,
    SocketSettings,
    SocketSetupError,
    claim_socket,
)
from xavi.actors.discovery import DiscoveryActor
from xavi.actors.gossip import GossipActor
from xavi.actors.remote_config import RemoteConfigActor
from xavi.actors.secrets_actor import SecretsActor, register_with_redactor
from xavi.actors.supervisor import ChildSpec, Supervisor, SupervisorSettings
from xavi.bundle import apply_bundle
from xavi.config import load_config
from xavi.errors import BundleError, ConfigError, DockerUnavailable, SecretsError
from xavi.secrets import SECRETS_FILE, ensure_secrets

if TYPE_CHECKING:
    from xavi.docker_api import DockerAdapter

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SECRETS = 3
EXIT_DOCKER = 4
EXIT_ESCALATED = 5
EXIT_SOCKET = 6

DEFAULT_CONFIG_DIR = "/etc/tripleclabs"
DEFAULT_STATE_DIR = "/var/lib/xavi"


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="xavi",
        description="Edge agent: runs this host's Docker services and meshes with other hosts.",
    )
    parser.add_argument("--version", action="version", version=f"xavi {__version__}")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the agent (the default command)")
    # 'xavi ctl ...' is dispatched to xavi.ctl before parsing; this entry is for --help.
    commands.add_parser("ctl", help="talk to the running agent over its control socket "
                                    "('xavi ctl --help')", add_help=False)
    _add_run_options(parser)
    # The subcommand repeats the options without defaults, so 'xavi --log-level
    # debug run' keeps the value given before the subcommand.
    _add_run_options(run, default=argparse.SUPPRESS)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument(
        "--config-dir", type=Path, default=default,
        help=f"directory of xavi.json and xavi.secrets (default $XAVI_CONFIG_DIR or "
             f"{DEFAULT_CONFIG_DIR})",
    )
    parser.add_argument(
        "--state-dir", type=Path, default=default,
        help=f"directory for files mounted into containers (default $XAVI_STATE_DIR or "
             f"{DEFAULT_STATE_DIR})",
    )
    parser.add_argument("--auth", metavar="BUNDLE",
                        default=default, help="bootstrap from a base64 auth bundle before starting")
    parser.add_argument("--replace-secrets", action="store_true", default=default or False,
                        help="with --auth: replace existing secrets that differ from the bundle's")
    parser.add_argument("--log-level", default=default,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning",
                                 "error"],
                        help="lowest level logged (default INFO)")
    parser.add_argument("--log-format", default=default, choices=["text", "json"],
                        help="text lines or one JSON object per line (default text)")
    parser.add_argument("--docker-host", default=default,
                        help="Docker Engine address (default $DOCKER_HOST or the local socket)")
    parser.add_argument("--socket", type=Path, default=default,
                        help=f"control socket path (default $XAVI_SOCKET or {DEFAULT_SOCKET})")
    parser.add_argument("--socket-group", default=default,
                        help="group name or GID whose members may use the control socket "
                             "(socket mode 0660; default: none, mode 0600)")
    parser.add_argument("--enable-fault-injection", action="store_true",
                        default=default or False,
                        help="accept 'xavi ctl fault' commands (test systems only)")


class Agent:
    """One running agent: the supervisor and its children, plus the stop signal."""

    def __init__(self, config_dir: Path, state_dir: Path, docker_host: str | None,
                 settings: SupervisorSettings | None = None,
                 control: ControlSettings | None = None) -> None:
        self.control = control
        self.started = time.monotonic()
        self.config_dir = config_dir
        self.state_dir = state_dir
        self.docker_host = docker_host
        self.settings = settings or SupervisorSettings()
        self.stopped = threading.Event()
        self.exit_code = EXIT_OK
        self.supervisor: pykka.ActorRef[Any] | None = None

    def _docker(self) -> DockerAdapter:
        from xavi.docker_api import DockerAdapter

        return DockerAdapter(self.docker_host)

    def child_specs(self) -> list[ChildSpec]:
        """Return the static children in start order."""
        config_dir = self.config_dir
        specs = [
            ChildSpec("secrets", lambda sup: SecretsActor.start(sup, config_dir)),
            ChildSpec("config", lambda sup: ConfigActor.start(sup, config_dir)),
            ChildSpec("discovery", lambda sup: DiscoveryActor.start(sup),
                      DiscoveryActor.subscriptions),
            ChildSpec("gossip", lambda sup: GossipActor.start(sup), GossipActor.subscriptions),
            ChildSpec("remote-config", lambda sup: RemoteConfigActor.start(sup, config_dir),
                      RemoteConfigActor.subscriptions),
        ]
        control = self.control
        if control is not None:
            # Last, so that it starts after and stops before every actor it reports on.
            specs.append(ChildSpec(
                "control", lambda sup: ControlServer.start(sup, control, self.started),
                ControlServer.subscriptions,
            ))
        return specs

    def service_child(self, service: str) -> ChildSpec:
        """Return the spec of the ContainerActor of ``service``."""
        # Imported here, so that a gossip-only agent never loads the Docker SDK
        # (about 10 MB of resident memory).
        from xavi.actors.container import ContainerActor

        return ChildSpec(
            f"container:{service}",
            lambda sup: ContainerActor.start(sup, service, self._docker, self.state_dir),
            ContainerActor.subscriptions,
        )

    def escalate(self, reason: str) -> None:
        """Stop the agent with the escalation exit code."""
        self.exit_code = EXIT_ESCALATED
        self.stopped.set()

    def start(self) -> None:
        """Start the supervisor and its children."""
        self.supervisor = Supervisor.start(
            self.child_specs(), service_child=self.service_child, settings=self.settings,
            on_escalate=self.escalate,
        )

    def reload(self) -> None:
        """Ask the ConfigActor to read the config file again."""
        for ref in pykka.ActorRegistry.get_by_class(ConfigActor):
            ref.tell(Reload("SIGHUP"))

    def stop(self) -> None:
        """Stop every actor, children in reverse start order; containers keep running."""
        if self.supervisor is not None:
            try:
                self.supervisor.stop(block=True, timeout=60)
            except pykka.Timeout:
                log.error("supervisor_stop_timed_out")
        leftover = [t.name for t in threading.enumerate()
                    if t is not threading.main_thread() and t.is_alive() and not t.daemon]
        if leftover:
            log.warning("threads_left_at_stop", threads=",".join(leftover))


def _resolve_dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    config_dir = args.config_dir or Path(os.environ.get("XAVI_CONFIG_DIR", DEFAULT_CONFIG_DIR))
    state_dir = args.state_dir or Path(os.environ.get("XAVI_STATE_DIR", DEFAULT_STATE_DIR))
    return config_dir, state_dir


def _socket_settings(args: argparse.Namespace) -> SocketSettings:
    path = args.socket or Path(os.environ.get("XAVI_SOCKET", str(DEFAULT_SOCKET)))
    group = args.socket_group
    if group is None:
        return SocketSettings(path=path)
    try:
        gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError("--socket-group", [f"group {group!r} does not exist"]) from None
    return SocketSettings(path=path, group_gid=gid)


def run(args: argparse.Namespace) -> int:
    """Run the agent until a signal or an escalation; return the exit code."""
    log.configure(args.log_level or os.environ.get("XAVI_LOG_LEVEL", "INFO"),
                  args.log_format or os.environ.get("XAVI_LOG_FORMAT", "text"))
    config_dir, state_dir = _resolve_dirs(args)
    try:
        # First, so that an agent refused for a taken socket changes no file.
        socket_settings = _socket_settings(args)
        claim_socket(socket_settings)
        if args.auth:
            written = apply_bundle(args.auth, config_dir, replace_secrets=args.replace_secrets)
            log.info("auth_bundle_applied", written=",".join(written))
        config = load_config(config_dir / "xavi.json")
        secrets, created = ensure_secrets(config_dir / SECRETS_FILE)
        register_with_redactor(secrets)
        if created:
            log.info("secrets_created", path=config_dir / SECRETS_FILE, mode="0600")
        if config.services:
            from xavi.docker_api import DockerAdapter

            adapter = DockerAdapter(args.docker_host)
            adapter.ping()
            adapter.ensure_network()
            adapter.close()
    except (SocketInUse, SocketSetupError) as exc:
        log.critical("startup_failed", error=exc, action="nothing was started or changed")
        return EXIT_SOCKET
    except (ConfigError, BundleError) as exc:
        log.critical("startup_failed", error=exc, action="nothing was started or changed")
        return EXIT_USAGE
    except SecretsError as exc:
        log.critical("startup_failed", error=exc)
        return EXIT_SECRETS
    except DockerUnavailable as exc:
        log.critical("startup_failed", error=exc)
        return EXIT_DOCKER

    control = ControlSettings(socket=socket_settings, config_dir=config_dir,
                              fault_injection=bool(args.enable_fault_injection))
    agent = Agent(config_dir, state_dir, args.docker_host, control=control)

    def on_signal(signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            agent.reload()
            return
        log.info("stop_requested", signal=signal.Signals(signum).name)
        agent.stopped.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    log.info("agent_starting", version=__version__, node=config.cluster.node_name,
             config_dir=config_dir, state_dir=state_dir, services=",".join(config.services))
    agent.start()
    while not agent.stopped.wait(1.0):
        pass
    agent.stop()
    log.info("agent_stopped", exit_code=agent.exit_code,
             containers="left running" if agent.exit_code == EXIT_OK else "left as they are")
    return agent.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xavi`` command."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["ctl"]:
        from xavi import ctl  # the client needs none of the agent's start-up

        return ctl.main(arguments[1:])
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
