"""ContainerActor: keeps one service's container (``xavi-<service>``) as the config wants it.

Theory of operation:

- Desired state is a :class:`~xavi.docker_api.ContainerSpec` built from the
  config, the secrets and, for the app and the backup bot, the providers'
  locations. Its hash is a label on the container.
- Reconcile (on every new fact, on Docker events and on a periodic tick):
  no container -> pull if needed, create, start; Xavi's container with the
  same hash -> adopt it (start it if stopped, adjust limits in place);
  a different hash -> replace it. A container with Xavi's name but without
  Xavi's labels is never touched; the conflict is logged and reported.
- Replacing is ordered so that a failure leaves the running container alone
  and a ``kill -9`` at any point leaves no duplicate: pull, create the new
  container as ``xavi-<service>-next``, stop and remove the old one, rename
  the new one, start it. Reconcile first finishes or removes a leftover
  ``-next`` container.
- A container that dies is restarted at once, then after 1, 2, 4 ... 60 s if
  it keeps dying; the count resets once it has stayed up for ``STABLE_AFTER``
  seconds. Every death is logged with its exit code and OOM flag.
- Docker errors are caught, logged and retried on the next tick: they are not
  actor crashes. A crash of the actor itself loses nothing, because a new
  instance rebuilds everything from Docker's labels and the bus's facts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from xavi import log
from xavi.actors.base import XaviActor
from xavi.actors.messages import (
    ConfigChanged,
    InjectDockerFailure,
    RestartContainer,
    Retire,
    SecretsLoaded,
    ServiceHealth,
    ServiceLocations,
    Tick,
)
from xavi.config import Config
from xavi.docker_api import (
    LABEL_MANAGED,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    ContainerSpec,
    ContainerState,
    DockerAdapter,
)
from xavi.errors import DockerError, ImageError
from xavi.secrets import Secrets
from xavi.services import DEPENDENTS, Location, build_spec, write_secret_files

RECONCILE_INTERVAL = 10.0
"""Seconds between periodic reconciles, a backstop for missed Docker events."""
BACKOFF_FIRST = 1.0
"""Delay before the second restart of a container that keeps dying."""
BACKOFF_MAX = 60.0
STABLE_AFTER = 30.0
"""Seconds a container must stay up before its restart backoff resets."""
EVENT_RETRY = 2.0
"""Seconds between attempts to reopen a broken Docker event stream."""


@dataclass(frozen=True)
class DockerEvent:
    """A Docker event about this service's container, from the event thread."""

    action: str
    container_id: str
    attributes: dict[str, str]


@dataclass(frozen=True)
class RestartDue:
    """The backoff delay before restarting a dead container has passed."""


@dataclass(frozen=True)
class RestartStopped:
    """The container stopped for a requested restart (or failed to: ``error``)."""

    container_id: str
    error: str | None
    reply: Any


def _answer(reply: Any, result: dict[str, Any]) -> None:
    if reply is not None:
        reply.set(result)


def describe_exit(state: ContainerState) -> str:
    """Return a readable reason for a container's death."""
    if state.oom_killed:
        return "killed by the kernel's OOM killer (raise max_ram)"
    if state.exit_code > 128:
        return f"killed by signal {state.exit_code - 128}"
    return f"exited with code {state.exit_code}"


class ContainerActor(XaviActor):
    """Owns the container of one service."""

    subscriptions = (ConfigChanged, SecretsLoaded, ServiceLocations)

    def __init__(
        self,
        supervisor: pykka.ActorRef[Any] | None,
        service: str,
        docker_factory: Callable[[], DockerAdapter],
        state_dir: Path,
        reconcile_interval: float = RECONCILE_INTERVAL,
    ) -> None:
        super().__init__(f"container:{service}", supervisor)
        self.service = service
        self.docker_factory = docker_factory
        self.state_dir = state_dir
        self.reconcile_interval = reconcile_interval
        self.docker: DockerAdapter | None = None
        self.config: Config | None = None
        self.secrets: Secrets | None = None
        self.locations: dict[str, Location] | None = None
        self.container_id: str | None = None
        self.last_error: str | None = None
        self.last_exit: str | None = None
        self.restarts = 0
        self.failures = 0
        self.restart_at: float | None = None
        self.started_at: float | None = None
        self.replacing = False
        self.retired = False
        self._events_stop = threading.Event()
        self._events_thread: threading.Thread | None = None
        self._events_stream: Any = None
        self._last_health: ServiceHealth | None = None
        self._expected_die: str | None = None
        """ID of a container stopped on request, whose next die event is not a crash."""

    # Lifecycle ------------------------------------------------------------

    def on_start(self) -> None:
        self.docker = self.docker_factory()
        self._events_thread = threading.Thread(
            target=self._follow_events, name=f"xavi-events-{self.service}", daemon=True
        )
        self._events_thread.start()
        self.schedule(self.reconcile_interval, Tick("reconcile"))

    def on_shutdown(self) -> None:
        self._events_stop.set()
        stream = self._events_stream
        if stream is not None:
            stream.close()
        if self._events_thread is not None and self._events_thread is not threading.current_thread():
            self._events_thread.join(timeout=5)
        if self.docker is not None:
            self.docker.close()

    def _follow_events(self) -> None:
        assert self.docker is not None
        filters = {"type": "container",
                   "label": [f"{LABEL_MANAGED}=true", f"{LABEL_SERVICE}={self.service}"]}
        ref = self.actor_ref
        while not self._events_stop.is_set():
            try:
                self._events_stream = self.docker.events(filters)
                for raw in self._events_stream:
                    if self._events_stop.is_set():
                        return
                    action = str(raw.get("Action") or raw.get("status") or "")
                    if action in ("die", "oom", "start") or action.startswith("health_status"):
                        actor = raw.get("Actor") or {}
                        ref.tell(DockerEvent(action=action, container_id=str(actor.get("ID", "")),
                                             attributes=dict(actor.get("Attributes") or {})))
            except DockerError as exc:
                if self._events_stop.is_set():
                    return
                log.warning("docker_events_interrupted", service=self.service, error=exc)
            except pykka.ActorDeadError:
                return
            self._events_stop.wait(EVENT_RETRY)

    # Messages -------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        if isinstance(message, ConfigChanged):
            self.config = message.config
            self.reconcile("config")
        elif isinstance(message, SecretsLoaded):
            self.secrets = message.secrets
            self.reconcile("secrets")
        elif isinstance(message, ServiceLocations):
            self.locations = message.locations
            self.reconcile("locations")
        elif isinstance(message, DockerEvent):
            self._on_docker_event(message)
        elif isinstance(message, RestartDue):
            self.restart_at = None
            self.reconcile("restart")
        elif isinstance(message, Tick):
            self.schedule(self.reconcile_interval, Tick("reconcile"))
            self.reconcile("tick")
        elif isinstance(message, Retire):
            self._retire()
        elif isinstance(message, RestartContainer):
            self._restart_on_request(message.reply)
        elif isinstance(message, RestartStopped):
            self._restart_stopped(message)
        elif isinstance(message, InjectDockerFailure):
            self._inject_docker_failure(message.enabled)
        else:
            return super().handle(message)
        return None

    def _restart_on_request(self, reply: Any) -> None:
        """Stop the container in a helper thread (``xavi ctl restart``); RestartStopped follows."""
        container_id = self.container_id
        if self.docker is None or container_id is None:
            _answer(reply, {"service": self.service, "error": "no container adopted or created yet"})
            return
        self._expected_die = container_id
        self.restart_at = time.monotonic()  # keeps reconcile from starting it meanwhile
        docker, ref = self.docker, self.actor_ref

        def stop() -> None:
            error = None
            try:
                docker.stop(container_id)
            except DockerError as exc:
                error = str(exc)
            try:
                ref.tell(RestartStopped(container_id, error, reply))
            except pykka.ActorDeadError:
                _answer(reply, {"service": self.service, "error": "the ContainerActor restarted "
                                "meanwhile; the new one starts the container"})

        threading.Thread(target=stop, name=f"xavi-restart-{self.service}", daemon=True).start()

    def _restart_stopped(self, message: RestartStopped) -> None:
        assert self.docker is not None
        self.restart_at = None
        error = message.error
        if error is None:
            try:
                self.docker.start(message.container_id)
            except DockerError as exc:
                error = str(exc)  # the periodic reconcile starts it again
        if error is not None:
            self._expected_die = None
            _answer(message.reply, {"service": self.service, "error": error})
            return
        self.restarts += 1
        self.started_at = time.monotonic()
        log.info("container_restarted", service=self.service,
                 container=message.container_id[:12], reason="requested")
        self._report_health()
        _answer(message.reply, {"service": self.service, "container": message.container_id[:12],
                                "restarts": self.restarts})

    def _inject_docker_failure(self, enabled: bool) -> None:
        if self.docker is not None:
            self.docker.fail_calls = (lambda _operation: True) if enabled else None
        log.warning("fault_injected", actor=self.name,
                    fault="docker calls fail" if enabled else "docker calls work")
        self.reconcile("fault")

    def _on_docker_event(self, event: DockerEvent) -> None:
        if event.action == "die" and event.container_id == self._expected_die:
            self._expected_die = None  # stopped on request, started again already
            return
        if event.action == "die" and event.container_id == self.container_id \
                and not self.replacing and not self.retired:
            assert self.docker is not None
            state = self.docker.get(event.container_id)
            reason = describe_exit(state) if state else "container removed"
            self.last_exit = reason
            exit_code = state.exit_code if state else None
            oom = state.oom_killed if state else None
            log.warning("container_died", service=self.service, container=event.container_id[:12],
                        exit_code=exit_code, oom_killed=oom, reason=reason)
            self._plan_restart()
        elif event.action.startswith("health_status") or event.action == "start":
            self._report_health()

    def _plan_restart(self) -> None:
        now = time.monotonic()
        if self.started_at is not None and now - self.started_at >= STABLE_AFTER:
            self.failures = 0
        self.failures += 1
        delay = 0.0 if self.failures == 1 else min(BACKOFF_FIRST * 2 ** (self.failures - 2),
                                                    BACKOFF_MAX)
        self.restart_at = now + delay
        if delay:
            log.warning("container_restart_backoff", service=self.service,
                        delay_s=round(delay, 1), consecutive_failures=self.failures)
        self.schedule(delay, RestartDue())

    # Reconcile ------------------------------------------------------------

    def desired_spec(self) -> ContainerSpec | None:
        """Return the spec the config asks for, or None while facts are missing."""
        if self.config is None or self.secrets is None or self.retired:
            return None
        if self.service not in self.config.services:
            return None
        if self.service in DEPENDENTS and self.locations is None:
            return None
        return build_spec(self.service, self.config, self.secrets, self.state_dir,
                          self.locations)

    def reconcile(self, reason: str) -> None:
        """Bring the container to the desired spec; Docker errors are logged, not raised."""
        spec = self.desired_spec()
        if spec is None or self.docker is None:
            return
        try:
            self._reconcile(spec, reason)
            self.last_error = None
        except DockerError as exc:
            self.last_error = str(exc)
            log.error("reconcile_failed", service=self.service, reason=reason, error=exc,
                      action="retrying on the next tick; the running container is left as is")
        self._report_health()

    def _reconcile(self, spec: ContainerSpec, reason: str) -> None:
        assert self.docker is not None and self.secrets is not None
        write_secret_files(self.state_dir, self.service, self.secrets)
        self._finish_interrupted_replace(spec)
        current = self.docker.get(spec.name)
        if current is not None and not current.managed:
            raise DockerError(
                f"a container named {spec.name} exists without Xavi's labels; Xavi never touches "
                f"it. Rename or remove it ('docker rm -f {spec.name}') to let Xavi manage "
                f"{self.service}"
            )
        if current is None:
            self._ensure_image(spec, missing_is_fatal=True)
            self._ensure_bind_sources(spec)
            self.docker.ensure_network()
            container_id = self.docker.create(spec)
            self.docker.start(container_id)
            self._started(container_id)
            log.info("container_created", service=self.service, container=container_id[:12],
                     image=spec.image, reason=reason)
            return
        if current.labels.get(LABEL_SPEC_HASH) != spec.spec_hash():
            self._replace(current, spec, reason)
            return
        if self.container_id != current.id:
            log.info("container_adopted", service=self.service, container=current.id[:12],
                     status=current.status)
        self.container_id = current.id
        self._apply_limits(current, spec)
        if not current.running and self.restart_at is None:
            self.docker.start(current.id)
            self._started(current.id)
            log.info("container_started", service=self.service, container=current.id[:12],
                     reason=reason)

    def _started(self, container_id: str) -> None:
        if self.container_id == container_id and self.started_at is not None:
            self.restarts += 1
        self.container_id = container_id
        self.started_at = time.monotonic()

    def _ensure_image(self, spec: ContainerSpec, *, missing_is_fatal: bool) -> None:
        assert self.docker is not None and self.config is not None
        docker_cfg = self.config.docker
        present = self.docker.image_exists(spec.image)
        if present and docker_cfg.pull_policy == "missing":
            return
        try:
            self.docker.pull(spec.image, registry=docker_cfg.registry,
                             username=docker_cfg.username, password=docker_cfg.password)
            log.info("image_pulled", service=self.service, image=spec.image)
        except ImageError as exc:
            if present:
                log.warning("image_pull_failed", service=self.service, image=spec.image,
                            error=exc, action="using the local copy")
                return
            if missing_is_fatal:
                raise

    def _replace(self, current: ContainerState, spec: ContainerSpec, reason: str) -> None:
        assert self.docker is not None
        started = time.monotonic()
        self._ensure_image(spec, missing_is_fatal=True)
        self._ensure_bind_sources(spec)
        self.docker.ensure_network()
        next_name = f"{spec.name}-next"
        new_id = self.docker.create(spec, name=next_name)
        self.replacing = True
        try:
            self.docker.stop(current.id)
            self.docker.remove(current.id)
            self.docker.rename(new_id, spec.name)
            self.docker.start(new_id)
        finally:
            self.replacing = False
        self.failures = 0
        self.restart_at = None
        self.container_id = new_id
        self.started_at = time.monotonic()
        log.info("container_replaced", service=self.service, old=current.id[:12],
                 new=new_id[:12], image=spec.image, reason=reason,
                 docker_ms=round((time.monotonic() - started) * 1000, 1))

    def _ensure_bind_sources(self, spec: ContainerSpec) -> None:
        for mount in spec.mounts:
            if mount.kind == "bind" and not mount.read_only:
                path = Path(mount.source)
                if not path.exists():
                    path.mkdir(parents=True, mode=0o700)
                    log.info("data_directory_created", service=self.service, path=path)

    def _finish_interrupted_replace(self, spec: ContainerSpec) -> None:
        """Resolve a ``-next`` container left by an agent killed in the middle of a replace."""
        assert self.docker is not None
        leftover = self.docker.get(f"{spec.name}-next")
        if leftover is None or not leftover.managed:
            return
        if self.docker.get(spec.name) is None:
            self.docker.rename(leftover.id, spec.name)
            log.warning("replace_resumed", service=self.service, container=leftover.id[:12])
        else:
            self.docker.remove(leftover.id)
            log.warning("replace_leftover_removed", service=self.service,
                        container=leftover.id[:12])

    def _apply_limits(self, current: ContainerState, spec: ContainerSpec) -> None:
        assert self.docker is not None
        memory = spec.memory_bytes or 0
        cpus = spec.nano_cpus or 0
        if current.memory_bytes == memory and current.nano_cpus == cpus:
            return
        started = time.monotonic()
        self.docker.update_limits(current.id, spec.memory_bytes, spec.nano_cpus)
        log.info("limits_updated", service=self.service, container=current.id[:12],
                 memory_bytes=memory, nano_cpus=cpus,
                 docker_ms=round((time.monotonic() - started) * 1000, 1))

    def _retire(self) -> None:
        self.retired = True
        if self.docker is not None:
            try:
                for state in self.docker.list_managed(self.service):
                    self.docker.stop(state.id)
                    self.docker.remove(state.id)
                    log.info("container_removed", service=self.service,
                             container=state.id[:12], data="kept")
            except DockerError as exc:
                log.error("retire_failed", service=self.service, error=exc)
        self.publish(ServiceHealth(service=self.service, running=False, healthy=False))
        self.stop()

    def _report_health(self) -> None:
        if self.docker is None or self.container_id is None:
            return
        try:
            state = self.docker.get(self.container_id)
        except DockerError:
            return
        running = bool(state and state.running)
        healthy = running and (state is not None and state.health in (None, "healthy"))
        health = ServiceHealth(self.service, running, healthy, self.container_id)
        if health != self._last_health:
            self._last_health = health
            self.publish(health)

    def status(self) -> dict[str, Any]:
        health = self._last_health
        return {
            "service": self.service,
            "container": (self.container_id or "")[:12] or None,
            "running": bool(health and health.running),
            "healthy": bool(health and health.healthy),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "last_error": self.last_error,
        }
