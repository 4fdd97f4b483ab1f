"""A minimal Python memberlist endpoint built on xavi.protocol, for interop tests.

It is not the SWIM state machine: it binds one UDP socket and one TCP
listener on the same loopback port, decodes everything it receives with
``decode_packet`` and ``StreamParser``, answers pings with acks (unless
configured not to), and answers push/pull streams with a fixed state. Each packet is
kept together with its plaintext layers so tests can check which layers a
Go sender used.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xavi.protocol.codec import decode_packet, encode_message, encode_packet
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import (
    Ack,
    Message,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
)
from xavi.protocol.security import Keyring, decrypt_payload
from xavi.protocol.stream import StreamMessage, StreamParser, encode_stream, encode_stream_message

LOOPBACK = bytes([127, 0, 0, 1])
SERF_VSN = (1, 5, 2, 2, 5, 4)


@dataclass
class Received:
    """One UDP packet as received: its sender, raw bytes, plaintext and messages."""

    sender: tuple[str, int]
    raw: bytes
    plaintext: bytes
    messages: list[Message]


@dataclass
class StreamEvent:
    """One inbound stream and the message it carried."""

    sender: tuple[str, int]
    first_byte: int
    message: StreamMessage


@dataclass
class PyNode:
    """A loopback memberlist endpoint for tests. Call ``close`` when done."""

    name: str
    keyring: Keyring | None = None
    compress: bool = False
    crc: bool = False
    answer_pings: bool = True
    meta: bytes = b""
    user_state: bytes = b""
    vsn: tuple[int, int, int, int, int, int] = SERF_VSN
    extra_nodes: tuple[PushNodeState, ...] = ()
    incarnation: int = 1
    packets: list[Received] = field(default_factory=list)
    streams: list[StreamEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        # Short timeouts let the loops notice close() without a wake-up trick.
        self.tcp.settimeout(0.1)
        self.udp.settimeout(0.1)
        self._threads = [
            threading.Thread(target=self._udp_loop, daemon=True),
            threading.Thread(target=self._tcp_loop, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def state(self) -> PushNodeState:
        """This node's own entry for push/pull."""
        return PushNodeState(
            name=self.name,
            addr=LOOPBACK,
            port=self.port,
            meta=self.meta,
            incarnation=self.incarnation,
            state=NodeStateKind.ALIVE,
            vsn=self.vsn,
        )

    # --- sending ---------------------------------------------------------------

    def send(self, to: tuple[str, int], *messages: Message, **layers: Any) -> bytes:
        """Send messages in one packet with this node's layers (overridable)."""
        options = {"compress": self.compress, "crc": self.crc, "keyring": self.keyring}
        options.update(layers)
        packet = encode_packet([encode_message(m) for m in messages], **options)
        self.udp.sendto(packet, to)
        return packet

    def push_pull(
        self, to: tuple[str, int], *, join: bool = True, keyring: Keyring | None = None
    ) -> tuple[int, StreamMessage]:
        """Run a push/pull as the initiator. Return the reply's first byte and message."""
        ring = keyring if keyring is not None else self.keyring
        state = PushPull(
            nodes=(self.state(), *self.extra_nodes), user_state=self.user_state, join=join
        )
        return self.stream_request(to, encode_stream_message(state), keyring=ring)

    def stream_request(
        self, to: tuple[str, int], body: bytes, *, keyring: Keyring | None
    ) -> tuple[int, StreamMessage]:
        """Send one stream message and read the single reply."""
        with socket.create_connection(to, timeout=5) as conn:
            conn.sendall(encode_stream(body, compress=self.compress, keyring=keyring))
            return read_stream(conn, keyring)

    # --- receiving -------------------------------------------------------------

    def _udp_loop(self) -> None:
        while not self._closed:
            try:
                raw, sender = self.udp.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                plaintext = raw
                if self.keyring is not None:
                    plaintext = decrypt_payload(self.keyring, raw)
                messages = decode_packet(raw, keyring=self.keyring)
            except DecodeError as exc:
                with self._cond:
                    self.errors.append(str(exc))
                    self._cond.notify_all()
                continue
            with self._cond:
                self.packets.append(Received(sender, raw, plaintext, messages))
                self._cond.notify_all()
            for message in messages:
                if isinstance(message, Ping) and self.answer_pings:
                    reply_to = sender
                    if message.source_addr and message.source_port:
                        reply_to = (socket.inet_ntoa(message.source_addr), message.source_port)
                    self.send(reply_to, Ack(seq_no=message.seq_no))

    def _tcp_loop(self) -> None:
        while not self._closed:
            try:
                conn, sender = self.tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn, sender), daemon=True).start()

    def _serve(self, conn: socket.socket, sender: tuple[str, int]) -> None:
        with conn:
            conn.settimeout(5)
            try:
                first, message = read_stream(conn, self.keyring)
            except (DecodeError, OSError) as exc:
                with self._cond:
                    self.errors.append(f"stream: {exc}")
                    self._cond.notify_all()
                return
            with self._cond:
                self.streams.append(StreamEvent(sender, first, message))
                self._cond.notify_all()
            reply: bytes | None = None
            if isinstance(message, PushPull):
                state = PushPull(
                    nodes=(self.state(), *self.extra_nodes),
                    user_state=self.user_state,
                    join=message.join,
                )
                reply = encode_stream_message(state)
            elif isinstance(message, Ping) and self.answer_pings:
                reply = encode_stream_message(Ack(seq_no=message.seq_no))
            if reply is not None:
                conn.sendall(encode_stream(reply, compress=self.compress, keyring=self.keyring))

    def wait_for(
        self, predicate: Callable[[Message], bool], timeout: float = 10.0
    ) -> tuple[Received, Message]:
        """Return the first received message (old or new) that matches ``predicate``."""

        def find() -> tuple[Received, Message] | None:
            for packet in self.packets:
                for message in packet.messages:
                    if predicate(message):
                        return packet, message
            return None

        return self._wait(find, timeout, "a matching message")

    def wait_stream(
        self, predicate: Callable[[StreamEvent], bool], timeout: float = 10.0
    ) -> StreamEvent:
        """Return the first inbound stream that matches ``predicate``."""
        return self._wait(
            lambda: next((s for s in self.streams if predicate(s)), None),
            timeout,
            "a matching stream",
        )

    def wait_error(self, text: str, timeout: float = 10.0) -> str:
        """Return the first decode error message that contains ``text``."""
        return self._wait(
            lambda: next((e for e in self.errors if text in e), None),
            timeout,
            f"a decode error containing {text!r}",
        )

    def _wait(self, find: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name}: timed out after {timeout} s waiting for {what}; "
                        f"received {[m for p in self.packets for m in p.messages]}, "
                        f"errors {self.errors}"
                    )
                self._cond.wait(remaining)

    def close(self) -> None:
        self._closed = True
        for thread in self._threads:
            thread.join(timeout=5)
        self.udp.close()
        self.tcp.close()


def read_stream(conn: socket.socket, keyring: Keyring | None) -> tuple[int, StreamMessage]:
    """Read one stream message from ``conn``. Return its first byte and the message."""
    parser = StreamParser(keyring=keyring)
    first = -1
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return first, parser.feed_eof()
        if first < 0:
            first = chunk[0]
        message = parser.feed(chunk)
        if message is not None:
            return first, message
