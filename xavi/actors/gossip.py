"""GossipActor: the I/O shell around the sans-I/O memberlist engine.

The engine (:class:`xavi.protocol.node.Memberlist`) makes every protocol
decision; this actor moves bytes and time. It:

- binds UDP and TCP on ``cluster.bind_addr:bind_port`` (:mod:`gossip_io`),
- feeds decoded packets and TCP exchanges to the engine and carries out its
  outputs (packets, push/pulls, TCP pings) after every input,
- runs a timer thread that wakes the actor at the engine's next deadline,
- joins ``cluster.peers`` (the engine retries seeds that are not members),
- advertises this host's healthy services in its metadata (serf tags, see
  :mod:`xavi.mesh`) and publishes :class:`~xavi.mesh.Membership` on the bus
  after every membership change.

Encryption is on whenever the secrets hold a cluster key, which they always
do: every packet and stream is AES-GCM encrypted with the primary key, and
any installed key decrypts. On a normal stop the node leaves gracefully
(peers see "left"); after a crash the new instance simply rejoins under the
same name and address, refuting any suspicion with a higher incarnation.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import pykka

from xavi import __version__, log
from xavi.actors.base import XaviActor
from xavi.actors.gossip_io import (
    GossipSockets,
    Layers,
    PacketIn,
    PushPullDone,
    RemotePushPull,
    StreamPing,
    TcpPingDone,
)
from xavi.actors.messages import (
    ConfigChanged,
    InjectGossipFault,
    KeyringChanged,
    SecretsLoaded,
    ServiceHealth,
)
from xavi.config import Config
from xavi.mesh import TAG_SERVICES, TAG_VERSION, Member, Membership, format_services_tag
from xavi.protocol import timing as timing_presets
from xavi.protocol.codec import encode_message, encode_packet
from xavi.protocol.constants import SERF_DELEGATE_VERSION_CURRENT, SERF_DELEGATE_VERSION_MAX, \
    SERF_DELEGATE_VERSION_MIN
from xavi.protocol.errors import DecodeError
from xavi.protocol.member import DEFAULT_VSN, MemberConfig, ProtocolVersionError
from xavi.protocol.messages import NodeStateKind
from xavi.protocol.meta import encode_tags, parse_tags
from xavi.protocol.node import Memberlist
from xavi.protocol.outputs import Event, EventKind, NodeInfo, SendPacket, SendTcpPing, \
    StartPushPull
from xavi.protocol.security import Keyring
from xavi.secrets import Secrets

LEAVE_TIMEOUT = 2.0
"""Seconds a stopping agent waits for its leave message to spread."""
PRESETS = {"lan": timing_presets.LAN, "local": timing_presets.LOCAL, "wan": timing_presets.WAN}
PLAIN_VSN = (*DEFAULT_VSN[:3], 0, 0, 0)
SERF_VSN = (*DEFAULT_VSN[:3], SERF_DELEGATE_VERSION_MIN, SERF_DELEGATE_VERSION_MAX,
            SERF_DELEGATE_VERSION_CURRENT)
STATE_NAMES = {NodeStateKind.ALIVE: "alive", NodeStateKind.SUSPECT: "suspect",
               NodeStateKind.DEAD: "dead", NodeStateKind.LEFT: "left"}


@dataclass(frozen=True)
class GossipTick:
    """The engine's next deadline has come."""


@dataclass(frozen=True)
class RetryBind:
    """Try again to bind the gossip port."""


BIND_RETRY = 0.5
"""Seconds between attempts to bind a port that is still in use.

A restarted GossipActor may start while the instance it replaces still has
the port (a crash being cleaned up, or a hang that has not ended yet)."""


def keyring_from(secrets: Secrets) -> Keyring:
    """Return the gossip keyring: the primary cluster key plus the extra decrypting keys."""
    primary = base64.b64decode(secrets.cluster_key)
    keys = [primary, *(base64.b64decode(k) for k in secrets.extra_cluster_keys)]
    return Keyring(keys, primary_key=primary)


def parse_peer(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (the config validator has checked the form)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _identity(config: Config) -> dict[str, object]:
    """Return the cluster settings that take effect only when the gossip engine starts."""
    cluster = config.cluster
    return {f"cluster.{key}": getattr(cluster, key) for key in
            ("bind_addr", "bind_port", "advertise_addr", "node_name", "timing", "label",
             "delegate_protocol")}


def member_from(info: NodeInfo) -> Member:
    """Convert an engine snapshot into the record other actors use."""
    try:
        tags = parse_tags(info.meta) if info.meta else {}
    except DecodeError:
        tags = {}
    address = ".".join(str(b) for b in info.addr) if len(info.addr) == 4 else \
        ":".join(f"{info.addr[i]:02x}{info.addr[i + 1]:02x}" for i in range(0, 16, 2))
    return Member(info.name, address, info.port, STATE_NAMES.get(info.state, "dead"), tags)


class GossipActor(XaviActor):
    """Runs this host's memberlist node."""

    subscriptions = (ConfigChanged, SecretsLoaded, ServiceHealth, KeyringChanged)

    def __init__(self, supervisor: pykka.ActorRef[Any] | None) -> None:
        super().__init__("gossip", supervisor)
        self.config: Config | None = None
        self.secrets: Secrets | None = None
        self.engine: Memberlist | None = None
        self.sockets: GossipSockets | None = None
        self.healthy: dict[str, bool] = {}
        self.peers: tuple[str, ...] = ()
        self._deadline: float | None = None
        self._wake = threading.Condition()
        self._timer_stop = False
        self._timer: threading.Thread | None = None
        self._membership: Membership | None = None
        self._bind_failures = 0
        self._identity: dict[str, object] = {}
        self._identity_warned: list[str] = []

    # Lifecycle ------------------------------------------------------------

    def on_shutdown(self) -> None:
        self._leave()
        self._close()

    def on_crash(self) -> None:
        self._close()

    def _close(self) -> None:
        with self._wake:
            self._timer_stop = True
            self._wake.notify_all()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join(timeout=2)
        if self.sockets is not None:
            self.sockets.close()
            self.sockets = None
        if self.engine is not None:
            self.engine.shutdown()

    def _leave(self) -> None:
        engine, sockets = self.engine, self.sockets
        if engine is None or sockets is None:
            return
        engine.leave(time.monotonic())
        self._pump()
        deadline = time.monotonic() + LEAVE_TIMEOUT
        while not engine.leave_complete and time.monotonic() < deadline:
            time.sleep(0.05)
            engine.tick(time.monotonic())
            self._pump()
        log.info("gossip_left", node=engine.name, complete=engine.leave_complete)

    def _start_engine(self) -> None:
        assert self.config is not None and self.secrets is not None
        cluster = self.config.cluster
        advertise = cluster.advertise_addr or cluster.bind_addr
        if advertise in ("0.0.0.0", "::"):
            advertise = "127.0.0.1"
            log.warning("gossip_advertise_guessed", address=advertise,
                        action="set cluster.advertise_addr to this host's address")
        vsn = SERF_VSN if cluster.delegate_protocol == "serf" else PLAIN_VSN
        member_config = MemberConfig(
            name=cluster.node_name,
            addr=ipaddress.ip_address(advertise).packed,
            port=cluster.bind_port,
            meta=self._meta(),
            timing=PRESETS[cluster.timing],
            vsn=vsn,
            encrypt_overhead=29,
            seeds=tuple(parse_peer(p) for p in cluster.peers),
        )
        layers = Layers(keyring=keyring_from(self.secrets), label=cluster.label.encode())
        try:
            self.sockets = GossipSockets(self.actor_ref, cluster.bind_addr, cluster.bind_port,
                                         layers)
        except OSError as exc:
            self._bind_failures += 1
            if self._bind_failures == 1 or self._bind_failures % 20 == 0:
                log.warning("gossip_bind_failed", bind=f"{cluster.bind_addr}:{cluster.bind_port}",
                            error=exc, attempts=self._bind_failures,
                            action=f"retrying every {BIND_RETRY}s; another process may hold "
                                   "the port")
            self.schedule(BIND_RETRY, RetryBind())
            return
        self._bind_failures = 0
        self.engine = Memberlist(member_config, clock=time.monotonic, rng=random.Random(),
                                 encode=encode_message)
        self.peers = cluster.peers
        self._identity = _identity(self.config)
        self._identity_warned: list[str] = []
        self._timer_stop = False
        self._timer = threading.Thread(target=self._timer_loop, name="xavi-gossip-timer",
                                       daemon=True)
        self._timer.start()
        log.info("gossip_started", node=cluster.node_name,
                 bind=f"{cluster.bind_addr}:{cluster.bind_port}",
                 advertise=f"{advertise}:{cluster.bind_port}", encryption="on",
                 peers=",".join(cluster.peers) or "none")
        if cluster.peers:
            self.engine.join([parse_peer(p) for p in cluster.peers])
        self._pump()
        self._publish_membership(force=True)

    # Timer ----------------------------------------------------------------

    def _timer_loop(self) -> None:
        ref = self.actor_ref
        with self._wake:
            while not self._timer_stop:
                deadline = self._deadline
                now = time.monotonic()
                if deadline is None or deadline > now:
                    self._wake.wait(timeout=min(1.0, deadline - now) if deadline else 1.0)
                    continue
                self._deadline = None
                try:
                    ref.tell(GossipTick())
                except pykka.ActorDeadError:
                    return

    def _set_deadline(self) -> None:
        if self.engine is None:
            return
        deadline = self.engine.next_deadline()
        with self._wake:
            earlier = deadline is not None and (self._deadline is None or deadline < self._deadline)
            self._deadline = deadline
            # The timer thread sleeps until the old deadline (or at most 1 s),
            # so it needs waking only when the new one comes sooner.
            if earlier:
                self._wake.notify_all()

    # Messages ---------------------------------------------------------------

    def handle(self, message: Any) -> Any:
        engine = self.engine
        if isinstance(message, PacketIn):
            if engine is not None:
                engine.handle_packet(message.addr, message.messages)
        elif isinstance(message, GossipTick):
            if engine is not None:
                engine.tick(time.monotonic())
        elif isinstance(message, RemotePushPull):
            if engine is None:
                raise pykka.ActorDeadError("gossip is not running")
            answer = engine.handle_push_pull(message.addr, message.state)
            self._pump()
            return answer
        elif isinstance(message, StreamPing):
            return engine.handle_stream_ping(message.ping) if engine is not None else None
        elif isinstance(message, PushPullDone):
            if engine is not None:
                if message.remote is None:
                    engine.push_pull_failed(message.addr, message.error)
                    if message.join:
                        log.warning("gossip_join_failed", peer=f"{message.addr[0]}:"
                                    f"{message.addr[1]}", error=message.error,
                                    action="retrying with the periodic rejoin")
                else:
                    try:
                        engine.merge_remote_state(message.remote)
                    except ProtocolVersionError as exc:
                        log.warning("gossip_peer_incompatible", peer=f"{message.addr[0]}:"
                                    f"{message.addr[1]}", error=exc,
                                    action="check cluster.delegate_protocol on both sides")
        elif isinstance(message, TcpPingDone):
            if engine is not None:
                engine.handle_tcp_ping_result(message.seq_no, message.ok)
        elif isinstance(message, ConfigChanged | SecretsLoaded | KeyringChanged):
            self._on_facts(message)
        elif isinstance(message, ServiceHealth):
            self.healthy[message.service] = message.healthy
            self._update_meta()
        elif isinstance(message, RetryBind):
            if self.engine is None and self.sockets is None and self.config and self.secrets:
                self._start_engine()
        elif isinstance(message, InjectGossipFault):
            self._inject(message)
        else:
            return super().handle(message)
        self._pump()
        return None

    def _on_facts(self, message: Any) -> None:
        if isinstance(message, ConfigChanged):
            old = self.config
            self.config = message.config
            if old is not None and self.engine is not None:
                changed = [key for key, value in _identity(message.config).items()
                           if value != self._identity.get(key)]
                if changed and changed != self._identity_warned:
                    log.warning("gossip_identity_changed", keys=",".join(changed),
                                action="restart the agent to use the new values")
                self._identity_warned = changed
                peers = message.config.cluster.peers
                new_peers = [p for p in peers if p not in self.peers]
                if new_peers:
                    self.engine.join([parse_peer(p) for p in new_peers])
                if peers != self.peers:
                    # Removed peers stop being retried by the periodic rejoin.
                    self.engine.set_seeds([parse_peer(p) for p in peers])
                    self.peers = peers
                self._update_meta()
        else:
            self.secrets = message.secrets
            if self.sockets is not None:
                label = self.config.cluster.label.encode() if self.config else b""
                self.sockets.layers = Layers(keyring=keyring_from(message.secrets), label=label)
                log.info("gossip_keyring_updated", keys=1 + len(message.secrets.extra_cluster_keys))
        if self.engine is None and self.sockets is None and self._bind_failures == 0 and \
                self.config is not None and self.secrets is not None:
            self._start_engine()

    def _inject(self, fault: InjectGossipFault) -> None:
        if self.sockets is None:
            return
        if fault.drop_percent is not None:
            self.sockets.drop_percent = fault.drop_percent
        if fault.delay_ms is not None:
            self.sockets.delay_ms = fault.delay_ms
        log.warning("fault_injected", actor=self.name, drop_percent=self.sockets.drop_percent,
                    delay_ms=self.sockets.delay_ms)

    # Engine outputs -----------------------------------------------------------

    def _pump(self) -> None:
        engine, sockets = self.engine, self.sockets
        if engine is None or sockets is None:
            return
        changed = False
        layers = sockets.layers
        for output in engine.poll_outputs():
            if isinstance(output, SendPacket):
                parts = [enc if enc is not None else encode_message(msg)
                         for msg, enc in zip(output.messages, output.encoded, strict=True)]
                packet = encode_packet(parts, compress=layers.compress, crc=output.crc,
                                       keyring=layers.keyring, label=layers.label)
                sockets.send_packet(output.addr, packet)
            elif isinstance(output, StartPushPull):
                sockets.start_push_pull(output.addr, engine.local_state(output.join))
            elif isinstance(output, SendTcpPing):
                sockets.start_tcp_ping(output.addr, output.ping,
                                       output.deadline - time.monotonic())
            elif isinstance(output, Event):
                changed = True
                self._log_event(output)
        if changed:
            self._publish_membership()
        self._set_deadline()

    def _log_event(self, event: Event) -> None:
        node = member_from(event.node)
        peer = f"{node.address}:{node.port}"
        if event.kind is EventKind.JOIN:
            log.info("member_joined", member=node.name, peer=peer,
                     services=node.tags.get(TAG_SERVICES, "") or None)
        elif event.kind is EventKind.LEAVE:
            what = "member_left" if node.state == "left" else "member_failed"
            log.info(what, member=node.name, peer=peer)
        elif event.kind is EventKind.UPDATE:
            log.info("member_updated", member=node.name, peer=peer,
                     services=node.tags.get(TAG_SERVICES, "") or None)
        else:
            other = member_from(event.other) if event.other else None
            log.error("member_name_conflict", member=node.name, peer=peer,
                      claimed_by=f"{other.address}:{other.port}" if other else None,
                      action="give each host a unique cluster.node_name")

    def _publish_membership(self, force: bool = False) -> None:
        if self.engine is None:
            return
        members = tuple(sorted((member_from(info) for info in self.engine.nodes()),
                               key=lambda m: m.name))
        membership = Membership(local=self.engine.name, members=members)
        if force or membership != self._membership:
            self._membership = membership
            self.publish(membership)

    def _meta(self) -> bytes:
        assert self.config is not None
        services = {
            service: self.config.service[service].port or 0
            for service, healthy in self.healthy.items()
            if healthy and service in self.config.services and self.config.service[service].port
        }
        return encode_tags({TAG_VERSION: __version__,
                            TAG_SERVICES: format_services_tag(services)})

    def _update_meta(self) -> None:
        if self.engine is None or self.config is None:
            return
        meta = self._meta()
        if meta != self.engine.local_node().meta:
            self.engine.update_meta(meta)
            log.info("gossip_meta_updated", services=parse_tags(meta).get(TAG_SERVICES) or None)

    # Status -----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        if self.engine is None:
            return {"running": False, "members": []}
        return {
            "running": True,
            "node": self.engine.name,
            "health_score": self.engine.health_score,
            "rejected_inputs": self.sockets.rejected if self.sockets else 0,
            "members": [
                {"name": m.name, "address": f"{m.address}:{m.port}", "state": m.state,
                 "services": m.tags.get(TAG_SERVICES, ""), "xavi": m.is_xavi,
                 "tags": dict(m.tags)}
                for m in (self._membership.members if self._membership else ())
            ],
        }
