"""Stream (TCP) framing: push/pull, stream pings, user messages (xavi.protocol.stream)."""

from __future__ import annotations

import struct

import msgpack
import pytest

from xavi.protocol.constants import MAX_PUSH_STATE_BYTES
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import (
    Ack,
    ErrResp,
    MessageType,
    NodeStateKind,
    Ping,
    PushNodeState,
    PushPull,
    User,
)
from xavi.protocol.security import Keyring
from xavi.protocol.stream import (
    StreamParser,
    encode_push_pull,
    encode_stream,
    encode_stream_message,
    parse_stream,
)

LOOPBACK = bytes([127, 0, 0, 1])
KEY = bytes(range(32))


def node(i: int, state: NodeStateKind = NodeStateKind.ALIVE) -> PushNodeState:
    return PushNodeState(
        name=f"node-{i}",
        addr=LOOPBACK,
        port=7946 + i,
        meta=b"\xff\x80" if i % 2 else b"",
        incarnation=i,
        state=state,
        vsn=(1, 5, 2, 2, 5, 4),
    )


PUSH_PULL = PushPull(
    nodes=tuple(node(i, NodeStateKind(i % 4)) for i in range(40)),
    user_state=b"delegate state" * 10,
    join=True,
)
MESSAGES = [
    PUSH_PULL,
    PushPull(nodes=(), user_state=b"", join=False),
    Ping(seq_no=1, node="go"),
    Ack(seq_no=1),
    ErrResp(error="Encryption is configured but remote state is not encrypted"),
    User(payload=b"user message" * 50),
]
WRAPPINGS = [
    {"compress": False, "keyring": None},
    {"compress": True, "keyring": None},
    {"compress": False, "keyring": "v1"},
    {"compress": True, "keyring": "v1"},
    {"compress": True, "keyring": "v0"},
]


def wrap(body: bytes, compress: bool, keyring: str | None, label: bytes = b"") -> tuple:
    ring = Keyring(primary_key=KEY) if keyring else None
    version = 0 if keyring == "v0" else 1
    data = encode_stream(
        body, compress=compress, keyring=ring, encryption_version=version, label=label
    )
    return data, ring


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("wrapping", WRAPPINGS, ids=lambda w: f"{w['compress']}-{w['keyring']}")
def test_stream_message_round_trips(message, wrapping):
    data, ring = wrap(encode_stream_message(message), **wrapping)
    assert parse_stream(data, keyring=ring) == message


@pytest.mark.parametrize("wrapping", WRAPPINGS, ids=lambda w: f"{w['compress']}-{w['keyring']}")
def test_parser_completes_only_on_the_last_byte(wrapping):
    data, ring = wrap(encode_push_pull(PUSH_PULL), **wrapping)
    parser = StreamParser(keyring=ring)
    for i in range(len(data) - 1):
        assert parser.feed(data[i : i + 1]) is None
    assert parser.feed(data[-1:]) == PUSH_PULL


def test_push_pull_layout_matches_memberlist():
    data = encode_push_pull(PushPull(nodes=(node(1),), user_state=b"us", join=True))
    unpacker = msgpack.Unpacker(raw=True)
    assert data[0] == MessageType.PUSH_PULL
    unpacker.feed(data[1:])
    header = unpacker.unpack()
    assert list(header.items()) == [(b"Join", True), (b"Nodes", 1), (b"UserStateLen", 2)]
    assert list(unpacker.unpack()) == [
        b"Addr",
        b"Incarnation",
        b"Meta",
        b"Name",
        b"Port",
        b"State",
        b"Vsn",
    ]
    assert unpacker.read_bytes(10) == b"us"


def test_encrypted_stream_header_is_type_and_length():
    data, _ = wrap(b"\x02\x81\xa5SeqNo\x01", compress=False, keyring="v1")
    assert data[0] == MessageType.ENCRYPT
    assert struct.unpack(">I", data[1:5])[0] == len(data) - 5


def test_encrypted_stream_authenticates_its_header():
    data, ring = wrap(encode_stream_message(Ack(seq_no=1)), compress=False, keyring="v1")
    tampered = bytearray(data)
    tampered[0:5] = bytes([MessageType.ENCRYPT]) + struct.pack(">I", len(data) - 5)
    assert parse_stream(bytes(tampered), keyring=ring) == Ack(seq_no=1)
    # Changing the declared length changes the additional data as well.
    longer = bytes([MessageType.ENCRYPT]) + struct.pack(">I", len(data) - 6) + data[5:-1]
    with pytest.raises(DecodeError):
        parse_stream(longer, keyring=ring)


def test_plain_stream_is_rejected_when_encryption_is_required():
    body = encode_stream_message(Ping(seq_no=1, node="a"))
    ring = Keyring(primary_key=KEY)
    with pytest.raises(DecodeError, match="not encrypted"):
        parse_stream(body, keyring=ring)
    assert parse_stream(body, keyring=ring, require_encryption=False) == Ping(seq_no=1, node="a")


def test_encrypted_stream_without_keyring_is_rejected():
    data, _ = wrap(encode_stream_message(Ack(seq_no=1)), compress=False, keyring="v1")
    with pytest.raises(DecodeError, match="encryption is not configured"):
        parse_stream(data)


def test_oversized_encrypted_length_is_rejected_before_reading_it():
    header = bytes([MessageType.ENCRYPT]) + struct.pack(">I", MAX_PUSH_STATE_BYTES + 1)
    with pytest.raises(DecodeError, match="larger than the limit"):
        StreamParser(keyring=Keyring(primary_key=KEY)).feed(header)


def test_negative_node_count_is_rejected():
    body = b"\x06" + msgpack.packb({"Join": False, "Nodes": -1, "UserStateLen": 0})
    with pytest.raises(DecodeError, match="out of range"):
        parse_stream(body)


def test_truncated_stream_raises_at_eof():
    data = encode_push_pull(PUSH_PULL)[:-3]
    parser = StreamParser()
    assert parser.feed(data) is None
    with pytest.raises(DecodeError, match="closed"):
        parser.feed_eof()


def test_bytes_after_the_message_are_kept_aside():
    body = encode_stream_message(Ack(seq_no=1))
    parser = StreamParser()
    assert parser.feed(body) == Ack(seq_no=1)
    assert parser.feed(b"more") == Ack(seq_no=1)
    assert parser.unused_data == b"more"


@pytest.mark.parametrize("kind", [MessageType.ALIVE, MessageType.COMPOUND, 99])
def test_invalid_stream_message_types_are_rejected(kind):
    with pytest.raises(DecodeError, match="invalid stream message type"):
        parse_stream(bytes([kind]) + msgpack.packb({}))


def test_compress_inside_compress_is_rejected():
    from xavi.protocol.codec import encode_compress

    data = encode_compress(encode_compress(encode_stream_message(Ack(seq_no=1))))
    with pytest.raises(DecodeError, match="nested"):
        parse_stream(data)


def test_stream_label_must_match():
    data, ring = wrap(encode_stream_message(Ack(seq_no=1)), False, "v1", label=b"blue")
    assert parse_stream(data, keyring=ring, label=b"blue") == Ack(seq_no=1)
    with pytest.raises(DecodeError, match="label"):
        parse_stream(data, keyring=ring, label=b"green")
    with pytest.raises(DecodeError, match="label"):
        parse_stream(data, keyring=ring)


def test_stream_label_is_authenticated():
    data, ring = wrap(encode_stream_message(Ack(seq_no=1)), False, "v1", label=b"blue")
    relabelled = bytes([244, 5]) + b"green" + data[6:]
    with pytest.raises(DecodeError, match="No installed keys"):
        parse_stream(relabelled, keyring=ring, label=b"green")
