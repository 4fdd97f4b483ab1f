"""Suspicion timeouts with Lifeguard's confirmations (memberlist 0.2.2 ``suspicion.go``).

When a probe of member M fails, M becomes suspect and a timer starts. If M
does not refute the suspicion (an alive message with a higher incarnation)
before the timer ends, M is declared dead. Independent reports from other
members that they suspect M too ("confirmations") shorten the timer.

Formulas, with durations in seconds:

- ``min = suspicion_mult * max(1, log10(max(1, n))) * probe_interval``, where
  ``n`` counts the known members including this node. The node scale is
  truncated to three decimals, as the Go code does with integer durations.
- ``max = suspicion_max_timeout_mult * min``.
- ``k = suspicion_mult - 2`` confirmations are expected, or 0 when fewer than
  ``k`` other members besides the suspect and this node exist.
- After ``c`` confirmations the total timeout is
  ``max - log(c + 1) / log(k + 1) * (max - min)``, floored to whole
  milliseconds and never below ``min``. With ``k = 0`` the timer starts at
  ``min``, otherwise at ``max``.

The class is sans-I/O: it keeps a deadline instead of a timer. The engine
reads ``deadline`` and declares the member dead when its clock reaches it.
"""

from __future__ import annotations

import math

__all__ = ["Suspicion", "remaining_suspicion_time", "suspicion_timeout"]

_NANOS_PER_SECOND = 1_000_000_000


def suspicion_timeout(suspicion_mult: int, num_nodes: int, probe_interval: float) -> float:
    """Return the minimum suspicion timeout in seconds (util.go suspicionTimeout).

    Mirrors Go's integer arithmetic on nanosecond durations, so the result is
    the same number that a memberlist 0.2.2 peer computes.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(num_nodes))))
    interval_ns = round(probe_interval * _NANOS_PER_SECOND)
    timeout_ns = suspicion_mult * int(node_scale * 1000) * interval_ns // 1000
    return timeout_ns / _NANOS_PER_SECOND


def remaining_suspicion_time(
    confirmations: int, expected: int, elapsed: float, minimum: float, maximum: float
) -> float:
    """Return the time left in seconds after ``confirmations`` of ``expected`` arrived.

    The result is negative when the timeout already passed. Mirrors
    ``remainingSuspicionTime``: the total is floored to whole milliseconds.
    """
    fraction = math.log(confirmations + 1.0) / math.log(expected + 1.0)
    raw = maximum - fraction * (maximum - minimum)
    timeout = math.floor(1000.0 * raw) / 1000.0
    timeout = max(timeout, minimum)
    return timeout - elapsed


class Suspicion:
    """Suspicion of one member: confirmations seen so far and the current deadline."""

    __slots__ = ("_confirmations", "_count", "_expected", "_max", "_min", "_start", "deadline")

    def __init__(
        self, from_node: str, expected: int, minimum: float, maximum: float, now: float
    ) -> None:
        self._expected = expected
        self._count = 0
        self._min = minimum
        self._max = maximum
        self._start = now
        # The accuser is excluded, because our own suspicion gossiped back
        # to us must not count as an independent confirmation.
        self._confirmations = {from_node}
        self.deadline = now + (maximum if expected >= 1 else minimum)
        """Clock time at which the suspect is declared dead."""

    @property
    def confirmations(self) -> int:
        """Independent confirmations counted so far."""
        return self._count

    @property
    def expected(self) -> int:
        """Confirmations needed to bring the timeout down to the minimum (``k``)."""
        return self._expected

    def confirm(self, from_node: str, now: float) -> bool:
        """Count a confirmation from ``from_node`` and move the deadline closer.

        Returns True if the confirmation was new, so the caller re-gossips the
        suspect message. Returns False for a repeat from the same member, or
        once ``expected`` confirmations have arrived.
        """
        if self._count >= self._expected:
            return False
        if from_node in self._confirmations:
            return False
        self._confirmations.add(from_node)
        self._count += 1
        remaining = remaining_suspicion_time(
            self._count, self._expected, now - self._start, self._min, self._max
        )
        # A negative remainder fires at once, because the deadline is then in the past.
        self.deadline = now + remaining
        return True
