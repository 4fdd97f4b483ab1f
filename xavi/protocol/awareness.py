"""Lifeguard local health awareness, as memberlist 0.2.2 keeps it (``awareness.go``).

A node that is slow or loses packets should not accuse others quickly. The
health score counts recent evidence that this node itself is the problem:
failed probes, missing nacks from indirect probers, and having to refute
suspicion about itself. Successful probes lower it again.

Invariant: ``0 <= score <= max_multiplier - 1``. A delta that would leave the
range stops at the nearest bound. Timeouts are scaled by ``score + 1``, so a
healthy node (score 0) uses the configured values unchanged.
"""

from __future__ import annotations

__all__ = ["Awareness"]


class Awareness:
    """Health score of the local node. Lower is healthier and 0 is the minimum."""

    __slots__ = ("_max", "_score")

    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError(f"awareness max multiplier must be at least 1, got {max_multiplier}")
        self._max = max_multiplier
        self._score = 0

    @property
    def score(self) -> int:
        """Current health score, from 0 to ``max_multiplier - 1``."""
        return self._score

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` to the score, clamp it to its range, and return the new score."""
        self._score = min(max(self._score + delta, 0), self._max - 1)
        return self._score

    def scale_timeout(self, timeout: float) -> float:
        """Return ``timeout`` stretched by the current score: ``timeout * (score + 1)``."""
        return timeout * (self._score + 1)
