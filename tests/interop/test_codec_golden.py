"""Byte-for-byte comparison of Xavi's encoders with Go's, via the peer's codec mode.

The Go side encodes with go-msgpack 0.5.5 and Go 1.19's compress/lzw,
the libraries memberlist 0.2.2 uses, on structs with memberlist's field
names, types and tags.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator

import pytest
from go_peer import GoPeer

from xavi.protocol import lzw
from xavi.protocol.codec import encode_message
from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    Suspect,
)
from xavi.protocol.meta import encode_tags
from xavi.protocol.wire import PushPullHeader, encode_record

pytestmark = pytest.mark.interop

LOOPBACK = bytes([127, 0, 0, 1])
V6 = bytes(range(16))


@pytest.fixture(scope="module")
def codec_peer(go_peer_binary) -> Iterator[GoPeer]:
    peer = GoPeer(go_peer_binary, mode="codec")
    yield peer
    peer.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def letters(alphabet: bytes, size: int, seed: int) -> bytes:
    """Return ``size`` random bytes drawn from ``alphabet``."""
    rng = random.Random(seed)
    return bytes(rng.choice(alphabet) for _ in range(size))


LZW_INPUTS = [
    b"",
    b"x",
    b"abracadabra" * 3,
    bytes(range(256)) * 20,
    random.Random(7).randbytes(40000),
    letters(b"abcd", 70000, seed=8),
]


@pytest.mark.parametrize("data", LZW_INPUTS, ids=lambda d: f"{len(d)}-bytes")
def test_lzw_output_matches_go(codec_peer, data):
    go = codec_peer.request("lzw-compress", hex=data.hex())["hex"]
    assert lzw.compress(data).hex() == go


@pytest.mark.parametrize("data", LZW_INPUTS, ids=lambda d: f"{len(d)}-bytes")
def test_go_decompresses_python_lzw(codec_peer, data):
    go = codec_peer.request("lzw-decompress", hex=lzw.compress(data).hex())["hex"]
    assert bytes.fromhex(go) == data


CASES = [
    ("ping", Ping(seq_no=1, node="a"), {"SeqNo": 1, "Node": "a"}),
    (
        "ping",
        Ping(seq_no=300, node="n" * 40, source_addr=V6, source_port=70, source_node="s"),
        {
            "SeqNo": 300,
            "Node": "n" * 40,
            "SourceAddr": b64(V6),
            "SourcePort": 70,
            "SourceNode": "s",
        },
    ),
    (
        "indirect-ping",
        IndirectPing(
            seq_no=2**32 - 1,
            target=LOOPBACK,
            port=65535,
            node="t",
            nack=True,
            source_addr=LOOPBACK,
            source_port=7946,
            source_node="src",
        ),
        {
            "SeqNo": 2**32 - 1,
            "Target": b64(LOOPBACK),
            "Port": 65535,
            "Node": "t",
            "Nack": True,
            "SourceAddr": b64(LOOPBACK),
            "SourcePort": 7946,
            "SourceNode": "src",
        },
    ),
    ("ack", Ack(seq_no=9), {"SeqNo": 9}),
    ("ack", Ack(seq_no=9, payload=b"p" * 300), {"SeqNo": 9, "Payload": b64(b"p" * 300)}),
    ("nack", Nack(seq_no=65536), {"SeqNo": 65536}),
    ("err", ErrResp(error="e" * 70000), {"Error": "e" * 70000}),
    (
        "suspect",
        Suspect(incarnation=3, node="a", from_node="b"),
        {"Incarnation": 3, "Node": "a", "From": "b"},
    ),
    (
        "alive",
        Alive(
            incarnation=128,
            node="ñ",
            addr=LOOPBACK,
            port=256,
            meta=encode_tags({"role": "x"}),
            vsn=(1, 5, 2, 2, 5, 4),
        ),
        {
            "Incarnation": 128,
            "Node": "ñ",
            "Addr": b64(LOOPBACK),
            "Port": 256,
            "Meta": b64(encode_tags({"role": "x"})),
            "Vsn": b64(bytes((1, 5, 2, 2, 5, 4))),
        },
    ),
    (
        "dead",
        Dead(incarnation=2**31, node="a", from_node="a"),
        {"Incarnation": 2**31, "Node": "a", "From": "a"},
    ),
]


@pytest.mark.parametrize(("kind", "message", "fields"), CASES, ids=[c[0] for c in CASES])
def test_message_body_matches_go(codec_peer, kind, message, fields):
    go = codec_peer.request("msgpack-encode", type=kind, fields=fields)["hex"]
    assert encode_message(message)[1:].hex() == go


@pytest.mark.parametrize(("kind", "message", "fields"), CASES, ids=[c[0] for c in CASES])
def test_go_decodes_python_body(codec_peer, kind, message, fields):
    decoded = codec_peer.request(
        "msgpack-decode", type=kind, hex=encode_message(message)[1:].hex()
    )["fields"]
    for key, value in fields.items():
        assert decoded[key] == value, key


def test_push_pull_records_match_go(codec_peer):
    header = PushPullHeader(nodes=3, user_state_len=1000, join=True)
    go = codec_peer.request(
        "msgpack-encode",
        type="push-pull-header",
        fields={"Nodes": 3, "UserStateLen": 1000, "Join": True},
    )
    assert encode_record(header).hex() == go["hex"]
    state = PushNodeState(
        name="n",
        addr=V6,
        port=1,
        meta=b"",
        incarnation=5,
        state=NodeStateKind.LEFT,
        vsn=(1, 5, 2, 0, 0, 0),
    )
    go = codec_peer.request(
        "msgpack-encode",
        type="push-node-state",
        fields={
            "Name": "n",
            "Addr": b64(V6),
            "Port": 1,
            "Incarnation": 5,
            "State": 3,
            "Vsn": b64(bytes((1, 5, 2, 0, 0, 0))),
        },
    )
    assert encode_record(state).hex() == go["hex"]


def test_go_decodes_python_tags(codec_peer):
    tags = {"role": "xavi", "services": "postgres,valkey", "dc": "edge-1"}
    decoded = codec_peer.request("msgpack-decode", type="tags", hex=encode_tags(tags)[1:].hex())[
        "fields"
    ]
    assert decoded == tags
