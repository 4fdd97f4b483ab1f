"""The base class of Xavi's supervised actors.

A :class:`XaviActor` answers the supervisor's :class:`Ping`, accepts injected
faults, publishes on the bus, owns its timers and reports its own crash to the
supervisor from ``on_failure``. Subclasses implement :meth:`handle` and, when
they keep state worth showing, :meth:`status`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka

from xavi import log
from xavi.actors.messages import (
    Abandon,
    ChildFailed,
    GetStatus,
    InjectCrash,
    InjectHang,
    Ping,
    Publish,
)


class InjectedCrash(RuntimeError):
    """Raised on purpose by fault injection."""


class XaviActor(pykka.ThreadingActor):
    """An actor supervised by :class:`~xavi.actors.supervisor.Supervisor`."""

    subscriptions: tuple[type, ...] = ()
    """Bus message types this actor receives."""

    def __init__(self, name: str, supervisor: pykka.ActorRef[Any] | None) -> None:
        super().__init__()
        self.name = name
        self.supervisor = supervisor
        self._timers: set[threading.Timer] = set()
        self._timers_lock = threading.Lock()
        self.abandoned = False
        """Set once a replacement runs; the instance then ignores every message."""

    # Messaging ------------------------------------------------------------

    def publish(self, message: Any) -> None:
        """Send ``message`` to every subscriber of its type through the supervisor."""
        if self.supervisor is None:
            return
        try:
            self.supervisor.tell(Publish(message=message, sender=self.name))
        except pykka.ActorDeadError:
            # The agent is stopping: nobody is left to hear the fact.
            log.debug("publish_after_stop", actor=self.name, type=type(message).__name__)

    def schedule(self, delay: float, message: Any) -> threading.Timer:
        """Tell ``message`` to this actor after ``delay`` seconds, unless it stopped."""
        ref = self.actor_ref

        def fire() -> None:
            with self._timers_lock:
                self._timers.discard(timer)
            if ref.is_alive():
                try:
                    ref.tell(message)
                except pykka.ActorDeadError:
                    pass

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._timers_lock:
            self._timers.add(timer)
        timer.start()
        return timer

    def cancel_timers(self) -> None:
        """Cancel every pending timer of this actor."""
        with self._timers_lock:
            timers = list(self._timers)
            self._timers.clear()
        for timer in timers:
            timer.cancel()

    # pykka hooks ----------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if self.abandoned:
            return None
        if isinstance(message, Abandon):
            self.abandoned = True
            log.warning("actor_abandoned", actor=self.name, reason="replaced after a hang")
            self.cancel_timers()
            self.on_crash()
            return None
        if isinstance(message, Ping):
            return True
        if isinstance(message, InjectCrash):
            log.warning("fault_injected", actor=self.name, fault="crash")
            raise InjectedCrash(f"injected crash in {self.name}")
        if isinstance(message, InjectHang):
            log.warning("fault_injected", actor=self.name, fault="hang", seconds=message.seconds)
            time.sleep(message.seconds)
            return None
        if isinstance(message, GetStatus):
            return self.status()
        return self.handle(message)

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.cancel_timers()
        self.on_crash()
        error = f"{exception_type.__name__}: {exception_value}"
        log.error("actor_crashed", actor=self.name, error=error)
        if self.supervisor is not None and self.supervisor.is_alive():
            self.supervisor.tell(ChildFailed(name=self.name, error=error))

    def on_stop(self) -> None:
        self.cancel_timers()
        if not self.abandoned:
            self.on_shutdown()

    # For subclasses -------------------------------------------------------

    def handle(self, message: Any) -> Any:
        """Handle a message other than the base ones."""
        log.debug("message_ignored", actor=self.name, type=type(message).__name__)
        return None

    def status(self) -> dict[str, Any]:
        """Return a JSON-compatible description of this actor's state."""
        return {}

    def on_crash(self) -> None:
        """Release threads and resources after a crash (``on_stop`` is not called then)."""
        self.on_shutdown()

    def on_shutdown(self) -> None:
        """Release threads and resources when the actor stops."""
