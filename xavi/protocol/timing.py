"""Timing and tuning of the SWIM state machine, with memberlist's presets.

The fields mirror the tuning fields of memberlist 0.2.2's ``Config``
(``config.go``). ``LAN``, ``WAN`` and ``LOCAL`` carry the values of
``DefaultLANConfig``, ``DefaultWANConfig`` and ``DefaultLocalConfig``. All
durations are in seconds (float). The scaling formulas of ``util.go`` that
depend only on timing live here too.

Xavi adds one field that memberlist lacks: ``rejoin_interval``. memberlist
contacts its seed peers only when the application calls ``Join``, so a
partition that outlasts the dead-node timeouts leaves two clusters that never
merge again. Xavi's engine retries every configured seed that is not a live
member once per ``rejoin_interval``, so the halves find each other again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from xavi.protocol.constants import UDP_BUFFER_SIZE

__all__ = ["LAN", "LOCAL", "PUSH_PULL_SCALE_THRESHOLD", "WAN", "Timing", "push_pull_scale"]

# Cluster size above which the push/pull interval grows (pushPullScaleThreshold).
PUSH_PULL_SCALE_THRESHOLD = 32


@dataclass(frozen=True, slots=True)
class Timing:
    """Timing and fan-out settings. Durations are seconds. Defaults are memberlist's LAN preset."""

    probe_interval: float = 1.0
    """Time between two probes of random members. Awareness stretches the probe's wait."""

    probe_timeout: float = 0.5
    """Wait for a direct ack before indirect probes start; about the 99th percentile RTT."""

    indirect_checks: int = 3
    """Members asked to probe a target that did not ack a direct ping."""

    retransmit_mult: int = 4
    """Broadcast transmit limit is ``retransmit_mult * ceil(log10(n + 1))``."""

    suspicion_mult: int = 4
    """Minimum suspicion timeout is ``suspicion_mult * max(1, log10(n)) * probe_interval``."""

    suspicion_max_timeout_mult: int = 6
    """Maximum suspicion timeout as a multiple of the minimum."""

    push_pull_interval: float = 30.0
    """Time between full state exchanges, scaled up above 32 members. 0 disables them."""

    gossip_interval: float = 0.2
    """Time between gossip rounds. 0 disables gossip that does not ride on probes."""

    gossip_nodes: int = 3
    """Random members sent gossip in each round."""

    gossip_to_the_dead_time: float = 30.0
    """Time after a death during which the dead member still gets gossip and is not reaped."""

    awareness_max_multiplier: int = 8
    """Health scores run from 0 to this minus 1. A score stretches probe waits by score + 1."""

    disable_tcp_pings: bool = False
    """True turns off the TCP ping that memberlist sends beside the indirect probes."""

    dead_node_reclaim_time: float = 0.0
    """Time after which a dead member's name may come back from a new address. 0 means never."""

    udp_buffer_size: int = UDP_BUFFER_SIZE
    """Payload budget in bytes of one outgoing packet, before encryption."""

    tcp_timeout: float = 10.0
    """Deadline of a stream exchange (push/pull). The I/O shell enforces it."""

    rejoin_interval: float = 30.0
    """Xavi only: time between retries of seed peers that are not live members. 0 disables."""

    def with_changes(self, **changes: float | bool) -> Timing:
        """Return a copy with the given fields replaced."""
        return replace(self, **changes)  # type: ignore[arg-type]


# DefaultLANConfig of memberlist 0.2.2.
LAN = Timing()

# DefaultWANConfig: slower probes, longer suspicion, one more gossip target.
WAN = Timing(
    probe_interval=5.0,
    probe_timeout=3.0,
    suspicion_mult=6,
    push_pull_interval=60.0,
    gossip_interval=0.5,
    gossip_nodes=4,
    gossip_to_the_dead_time=60.0,
    tcp_timeout=30.0,
)

# DefaultLocalConfig: loopback or one host, so short timeouts and less redundancy.
LOCAL = Timing(
    probe_timeout=0.2,
    indirect_checks=1,
    retransmit_mult=2,
    suspicion_mult=3,
    push_pull_interval=15.0,
    gossip_interval=0.1,
    gossip_to_the_dead_time=15.0,
    tcp_timeout=1.0,
)


def push_pull_scale(interval: float, num_nodes: int) -> float:
    """Return the push/pull interval for a cluster of ``num_nodes`` (util.go pushPullScale).

    Up to 32 members the interval is unchanged. Above that it is multiplied by
    ``ceil(log2(n) - log2(32)) + 1``, so 33 members double it and 65 triple it.
    """
    if num_nodes <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(num_nodes) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * interval
