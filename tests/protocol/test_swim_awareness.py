"""Lifeguard health awareness: clamping and timeout scaling."""

from __future__ import annotations

import pytest

from xavi.protocol.awareness import Awareness


def test_awareness_starts_healthy() -> None:
    awareness = Awareness(8)
    assert awareness.score == 0
    assert awareness.scale_timeout(1.0) == 1.0


def test_awareness_score_never_below_zero() -> None:
    awareness = Awareness(8)
    assert awareness.apply_delta(-5) == 0


def test_awareness_score_capped_below_max() -> None:
    awareness = Awareness(8)
    assert awareness.apply_delta(100) == 7
    assert awareness.apply_delta(1) == 7


def test_awareness_scales_timeout_by_score_plus_one() -> None:
    awareness = Awareness(8)
    awareness.apply_delta(3)
    assert awareness.scale_timeout(0.5) == 2.0
    awareness.apply_delta(-1)
    assert awareness.scale_timeout(0.5) == 1.5


def test_awareness_rejects_zero_max() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Awareness(0)
