"""The supervisor: starts, watches, restarts and stops Xavi's actors, and runs their bus.

Theory of operation:

- Children start in the order of their specs (dependency order: secrets,
  config, discovery, gossip, then one ContainerActor per enabled service, then
  the control server) and stop in reverse.
- A child that crashes tells the supervisor (:class:`ChildFailed`). A child
  that does not answer a :class:`Ping` within ``ping_timeout`` is treated as
  crashed too: it is told to stop and a new instance replaces it.
- A crashed child is restarted after an exponential backoff. More than
  ``max_restarts`` restarts of one child within ``restart_window`` seconds
  escalate, as Erlang's restart intensity does: ``on_escalate`` is called and
  the agent exits non-zero so its service manager restarts it.
- The bus: children publish facts (:class:`Publish`); the supervisor forwards
  each to the children subscribed to its type and keeps the latest of each
  retained type, which it replays to a child when it (re)starts. A restarted
  child thus rebuilds its state from its own sources (files, Docker labels,
  gossip) plus current facts, never from a dead sibling's memory.
- ContainerActors follow the config: a service added to ``services`` gets a
  new child, a removed one is told to :class:`Retire` and is not restarted.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from xavi import log
from xavi.actors.messages import (
    RETAINED_TYPES,
    Abandon,
    ChildFailed,
    ConfigChanged,
    GetChildRefs,
    GetStatus,
    Inject,
    Ping,
    Publish,
    RestartChild,
    Retire,
    Tick,
)

ChildFactory = Callable[[pykka.ActorRef[Any]], pykka.ActorRef[Any]]


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child."""

    name: str
    factory: ChildFactory
    """Starts the actor, given the supervisor's ref, and returns its ref."""
    subscriptions: tuple[type, ...] = ()


@dataclass(frozen=True)
class SupervisorSettings:
    """Timing of supervision; the defaults suit a production agent."""

    ping_interval: float = 2.0
    """Seconds between liveness pings to each child."""
    ping_timeout: float = 20.0
    """Seconds a child may take to answer a ping before it counts as hung.

    Longer than Docker's 10 s stop timeout, because a ContainerActor replacing a
    container waits for the old one to stop.
    """
    backoff_base: float = 0.2
    """Delay before the first restart of a child; doubles with each recent restart."""
    backoff_max: float = 10.0
    """Maximum delay between restarts."""
    max_restarts: int = 5
    """Restarts of one child allowed within ``restart_window`` before escalating."""
    restart_window: float = 60.0
    stop_timeout: float = 15.0
    """Seconds to wait for each child to stop at shutdown."""


@dataclass
class _Child:
    spec: ChildSpec
    ref: pykka.ActorRef[Any] | None = None
    restarts: int = 0
    last_error: str | None = None
    history: deque[float] = field(default_factory=deque)
    ping: Any = None
    ping_sent: float = 0.0
    restarting: bool = False
    started_at: float = 0.0


def _answered(future: Any) -> bool:
    try:
        future.get(timeout=0)
    except pykka.Timeout:
        return False
    except Exception:  # noqa: BLE001 - a failed answer is still an answer
        return True
    return True


class Supervisor(pykka.ThreadingActor):
    """Runs the children described by ``specs`` and the ContainerActors the config enables."""

    def __init__(
        self,
        specs: list[ChildSpec],
        *,
        service_child: Callable[[str], ChildSpec] | None = None,
        settings: SupervisorSettings | None = None,
        on_escalate: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self._specs = specs
        self._service_child = service_child
        self.settings = settings or SupervisorSettings()
        self._on_escalate = on_escalate or (lambda reason: None)
        self._children: dict[str, _Child] = {}
        self._order: list[str] = []
        self._retained: dict[tuple[type, Any], Any] = {}
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._escalated = False

    # Lifecycle ------------------------------------------------------------

    def on_start(self) -> None:
        for spec in self._specs:
            self._add_child(spec)
        self._ticker = threading.Thread(target=self._tick_loop, name="xavi-supervisor-ticker",
                                        daemon=True)
        self._ticker.start()

    def on_stop(self) -> None:
        self._ticker_stop.set()
        for name in reversed(self._order):
            self._stop_child(self._children[name])
        if self._ticker is not None:
            self._ticker.join(timeout=self.settings.ping_interval + 1)

    def _tick_loop(self) -> None:
        while not self._ticker_stop.wait(self.settings.ping_interval):
            try:
                self.actor_ref.tell(Tick("supervisor"))
            except pykka.ActorDeadError:
                return

    # Messages -------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Publish):
            self._forward(message.message)
        elif isinstance(message, ChildFailed):
            self._child_failed(message.name, message.error)
        elif isinstance(message, RestartChild):
            self._restart_now(message.name)
        elif isinstance(message, Tick):
            self._check_children()
        elif isinstance(message, Inject):
            return self._inject(message)
        elif isinstance(message, GetStatus):
            return self._status()
        elif isinstance(message, GetChildRefs):
            return {name: child.ref for name, child in self._children.items()
                    if child.ref is not None and not child.restarting}
        elif isinstance(message, Ping):
            return True
        return None

    def _forward(self, message: Any) -> None:
        if isinstance(message, RETAINED_TYPES):
            self._retained[(type(message), getattr(message, "retain_key", None))] = message
        if isinstance(message, ConfigChanged):
            self._follow_services(message.config.services)
        for name in list(self._order):
            child = self._children[name]
            if child.ref is not None and not child.restarting and \
                    isinstance(message, child.spec.subscriptions):
                self._tell(child, message)

    def _tell(self, child: _Child, message: Any) -> None:
        assert child.ref is not None
        try:
            child.ref.tell(message)
        except pykka.ActorDeadError:
            log.debug("message_to_dead_actor", actor=child.spec.name)

    # Children -------------------------------------------------------------

    def _add_child(self, spec: ChildSpec) -> None:
        child = _Child(spec=spec)
        self._children[spec.name] = child
        self._order.append(spec.name)
        self._start(child)

    def _start(self, child: _Child) -> None:
        child.ref = child.spec.factory(self.actor_ref)
        child.restarting = False
        child.ping = None
        child.started_at = time.monotonic()
        for kind in RETAINED_TYPES:
            for (retained_kind, _key), message in list(self._retained.items()):
                if retained_kind is kind and isinstance(message, child.spec.subscriptions):
                    self._tell(child, message)
        log.debug("actor_started", actor=child.spec.name)

    def _stop_child(self, child: _Child) -> None:
        if child.ref is None or not child.ref.is_alive():
            return
        try:
            child.ref.stop(block=True, timeout=self.settings.stop_timeout)
        except pykka.Timeout:
            log.error("actor_stop_timed_out", actor=child.spec.name,
                      timeout_s=self.settings.stop_timeout)
        except pykka.ActorDeadError:
            pass

    def _follow_services(self, services: tuple[str, ...]) -> None:
        if self._service_child is None:
            return
        wanted = [f"container:{s}" for s in services]
        for name in [n for n in self._order if n.startswith("container:") and n not in wanted]:
            child = self._children.pop(name)
            self._order.remove(name)
            if child.ref is not None and child.ref.is_alive():
                log.info("service_disabled", service=name.split(":", 1)[1])
                child.ref.tell(Retire())
        for service in services:
            name = f"container:{service}"
            if name not in self._children:
                # Containers start after every static child except the control
                # server, which stays last so it can answer about all of them.
                self._add_child(self._service_child(service))
                self._order.remove(name)
                index = next((i for i, n in enumerate(self._order) if n == "control"),
                             len(self._order))
                self._order.insert(index, name)

    def _child_failed(self, name: str, error: str) -> None:
        child = self._children.get(name)
        if child is None:
            return
        child.last_error = error
        if child.restarting:
            # pykka marks a failed actor dead before on_failure reports it, so a
            # tick may already have planned this restart.
            return
        self._schedule_restart(child, reason="crashed")

    def _schedule_restart(self, child: _Child, reason: str) -> None:
        now = time.monotonic()
        settings = self.settings
        while child.history and now - child.history[0] > settings.restart_window:
            child.history.popleft()
        child.history.append(now)
        child.restarts += 1
        child.restarting = True
        if len(child.history) > settings.max_restarts:
            self._escalate(
                f"actor {child.spec.name} restarted {len(child.history)} times within "
                f"{settings.restart_window:.0f}s; last error: {child.last_error}"
            )
            return
        delay = min(settings.backoff_base * 2 ** (len(child.history) - 1), settings.backoff_max)
        log.warning("actor_restart_scheduled", actor=child.spec.name, reason=reason,
                    delay_s=round(delay, 3), restarts=child.restarts)
        timer = threading.Timer(delay, self._tell_restart, args=(child.spec.name,))
        timer.daemon = True
        timer.start()

    def _tell_restart(self, name: str) -> None:
        try:
            self.actor_ref.tell(RestartChild(name))
        except pykka.ActorDeadError:
            pass

    def _restart_now(self, name: str) -> None:
        child = self._children.get(name)
        if child is None or not child.restarting or self._escalated:
            return
        self._start(child)
        log.info("actor_restarted", actor=name, restarts=child.restarts)

    def _escalate(self, reason: str) -> None:
        if self._escalated:
            return
        self._escalated = True
        log.critical("restart_intensity_exceeded", reason=reason)
        self._on_escalate(reason)

    def _check_children(self) -> None:
        now = time.monotonic()
        for name in list(self._order):
            child = self._children[name]
            if child.restarting or child.ref is None:
                continue
            if not child.ref.is_alive():
                child.last_error = child.last_error or "stopped without reporting a crash"
                self._schedule_restart(child, reason="stopped")
                continue
            if child.ping is not None:
                if _answered(child.ping):
                    child.ping = None
                elif now - child.ping_sent > self.settings.ping_timeout:
                    child.last_error = f"did not answer a ping within {self.settings.ping_timeout}s"
                    log.error("actor_hung", actor=name, timeout_s=self.settings.ping_timeout)
                    child.ping = None
                    try:
                        # The hung instance releases what it holds (sockets,
                        # watchers) as soon as it runs again, without acting
                        # on anything queued before, then stops.
                        child.ref.tell(Abandon())
                        child.ref.stop(block=False)
                    except pykka.ActorDeadError:
                        pass
                    self._schedule_restart(child, reason="hung")
                continue
            try:
                child.ping = child.ref.ask(Ping(), block=False)
                child.ping_sent = now
            except pykka.ActorDeadError:
                pass

    def _inject(self, message: Inject) -> bool:
        child = self._children.get(message.target)
        if child is None or child.ref is None or child.restarting:
            return False
        self._tell(child, message.fault)
        return True

    def _status(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "alive": bool(child.ref is not None and child.ref.is_alive()
                              and not child.restarting),
                "restarts": child.restarts,
                "last_error": child.last_error,
                "uptime_s": round(time.monotonic() - child.started_at, 1),
            }
            for name, child in ((n, self._children[n]) for n in self._order)
        ]
