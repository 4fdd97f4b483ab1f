"""Supervisor: restarts crashed and hung children, replays facts, escalates, stops cleanly."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pykka
import pytest

from xavi.actors.base import XaviActor
from xavi.actors.messages import (
    GetStatus,
    Inject,
    InjectCrash,
    InjectHang,
    SecretsLoaded,
)
from xavi.actors.supervisor import ChildSpec, Supervisor, SupervisorSettings
from xavi.secrets import Secrets

FAST = SupervisorSettings(ping_interval=0.05, ping_timeout=0.3, backoff_base=0.01,
                          backoff_max=0.05, max_restarts=3, restart_window=30.0,
                          stop_timeout=2.0)


@dataclass
class Journal:
    """Records what the fake children saw, shared only with the test thread."""

    events: list[tuple[str, str]]
    changed: threading.Condition

    def add(self, name: str, what: str) -> None:
        with self.changed:
            self.events.append((name, what))
            self.changed.notify_all()

    def wait_for(self, item: tuple[str, str], count: int = 1, timeout: float = 5.0) -> None:
        with self.changed:
            ok = self.changed.wait_for(lambda: self.events.count(item) >= count, timeout)
        assert ok, f"{item} seen {self.events.count(item)} times, expected {count}: {self.events}"


class Recorder(XaviActor):
    subscriptions = (SecretsLoaded,)

    def __init__(self, supervisor: Any, name: str, journal: Journal) -> None:
        super().__init__(name, supervisor)
        self.journal = journal

    def on_start(self) -> None:
        self.journal.add(self.name, "start")

    def on_shutdown(self) -> None:
        self.journal.add(self.name, "stop")

    def handle(self, message: Any) -> Any:
        if isinstance(message, SecretsLoaded):
            self.journal.add(self.name, "secrets")
        return None


class Publisher(Recorder):
    def on_start(self) -> None:
        super().on_start()
        self.publish(SecretsLoaded(Secrets("a" * 8, "b" * 8, "c" * 44)))


@pytest.fixture
def journal() -> Journal:
    return Journal([], threading.Condition())


@pytest.fixture
def escalations() -> list[str]:
    return []


@pytest.fixture
def supervisor(journal: Journal, escalations: list[str]) -> Iterator[pykka.ActorRef[Any]]:
    specs = [
        ChildSpec("first", lambda sup: Publisher.start(sup, "first", journal)),
        ChildSpec("second", lambda sup: Recorder.start(sup, "second", journal),
                  Recorder.subscriptions),
    ]
    ref = Supervisor.start(specs, settings=FAST, on_escalate=escalations.append)
    yield ref
    if ref.is_alive():
        ref.stop()
    pykka.ActorRegistry.stop_all()


def test_children_start_in_order_and_get_published_facts(
        supervisor: Any, journal: Journal) -> None:
    journal.wait_for(("second", "secrets"))
    assert journal.events.index(("first", "start")) < journal.events.index(("second", "start"))


def test_crashed_child_is_restarted_with_retained_facts(
        supervisor: Any, journal: Journal) -> None:
    journal.wait_for(("second", "secrets"))
    assert supervisor.ask(Inject("second", InjectCrash()), timeout=2)
    journal.wait_for(("second", "start"), count=2)
    journal.wait_for(("second", "secrets"), count=2)
    status = {c["name"]: c for c in supervisor.ask(GetStatus(), timeout=2)}
    assert status["second"]["restarts"] == 1
    assert "injected crash" in status["second"]["last_error"]
    assert status["first"]["restarts"] == 0


def test_hung_child_is_detected_by_ping_and_replaced(supervisor: Any, journal: Journal) -> None:
    journal.wait_for(("second", "start"))
    supervisor.ask(Inject("second", InjectHang(1.0)), timeout=2)
    journal.wait_for(("second", "start"), count=2)
    status = {c["name"]: c for c in supervisor.ask(GetStatus(), timeout=2)}
    assert "did not answer a ping" in status["second"]["last_error"]


def test_crash_loop_escalates(supervisor: Any, journal: Journal,
                              escalations: list[str]) -> None:
    for attempt in range(1, FAST.max_restarts + 2):
        journal.wait_for(("second", "start"), count=attempt)
        supervisor.ask(Inject("second", InjectCrash()), timeout=2)
    deadline = threading.Event()
    for _ in range(100):
        if escalations:
            break
        deadline.wait(0.05)
    assert escalations and "second restarted 4 times" in escalations[0]


def test_stop_is_in_reverse_order_and_leaves_no_thread(
        supervisor: Any, journal: Journal) -> None:
    journal.wait_for(("second", "secrets"))
    before = set(threading.enumerate())
    supervisor.stop()
    assert journal.events.index(("second", "stop")) < journal.events.index(("first", "stop"))
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []
    actor_threads = [t for t in threading.enumerate() if t.name.startswith(("Recorder", "Publisher",
                                                                            "Supervisor"))]
    assert actor_threads == []
