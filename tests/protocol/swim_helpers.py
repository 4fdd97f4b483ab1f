"""Helpers for driving one SWIM engine by hand in tests."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from xavi.protocol.member import DEFAULT_VSN, MemberConfig
from xavi.protocol.messages import Alive, Message
from xavi.protocol.node import Memberlist
from xavi.protocol.outputs import Event, EventKind, Output, SendPacket
from xavi.protocol.timing import LAN, Timing

PORT = 7946


def ip(last: int) -> bytes:
    """Return the raw address 127.0.0.<last>."""
    return bytes((127, 0, 0, last))


@dataclass
class Clock:
    """Manual clock for one engine."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """An engine, its clock, and every output it has produced so far."""

    engine: Memberlist
    clock: Clock
    outputs: list[Output] = field(default_factory=list)

    def drain(self) -> list[Output]:
        """Collect new outputs, keep them in ``outputs``, and return them."""
        new = self.engine.poll_outputs()
        self.outputs.extend(new)
        return new

    def advance(self, seconds: float) -> list[Output]:
        """Move the clock timer by timer, as a shell would, and return the new outputs."""
        end = self.clock.now + seconds
        new: list[Output] = []
        deadline = self.engine.next_deadline()
        while deadline is not None and deadline <= end:
            self.clock.now = max(self.clock.now, deadline)
            self.engine.tick(self.clock.now)
            new.extend(self.drain())
            deadline = self.engine.next_deadline()
        self.clock.now = end
        return new

    def receive(
        self, *messages: Message, source: tuple[str, int] = ("127.0.0.9", PORT)
    ) -> list[Output]:
        """Feed one packet and return the new outputs."""
        self.engine.handle_packet(source, list(messages), self.clock.now)
        return self.drain()

    def events(self, kind: EventKind | None = None) -> list[Event]:
        """Return the events seen so far, optionally of one kind."""
        self.drain()
        return [
            o for o in self.outputs if isinstance(o, Event) and (kind is None or o.kind == kind)
        ]

    def packets(self) -> list[SendPacket]:
        """Return the packets sent so far."""
        self.drain()
        return [o for o in self.outputs if isinstance(o, SendPacket)]


def make_engine(
    name: str = "local",
    last_octet: int = 1,
    timing: Timing = LAN,
    seed: int = 7,
    meta: bytes = b"",
) -> Harness:
    """Build an engine at 127.0.0.<last_octet> with a manual clock."""
    clock = Clock()
    config = MemberConfig(name, ip(last_octet), PORT, meta, timing)
    engine = Memberlist(config, clock, random.Random(seed))
    harness = Harness(engine, clock)
    harness.drain()
    return harness


def alive(name: str, incarnation: int, last_octet: int, meta: bytes = b"") -> Alive:
    """Return an alive message for a peer at 127.0.0.<last_octet>."""
    return Alive(incarnation, name, ip(last_octet), PORT, meta, DEFAULT_VSN)
