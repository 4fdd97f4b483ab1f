"""Suspicion timeout math, checked against numbers that memberlist 0.2.2 computes.

The expected values were printed by memberlist 0.2.2's own ``suspicionTimeout``,
``remainingSuspicionTime``, ``retransmitLimit`` and ``pushPullScale`` (Debian's
golang-github-hashicorp-memberlist-dev, run with ``go test`` on a throwaway
test file), or come from that package's test tables.
"""

from __future__ import annotations

import pytest

from xavi.protocol.broadcast import retransmit_limit
from xavi.protocol.suspicion import Suspicion, remaining_suspicion_time, suspicion_timeout
from xavi.protocol.timing import LAN, LOCAL, WAN, push_pull_scale


@pytest.mark.parametrize(
    ("mult", "num_nodes", "interval", "expected"),
    [
        (4, 1, 1.0, 4.0),
        (4, 3, 1.0, 4.0),
        (4, 10, 1.0, 4.0),
        (4, 30, 1.0, 5.908),
        (4, 100, 1.0, 8.0),
        (4, 1000, 1.0, 12.0),
        (6, 1000, 5.0, 90.0),
        (3, 7, 1.0, 3.0),
        (4, 33, 1.5, 9.108),
        (6, 250, 5.0, 71.91),
    ],
)
def test_suspicion_timeout_matches_go(
    mult: int, num_nodes: int, interval: float, expected: float
) -> None:
    assert suspicion_timeout(mult, num_nodes, interval) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("confirmations", "expected_k", "elapsed", "minimum", "maximum", "expected"),
    [
        # memberlist's own table in suspicion_test.go.
        (0, 3, 0.0, 2.0, 30.0, 30.0),
        (1, 3, 2.0, 2.0, 30.0, 14.0),
        (2, 3, 3.0, 2.0, 30.0, 4.81),
        (3, 3, 4.0, 2.0, 30.0, -2.0),
        (4, 3, 5.0, 2.0, 30.0, -3.0),
        (5, 3, 10.0, 2.0, 30.0, -8.0),
        # Printed by memberlist 0.2.2.
        (1, 2, 1.0, 12.0, 72.0, 33.144),
        (2, 2, 3.0, 12.0, 72.0, 9.0),
        (1, 2, 0.0, 5.907, 35.442, 16.807),
        (1, 4, 2.5, 4.0, 24.0, 12.886),
        (3, 4, 2.5, 4.0, 24.0, 4.272),
    ],
)
def test_remaining_suspicion_time_matches_go(
    confirmations: int,
    expected_k: int,
    elapsed: float,
    minimum: float,
    maximum: float,
    expected: float,
) -> None:
    remaining = remaining_suspicion_time(confirmations, expected_k, elapsed, minimum, maximum)
    assert remaining == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("mult", "num_nodes", "expected"),
    [(4, 0, 0), (4, 1, 4), (4, 9, 4), (4, 10, 8), (4, 99, 8), (4, 100, 12), (4, 1000, 16)],
)
def test_retransmit_limit_matches_go(mult: int, num_nodes: int, expected: int) -> None:
    assert retransmit_limit(mult, num_nodes) == expected


@pytest.mark.parametrize(
    ("num_nodes", "expected"),
    [
        (1, 30.0),
        (32, 30.0),
        (33, 60.0),
        (64, 60.0),
        (65, 90.0),
        (128, 90.0),
        (129, 120.0),
        (1000, 180.0),
    ],
)
def test_push_pull_scale_matches_go(num_nodes: int, expected: float) -> None:
    assert push_pull_scale(30.0, num_nodes) == expected


def test_presets_carry_memberlist_values() -> None:
    assert (LAN.probe_interval, LAN.probe_timeout, LAN.suspicion_mult) == (1.0, 0.5, 4)
    assert (LAN.gossip_interval, LAN.gossip_nodes, LAN.retransmit_mult) == (0.2, 3, 4)
    assert (WAN.probe_interval, WAN.probe_timeout, WAN.suspicion_mult) == (5.0, 3.0, 6)
    assert (WAN.gossip_nodes, WAN.gossip_to_the_dead_time) == (4, 60.0)
    assert (LOCAL.indirect_checks, LOCAL.retransmit_mult, LOCAL.suspicion_mult) == (1, 2, 3)
    assert (LOCAL.probe_timeout, LOCAL.gossip_interval) == (0.2, 0.1)


def test_suspicion_starts_at_max_when_confirmations_expected() -> None:
    suspicion = Suspicion("accuser", expected=3, minimum=0.5, maximum=2.0, now=10.0)
    assert suspicion.deadline == 12.0


def test_suspicion_starts_at_min_without_expected_confirmations() -> None:
    suspicion = Suspicion("accuser", expected=0, minimum=0.5, maximum=2.0, now=10.0)
    assert suspicion.deadline == 10.5
    assert suspicion.confirm("other", now=10.1) is False


def test_confirmation_shortens_deadline_like_go() -> None:
    # memberlist's TestSuspicion_Timer: k=3, min 0.5 s, max 2 s, one
    # confirmation gives a 1.25 s total timeout.
    suspicion = Suspicion("me", expected=3, minimum=0.5, maximum=2.0, now=0.0)
    assert suspicion.confirm("foo", now=0.1) is True
    assert suspicion.deadline == pytest.approx(1.25)
    assert suspicion.confirmations == 1


def test_confirmation_ignores_accuser_and_repeats() -> None:
    suspicion = Suspicion("me", expected=3, minimum=0.5, maximum=2.0, now=0.0)
    assert suspicion.confirm("me", now=0.1) is False
    assert suspicion.confirm("foo", now=0.1) is True
    assert suspicion.confirm("foo", now=0.2) is False
    assert suspicion.confirmations == 1


def test_confirmations_stop_counting_at_k() -> None:
    suspicion = Suspicion("me", expected=2, minimum=0.5, maximum=2.0, now=0.0)
    assert suspicion.confirm("a", now=0.0) is True
    assert suspicion.confirm("b", now=0.0) is True
    assert suspicion.deadline == pytest.approx(0.5)
    assert suspicion.confirm("c", now=0.0) is False
    assert suspicion.confirmations == 2


def test_late_confirmation_gives_past_deadline() -> None:
    suspicion = Suspicion("me", expected=1, minimum=0.5, maximum=2.0, now=0.0)
    assert suspicion.confirm("a", now=1.0) is True
    assert suspicion.deadline == pytest.approx(0.5)
