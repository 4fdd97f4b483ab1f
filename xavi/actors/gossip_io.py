"""Sockets of the GossipActor: one UDP socket and one TCP listener on ``cluster.bind_port``.

This is the I/O half of the gossip shell. Its threads read the network,
decode what arrives with :mod:`xavi.protocol` and hand records to the actor
with ``tell`` (packets, finished TCP exchanges) or ``ask`` with a timeout
(an inbound push/pull or stream ping needs the engine's answer; the actor
never asks back, so this cannot deadlock). Everything that touches the
engine happens in the actor's thread.

Bad input never stops a thread: an undecodable packet or stream is dropped,
counted, and logged at most once per peer per ``LOG_EVERY`` seconds.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from xavi import log
from xavi.protocol.codec import decode_packet
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import Ack, Message, Ping, PushPull
from xavi.protocol.security import Keyring
from xavi.protocol.stream import StreamParser, encode_push_pull, encode_stream, \
    encode_stream_message

UDP_RECEIVE_BUFFER = 65536
"""Largest UDP datagram read, as memberlist's udpPacketBufSize."""
STREAM_TIMEOUT = 10.0
"""Seconds a TCP exchange may take, as memberlist's TCPTimeout."""
MAX_OUTBOUND_STREAMS = 32
"""Concurrent outbound TCP exchanges; more wait for a free slot."""
MAX_INBOUND_STREAMS = 64
"""Concurrent inbound TCP exchanges; a connection beyond this is closed at once."""
LOG_EVERY = 30.0
"""Seconds between two log lines about bad input from the same peer."""


@dataclass(frozen=True)
class PacketIn:
    """A decoded UDP packet."""

    addr: tuple[str, int]
    messages: list[Message]


@dataclass(frozen=True)
class RemotePushPull:
    """A push/pull a peer started; the actor replies with the local state."""

    addr: tuple[str, int]
    state: PushPull


@dataclass(frozen=True)
class StreamPing:
    """A ping that arrived over TCP; the actor replies with an ack or None."""

    ping: Ping


@dataclass(frozen=True)
class PushPullDone:
    """An outbound push/pull finished; ``remote`` is None when it failed."""

    addr: tuple[str, int]
    join: bool
    remote: PushPull | None
    error: str = ""


@dataclass(frozen=True)
class TcpPingDone:
    """An outbound TCP ping finished."""

    seq_no: int
    ok: bool


@dataclass
class Layers:
    """Wrapping of packets and streams, replaced whole when the keyring changes."""

    keyring: Keyring | None
    label: bytes = b""
    compress: bool = True


class GossipSockets:
    """Owns the sockets and threads; ``close`` stops them all."""

    def __init__(self, actor: pykka.ActorRef[Any], bind_addr: str, port: int,
                 layers: Layers) -> None:
        self.actor = actor
        self.layers = layers
        self.drop_percent = 0.0
        self.delay_ms = 0.0
        self.rejected = 0
        """Packets and streams dropped because they could not be decoded."""
        self._last_logged: dict[str, float] = {}
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_OUTBOUND_STREAMS)
        self._inbound = threading.BoundedSemaphore(MAX_INBOUND_STREAMS)
        self._count_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in bind_addr else socket.AF_INET
        self.udp = socket.socket(family, socket.SOCK_DGRAM)
        self.tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((bind_addr, port))
            self.udp.bind((bind_addr, port))
            self.tcp.listen(64)
        except OSError:
            self.udp.close()
            self.tcp.close()
            raise
        self.udp.settimeout(0.5)
        self.tcp.settimeout(0.5)
        self._threads = [
            threading.Thread(target=self._udp_loop, name="xavi-gossip-udp", daemon=True),
            threading.Thread(target=self._accept_loop, name="xavi-gossip-tcp", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        """Stop every thread and close the sockets."""
        self._closed.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        self.udp.close()
        self.tcp.close()

    # Bad input -------------------------------------------------------------

    def _reject(self, peer: tuple[str, int], what: str, error: Exception) -> None:
        key = f"{peer[0]}:{what}"
        now = time.monotonic()
        with self._count_lock:
            self.rejected += 1
            due = now - self._last_logged.get(key, -LOG_EVERY) >= LOG_EVERY
            if due:
                self._last_logged[key] = now
        if due:
            hint = ""
            if "decrypt" in str(error).lower() or "key" in str(error).lower():
                hint = "the peer may use another cluster key"
            log.warning("gossip_input_rejected", peer=f"{peer[0]}:{peer[1]}", kind=what,
                        error=error, hint=hint or None, rejected_total=self.rejected)

    # UDP ---------------------------------------------------------------------

    def send_packet(self, addr: tuple[str, int], packet: bytes) -> None:
        """Send one datagram, applying injected loss and delay."""
        if self.drop_percent and random.random() * 100 < self.drop_percent:
            return
        if self.delay_ms:
            timer = threading.Timer(self.delay_ms / 1000, self._send_now, args=(addr, packet))
            timer.daemon = True
            timer.start()
            return
        self._send_now(addr, packet)

    def _send_now(self, addr: tuple[str, int], packet: bytes) -> None:
        if self._closed.is_set():
            return
        try:
            self.udp.sendto(packet, addr)
        except OSError as exc:
            log.debug("gossip_send_failed", peer=f"{addr[0]}:{addr[1]}", error=exc)

    def _udp_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, addr = self.udp.recvfrom(UDP_RECEIVE_BUFFER)
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                continue
            peer = (addr[0], addr[1])
            layers = self.layers
            try:
                messages = decode_packet(data, keyring=layers.keyring, label=layers.label)
            except DecodeError as exc:
                self._reject(peer, "packet", exc)
                continue
            try:
                self.actor.tell(PacketIn(peer, messages))
            except pykka.ActorDeadError:
                return

    # TCP, inbound ----------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, addr = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                continue
            if not self._inbound.acquire(blocking=False):
                conn.close()
                self._reject((addr[0], addr[1]), "stream",
                             OSError(f"more than {MAX_INBOUND_STREAMS} streams at once"))
                continue
            threading.Thread(target=self._serve_stream_slot, args=(conn, (addr[0], addr[1])),
                             name="xavi-gossip-stream", daemon=True).start()

    def _serve_stream_slot(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        try:
            self._serve_stream(conn, peer)
        finally:
            self._inbound.release()

    def _serve_stream(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        layers = self.layers
        with conn:
            try:
                message = read_stream(conn, layers)
            except (DecodeError, OSError) as exc:
                self._reject(peer, "stream", exc)
                return
            try:
                if isinstance(message, PushPull):
                    answer = self.actor.ask(RemotePushPull(peer, message), timeout=STREAM_TIMEOUT)
                    body = encode_push_pull(answer)
                elif isinstance(message, Ping):
                    ack = self.actor.ask(StreamPing(message), timeout=STREAM_TIMEOUT)
                    if ack is None:
                        return
                    body = encode_stream_message(ack)
                else:
                    return  # user messages over TCP carry nothing Xavi uses
                conn.settimeout(STREAM_TIMEOUT)
                conn.sendall(encode_stream(body, compress=layers.compress,
                                          keyring=layers.keyring, label=layers.label))
            except (pykka.ActorDeadError, pykka.Timeout, OSError) as exc:
                log.debug("gossip_stream_unanswered", peer=f"{peer[0]}:{peer[1]}", error=exc)

    # TCP, outbound ---------------------------------------------------------

    def start_push_pull(self, addr: tuple[str, int], state: PushPull) -> None:
        """Exchange state with ``addr`` in a worker thread; the result comes as PushPullDone."""
        self._spawn(self._push_pull, addr, state)

    def start_tcp_ping(self, addr: tuple[str, int], ping: Ping, timeout: float) -> None:
        """Ping ``addr`` over TCP in a worker thread; the result comes as TcpPingDone."""
        self._spawn(self._tcp_ping, addr, ping, timeout)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            with self._slots:
                target(*args)

        threading.Thread(target=run, name="xavi-gossip-out", daemon=True).start()

    def _tell(self, message: Any) -> None:
        if self._closed.is_set():
            return
        try:
            self.actor.tell(message)
        except pykka.ActorDeadError:
            pass

    def _push_pull(self, addr: tuple[str, int], state: PushPull) -> None:
        layers = self.layers
        try:
            with socket.create_connection(addr, timeout=STREAM_TIMEOUT) as conn:
                conn.sendall(encode_stream(encode_push_pull(state), compress=layers.compress,
                                           keyring=layers.keyring, label=layers.label))
                answer = read_stream(conn, layers)
        except (DecodeError, OSError) as exc:
            self._tell(PushPullDone(addr, state.join, None, str(exc)))
            return
        if not isinstance(answer, PushPull):
            self._tell(PushPullDone(addr, state.join, None, "peer answered without its state"))
            return
        self._tell(PushPullDone(addr, state.join, answer))

    def _tcp_ping(self, addr: tuple[str, int], ping: Ping, timeout: float) -> None:
        layers = self.layers
        ok = False
        try:
            with socket.create_connection(addr, timeout=max(timeout, 0.1)) as conn:
                conn.sendall(encode_stream(encode_stream_message(ping), compress=layers.compress,
                                           keyring=layers.keyring, label=layers.label))
                answer = read_stream(conn, layers, max(timeout, 0.1))
                ok = isinstance(answer, Ack) and answer.seq_no == ping.seq_no
        except (DecodeError, OSError):
            ok = False
        self._tell(TcpPingDone(ping.seq_no, ok))


def read_stream(conn: socket.socket, layers: Layers, timeout: float = STREAM_TIMEOUT) -> Any:
    """Read one stream message from ``conn`` within ``timeout`` seconds in all.

    The deadline covers the whole message, as memberlist's per-connection
    deadline does, so a peer that trickles bytes cannot hold the thread.
    Raises DecodeError or OSError (``TimeoutError`` past the deadline).
    """
    parser = StreamParser(keyring=layers.keyring, label=layers.label)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"stream not complete within {timeout:.0f}s")
        conn.settimeout(remaining)
        chunk = conn.recv(65536)
        if not chunk:
            return parser.feed_eof()
        message = parser.feed(chunk)
        if message is not None:
            return message
