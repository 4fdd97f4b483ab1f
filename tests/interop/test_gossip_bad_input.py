"""A running Xavi agent survives malformed gossip packets and streams.

The target is an in-process gossip-only agent (``py-1``) in a mesh with a
real Go memberlist peer, so it handles real traffic during the test. From a
loopback socket the test sends random, truncated and bit-flipped UDP
packets and opens TCP connections carrying garbage, truncated and
oversized streams, plus one stream that stalls. The damaged packets are
mutations of packets built the way the node itself builds them
(``encode_packet`` and the node's keyring), damaged after or before
encryption.

Every input is first decoded locally with the same parser. Only inputs
that the parser rejects are sent, so the node's ``rejected_inputs`` counter
must grow by exactly their number, and no input can add a member or make
the node send traffic anywhere. Afterwards the node must still reply to
pings over UDP and TCP, keep its members alive, not restart its gossip
actor, log each kind of rejection at most once per ``LOG_EVERY`` seconds,
and accept a new node.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import msgpack
import pytest
from go_peer import GoPeer
from loguru import logger
from xavi_node import XaviNode, cluster_key, gossip_restarts, wait_until

from xavi.actors.gossip import keyring_from
from xavi.actors.gossip_io import LOG_EVERY, STREAM_TIMEOUT
from xavi.protocol.codec import decode_packet, encode_message, encode_packet
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    Message,
    MessageType,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    Suspect,
    User,
)
from xavi.protocol.security import Keyring, encrypt_payload
from xavi.protocol.stream import (
    StreamParser,
    encode_push_pull,
    encode_stream,
    encode_stream_message,
    parse_stream,
)
from xavi.secrets import read_secrets

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SEED = 20261204
"""Seed of every random choice, so a failure reproduces."""
CONVERGE = 20.0
BATCH = 50
"""UDP packets sent before waiting for the node to count them.

Small batches keep the socket buffer from overflowing, because a dropped packet would make the
count inexact."""
COUNT_TIMEOUT = 10.0
"""Seconds the node may take to count a batch of rejected inputs."""
LOOPBACK = bytes([127, 0, 0, 1])
SERF_VSN = (1, 5, 2, 2, 5, 4)
OTHER_KEYRING = Keyring(primary_key=b"w" * 32)
GO_STATES = {0: "alive", 1: "suspect", 2: "dead", 3: "left"}
"""memberlist's nodeStateType numbers, as the Go peer reports them."""
STALL_SLACK = 2.0
"""Seconds a stalled stream may outlive the node's stream timeout (thread wake-up, load)."""


@pytest.fixture
def rejection_lines() -> Iterator[list[str]]:
    """Xavi's ``gossip_input_rejected`` log lines."""
    lines: list[str] = []

    def keep(message: Any) -> None:
        if "gossip_input_rejected" in str(message):
            lines.append(str(message))

    sink = logger.add(keep, level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


def node_keyring(node: XaviNode) -> Keyring:
    secrets = read_secrets(node.secrets_path)
    assert secrets is not None
    return keyring_from(secrets)


def go_states(peer: GoPeer) -> dict[str, str]:
    """Return name -> state of the members the Go peer lists (memberlist lists no dead ones)."""
    members = peer.request("members")["members"] or []
    return {m["name"]: GO_STATES[m["state"]] for m in members}


def rejected(node: XaviNode) -> int:
    return int(node.status()["rejected_inputs"])


def count_reached(node: XaviNode, expected: int) -> bool:
    return rejected(node) >= expected


def rejects(data: bytes, parse: Callable[[bytes], object]) -> bool:
    """Whether ``parse`` raises DecodeError on ``data``; any other exception fails the test."""
    try:
        parse(data)
    except DecodeError:
        return True
    except Exception as exc:  # noqa: BLE001 - a parser of network bytes may raise only DecodeError
        pytest.fail(f"{getattr(parse, '__name__', parse)} raised {type(exc).__name__}: {exc!r} "
                    f"on {data.hex()}; the node's reader thread would die on this input")
    return False


def damage(rng: random.Random, data: bytes) -> bytes:
    """Return a damaged copy of ``data``: truncated, bit-flipped, overwritten or spliced."""
    buf = bytearray(data)
    choice = rng.randrange(4)
    if choice == 0:
        return bytes(buf[: rng.randrange(len(buf))])
    if choice == 1:
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if choice == 2:
        # Bytes that change the meaning of msgpack: nil, fixmap, str8, array32, map32, uint32.
        buf[rng.randrange(len(buf))] = rng.choice([0xC0, 0x80, 0xD9, 0xDD, 0xDF, 0xCE, 0xFF])
        return bytes(buf)
    at = rng.randrange(len(buf) + 1)
    return bytes(buf[:at] + rng.randbytes(rng.randint(1, 16)) + buf[at:])


class Corpus:
    """Messages like the ones on the wire between py-1 and go-1, and packets built from them."""

    def __init__(self, rng: random.Random, node: XaviNode, go: GoPeer, keyring: Keyring) -> None:
        self.rng = rng
        self.keyring = keyring
        self.messages = [
            encode_message(Ping(seq_no=rng.randrange(2**32), node="py-1")),
            encode_message(Ack(seq_no=rng.randrange(2**32))),
            encode_message(Nack(seq_no=rng.randrange(2**32))),
            encode_message(Suspect(incarnation=0, node="go-1", from_node="py-1")),
            encode_message(Dead(incarnation=0, node="go-1", from_node="py-1")),
            encode_message(Alive(incarnation=0, node="go-1", addr=LOOPBACK, port=go.port,
                                 meta=b"", vsn=SERF_VSN)),
            encode_message(User(payload=rng.randbytes(40))),
        ]
        states = tuple(
            PushNodeState(name, LOOPBACK, port, b"", 0, NodeStateKind.ALIVE, SERF_VSN)
            for name, port in (("py-1", node.port), ("go-1", go.port)))
        self.push_pull = encode_push_pull(PushPull(nodes=states, user_state=b"", join=False))

    def plaintext(self, *, crc: bool = True) -> bytes:
        """Return an unencrypted packet of one to all messages, maybe compressed, maybe with CRC."""
        parts = self.rng.sample(self.messages, self.rng.randint(1, len(self.messages)))
        return encode_packet(parts, compress=self.rng.random() < 0.5,
                             crc=crc and self.rng.random() < 0.5)

    def packet(self) -> bytes:
        """Return a packet as py-1 would send it: compressed when smaller, with CRC, encrypted."""
        parts = self.rng.sample(self.messages, self.rng.randint(1, len(self.messages)))
        return encode_packet(parts, compress=True, crc=True, keyring=self.keyring)

    def damaged_plaintext_packet(self) -> bytes:
        """Return a packet damaged before encryption, so only the layers behind AES-GCM see it.

        Half of them get a CRC of the damaged bytes, so the damage reaches the message parsers.
        """
        plain = damage(self.rng, self.plaintext(crc=False))
        if self.rng.random() < 0.5:
            plain = bytes((MessageType.HAS_CRC,)) + struct.pack(">I", zlib.crc32(plain)) + plain
        return encrypt_payload(1, self.keyring, plain)

    def stream(self, body: bytes | None = None) -> bytes:
        """Return a push/pull stream as py-1 would send it: compressed and encrypted."""
        return encode_stream(self.push_pull if body is None else body, compress=True,
                             keyring=self.keyring)


def udp_inputs(corpus: Corpus) -> dict[str, list[bytes]]:
    """Return the UDP inputs by kind; each is one the node's parser rejects."""
    rng, keyring = corpus.rng, corpus.keyring

    def parse(data: bytes) -> object:
        return decode_packet(data, keyring=keyring)

    makers: dict[str, tuple[int, Callable[[], bytes]]] = {
        "damaged after encryption": (150, lambda: damage(rng, corpus.packet())),
        "truncated after encryption": (
            60, lambda: (p := corpus.packet())[: rng.randrange(len(p))]),
        "damaged before encryption": (200, corpus.damaged_plaintext_packet),
        "random bytes": (100, lambda: rng.randbytes(rng.randint(1, 1400))),
        "empty": (10, lambda: b""),
        "unencrypted": (20, corpus.plaintext),
        "encrypted with another key": (
            20, lambda: encode_packet(corpus.messages[:2], keyring=OTHER_KEYRING)),
    }
    inputs: dict[str, list[bytes]] = {}
    for kind, (count, make) in makers.items():
        found: list[bytes] = []
        for _ in range(count * 20):
            if len(found) == count:
                break
            data = make()
            if rejects(data, parse):
                found.append(data)
        assert len(found) == count, f"only {len(found)} of {count} {kind} inputs are rejected"
        inputs[kind] = found
    return inputs


def odd_but_valid_packets(corpus: Corpus) -> list[bytes]:
    """Return packets that decode but mean nothing to py-1, so it must not crash or reply."""
    rng, keyring = corpus.rng, corpus.keyring
    messages: list[Message] = [
        Ping(seq_no=rng.randrange(2**32), node="someone-else"),
        Ack(seq_no=rng.randrange(2**32), payload=rng.randbytes(8)),
        Nack(seq_no=rng.randrange(2**32)),
        Suspect(incarnation=rng.randrange(2**32), node="ghost", from_node="ghost"),
        Dead(incarnation=rng.randrange(2**32), node="ghost", from_node="go-1"),
        User(payload=rng.randbytes(200)),
        ErrResp(error="not a packet message"),
    ]
    packets = [encode_packet([encode_message(m)], keyring=keyring) for m in messages]
    packets.append(encode_packet([encode_message(m) for m in messages], compress=True,
                                 crc=True, keyring=keyring))
    for packet in packets:
        assert not rejects(packet, lambda data: decode_packet(data, keyring=keyring))
    return packets


def stream_inputs(corpus: Corpus) -> dict[str, list[bytes]]:
    """Return complete TCP streams by kind; each is one the node's stream reader rejects."""
    rng, keyring = corpus.rng, corpus.keyring

    def parse(data: bytes) -> object:
        return parse_stream(data, keyring=keyring)

    header = b"".join((bytes((MessageType.PUSH_PULL,)), msgpack.packb(
        {"Join": False, "Nodes": 2**32 - 1, "UserStateLen": 0}, use_bin_type=False)))
    state_header = b"".join((bytes((MessageType.PUSH_PULL,)), msgpack.packb(
        {"Join": False, "Nodes": 0, "UserStateLen": 2**31}, use_bin_type=False)))
    makers: dict[str, tuple[int, Callable[[], bytes]]] = {
        "closed at once": (3, lambda: b""),
        "random bytes": (12, lambda: rng.randbytes(rng.randint(1, 4096))),
        "encrypted header, too few bytes": (
            5, lambda: bytes((MessageType.ENCRYPT,)) + struct.pack(">I", rng.randint(100, 2**20))
            + rng.randbytes(rng.randint(0, 64))),
        "truncated": (10, lambda: (s := corpus.stream())[: rng.randrange(len(s))]),
        "bit-flipped": (10, lambda: damage(rng, corpus.stream())),
        "unencrypted": (2, lambda: encode_stream(corpus.push_pull, compress=True)),
        "encrypted with another key": (
            2, lambda: encode_stream(corpus.push_pull, keyring=OTHER_KEYRING)),
        "huge node count": (1, lambda: corpus.stream(header)),
        "huge user state": (1, lambda: corpus.stream(state_header)),
        "unknown label": (1, lambda: bytes((MessageType.HAS_LABEL, 5)) + b"other"
                          + corpus.stream()),
    }
    inputs: dict[str, list[bytes]] = {}
    for kind, (count, make) in makers.items():
        found: list[bytes] = []
        for _ in range(count * 20):
            if len(found) == count:
                break
            data = make()
            if rejects(data, parse):
                found.append(data)
        assert len(found) == count, f"only {len(found)} of {count} {kind} streams are rejected"
        inputs[kind] = found
    return inputs


def send_stream(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection, close our side, and return what the node sent back."""
    reply = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=STREAM_TIMEOUT / 2) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                reply += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node closed the connection before reading all of it
    return bytes(reply)


def exchange_stream(port: int, data: bytes, keyring: Keyring) -> object:
    """Send one stream message and return the node's decoded reply."""
    parser = StreamParser(keyring=keyring)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        while (chunk := conn.recv(65536)) and parser.feed(chunk) is None:
            pass
    return parser.feed_eof()


class StalledStream:
    """A connection that sends part of an encrypted stream header, then nothing."""

    def __init__(self, port: int) -> None:
        self.started = time.monotonic()
        self.closed_after: float | None = None
        self.conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn.sendall(bytes((MessageType.ENCRYPT, 0, 0)))
        self.conn.settimeout(STREAM_TIMEOUT + 10)
        self.thread = threading.Thread(target=self._wait_close, name="stalled-stream",
                                       daemon=True)
        self.thread.start()

    def _wait_close(self) -> None:
        with self.conn:
            try:
                while self.conn.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            except TimeoutError:
                return
        self.closed_after = time.monotonic() - self.started


def test_node_survives_garbage_packets_and_streams(
        start_xavi: Callable[..., XaviNode], start_go: Callable[..., GoPeer],
        rejection_lines: list[str]) -> None:
    node = start_xavi("py-1")
    go = start_go(name="go-1", preset="lan", keys=cluster_key(node))
    go.request("join", addrs=[node.address])
    wait_until(lambda: node.members() == {"py-1": "alive", "go-1": "alive"}, CONVERGE,
               "py-1 to see go-1")
    keyring = node_keyring(node)
    corpus = Corpus(random.Random(SEED), node, go, keyring)
    udp = udp_inputs(corpus)
    odd = odd_but_valid_packets(corpus)
    streams = stream_inputs(corpus)
    base = rejected(node)
    first_rejection = time.monotonic()

    # The stalled stream runs while everything else is sent, and is counted when dropped.
    stalled = StalledStream(node.port)

    target = ("127.0.0.1", node.port)
    expected = base
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_socket:
        udp_socket.bind(("127.0.0.1", 0))
        sent = [data for kind in udp.values() for data in kind]
        corpus.rng.shuffle(sent)
        for start in range(0, len(sent), BATCH):
            batch = sent[start:start + BATCH]
            for data in batch:
                udp_socket.sendto(data, target)
            expected += len(batch)
            wait_until(partial(count_reached, node, expected), COUNT_TIMEOUT,
                       f"py-1 to count {expected - base} rejected packets")
        for packet in odd:
            udp_socket.sendto(packet, target)

        # py-1 still replies to a ping over UDP, and its reply is the first packet to this socket.
        ping = Ping(seq_no=4242, node="py-1")
        udp_socket.sendto(encode_packet([encode_message(ping)], keyring=keyring),
                          target)
        udp_socket.settimeout(5)
        data, source = udp_socket.recvfrom(65536)
        assert source == target
        # The ack may carry gossip (alive messages) piggybacked in the same packet.
        assert Ack(seq_no=4242) in decode_packet(data, keyring=keyring)

    for kind, inputs in streams.items():
        for data in inputs:
            assert send_stream(node.port, data) == b"", f"py-1 answered a {kind} stream"
            expected += 1
            assert rejected(node) >= expected, f"py-1 did not count a {kind} stream"

    # An oversized length header is rejected at once, without waiting for the body.
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as conn:
        began = time.monotonic()
        conn.sendall(bytes((MessageType.ENCRYPT,)) + b"\xff\xff\xff\xff")
        try:
            assert conn.recv(4096) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - began < 1.0
    expected += 1

    # py-1 still replies to a ping over TCP.
    reply = exchange_stream(node.port, encode_stream(
        encode_stream_message(Ping(seq_no=4343, node="py-1")), keyring=keyring), keyring)
    assert reply == Ack(seq_no=4343)

    stalled.thread.join(timeout=STREAM_TIMEOUT + STALL_SLACK + 5)
    assert stalled.closed_after is not None, "py-1 kept a stalled stream open"
    assert STREAM_TIMEOUT - 0.5 <= stalled.closed_after <= STREAM_TIMEOUT + STALL_SLACK
    expected += 1

    assert rejected(node) == expected, f"sent {expected - base} bad inputs"
    assert gossip_restarts(node) == 0
    status = node.status()
    assert status["running"]
    wait_until(lambda: node.members() == {"py-1": "alive", "go-1": "alive"}, CONVERGE,
               "py-1 to see go-1 alive")
    assert go_states(go) == {"py-1": "alive", "go-1": "alive"}
    assert not any(e.get("event") == "leave" and e.get("name") == "py-1" for e in go.events)

    # Repeats are rate-limited: one line per kind per LOG_EVERY seconds from this address.
    allowed = 1 + int((time.monotonic() - first_rejection) // LOG_EVERY)
    for kind in ("packet", "stream"):
        lines = [line for line in rejection_lines if f"kind={kind}" in line]
        assert 1 <= len(lines) <= allowed, lines

    newcomer = start_xavi("py-2", peers=[node.address])
    everyone = {"py-1": "alive", "go-1": "alive", "py-2": "alive"}
    wait_until(lambda: node.members() == everyone, CONVERGE, "py-1 to see py-2 join")
    wait_until(lambda: newcomer.members() == everyone, CONVERGE, "py-2 to see everyone")
    wait_until(lambda: go_states(go) == everyone, CONVERGE, "go-1 to see py-2")
    assert rejected(node) == expected


def test_trickling_stream_hits_stream_timeout(
        start_xavi: Callable[..., XaviNode]) -> None:
    node = start_xavi("py-1")
    give_up = STREAM_TIMEOUT + STALL_SLACK + 1
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as conn:
        began = time.monotonic()
        # An encrypted stream header announcing 1000 bytes, then one byte per second.
        conn.sendall(bytes((MessageType.ENCRYPT,)) + struct.pack(">I", 1000))
        conn.settimeout(1.0)
        closed_after = None
        while time.monotonic() - began < give_up:
            try:
                conn.sendall(b"\x00")
                if conn.recv(4096) == b"":
                    closed_after = time.monotonic() - began
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - began
                break
    assert closed_after is not None, f"py-1 kept a trickling stream open for {give_up:.0f}s"
    assert closed_after <= STREAM_TIMEOUT + STALL_SLACK
