"""DiscoveryActor: publishes only changes, keeps the last good location of a missing service."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from xavi.actors.discovery import DiscoveryActor
from xavi.actors.messages import ConfigChanged, GetStatus, Publish, ServiceLocations
from xavi.config import validate
from xavi.mesh import Member, Membership


class Collector(pykka.ThreadingActor):
    def __init__(self, published: queue.Queue[Any]) -> None:
        super().__init__()
        self.published = published

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Publish):
            self.published.put(message.message)
        return None


@pytest.fixture
def published() -> queue.Queue[Any]:
    return queue.Queue()


@pytest.fixture
def discovery(published: queue.Queue[Any]) -> Iterator[pykka.ActorRef[Any]]:
    ref = DiscoveryActor.start(Collector.start(published))
    config = validate({"images": {"app": "example/app:1"}, "services": ["app"],
                       "cluster": {"node_name": "a"}})
    ref.tell(ConfigChanged(config, 1))
    yield ref
    pykka.ActorRegistry.stop_all()


def provider(name: str, address: str, state: str = "alive") -> Member:
    return Member(name, address, 7946, state, {"xavi": "0.1.0", "services": "postgres=5432"})


def next_locations(published: queue.Queue[Any]) -> ServiceLocations:
    message = published.get(timeout=5)
    assert isinstance(message, ServiceLocations)
    return message


def test_provider_appears_then_disappears_keeping_last_value(
        discovery: Any, published: queue.Queue[Any]) -> None:
    assert next_locations(published).missing == ("postgres", "valkey")
    discovery.tell(Membership("a", (provider("b", "10.77.0.12"),)))
    found = next_locations(published)
    assert found.locations["postgres"].host == "10.77.0.12"
    assert found.missing == ("valkey",)

    discovery.tell(Membership("a", (provider("b", "10.77.0.12", state="dead"),)))
    lost = next_locations(published)
    assert lost.locations["postgres"].host == "10.77.0.12"
    assert lost.missing == ("postgres", "valkey")
    status = discovery.ask(GetStatus(), timeout=5)
    assert status["locations"]["postgres"]["missing"] is True


def test_same_membership_publishes_nothing_new(
        discovery: Any, published: queue.Queue[Any]) -> None:
    next_locations(published)
    members = (provider("b", "10.77.0.12"),)
    discovery.tell(Membership("a", members))
    next_locations(published)
    discovery.tell(Membership("a", members + (Member("go-peer", "127.0.0.1", 7000, "alive"),)))
    with pytest.raises(queue.Empty):
        published.get(timeout=0.5)
