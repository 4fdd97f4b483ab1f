"""Every parser of untrusted bytes raises only DecodeError, whatever the input.

The inputs are random, truncated, bit-flipped and spliced versions of valid
packets and streams, generated from fixed seeds so a failure reproduces.
Mutated plaintext is also re-encrypted with the right key, so the layers
behind the AES-GCM check get garbage too.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from xavi.protocol import lzw
from xavi.protocol.codec import (
    decode_message,
    decode_packet,
    encode_compound,
    encode_compress,
    encode_message,
    encode_packet,
)
from xavi.protocol.errors import DecodeError
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
    PushPull,
    Suspect,
    User,
)
from xavi.protocol.meta import encode_tags, parse_tags
from xavi.protocol.security import Keyring, decrypt_payload, encrypt_payload
from xavi.protocol.stream import StreamParser, encode_stream, encode_stream_message

LOOPBACK = bytes([127, 0, 0, 1])
KEYRING = Keyring(primary_key=bytes(range(32)))
CASES_PER_SEED = 1500

MESSAGES = [
    Ping(seq_no=1, node="a", source_addr=LOOPBACK, source_port=7946, source_node="b"),
    IndirectPing(seq_no=2, target=LOOPBACK, port=1, node="t", nack=True),
    Ack(seq_no=3, payload=b"p"),
    Nack(seq_no=4),
    Suspect(incarnation=5, node="a", from_node="b"),
    Alive(incarnation=6, node="a", addr=LOOPBACK, port=2, meta=b"\xff\x80", vsn=(1, 5, 2, 2, 5, 4)),
    Dead(incarnation=7, node="a", from_node="a"),
    User(payload=b"hello"),
    ErrResp(error="e"),
]
PUSH_PULL = PushPull(
    nodes=tuple(
        PushNodeState(f"n{i}", LOOPBACK, 7000 + i, b"", i, NodeStateKind(i % 4), (1, 5, 2, 2, 5, 4))
        for i in range(5)
    ),
    user_state=b"state",
    join=True,
)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Return a damaged copy of ``data``: truncated, flipped, spliced or random."""
    choice = rng.randrange(6)
    buf = bytearray(data)
    if choice == 0 and buf:
        return bytes(buf[: rng.randrange(len(buf))])
    if choice == 1 and buf:
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if choice == 2 and buf:
        i = rng.randrange(len(buf))
        buf[i] = rng.choice([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xCC, 0xDA, 0xDB, 0xDE, 0xDF, 0xFF])
        return bytes(buf)
    if choice == 3:
        i = rng.randrange(len(buf) + 1)
        return bytes(buf[:i] + rng.randbytes(rng.randint(1, 8)) + buf[i:])
    if choice == 4 and buf:
        i = rng.randrange(len(buf))
        j = rng.randrange(i, len(buf) + 1)
        return bytes(buf[:i] + buf[j:])
    return rng.randbytes(rng.randint(0, 64))


def valid_packets(rng: random.Random) -> list[bytes]:
    encoded = [encode_message(m) for m in MESSAGES]
    packets = [encode_packet([e]) for e in encoded]
    packets.append(encode_packet(encoded, crc=True))
    packets.append(encode_compress(encode_compound(encoded)))
    packets.append(encode_compound([encode_compress(encoded[5]), encoded[0]]))
    packets.append(encode_packet(encoded, compress=True, crc=True))
    return packets


def assert_only_decode_error(parse: Callable[[bytes], object], data: bytes) -> None:
    try:
        parse(data)
    except DecodeError:
        pass
    except Exception as exc:  # noqa: BLE001 - the point is to catch anything else
        pytest.fail(f"{parse.__name__} raised {type(exc).__name__}: {exc!r} on {data.hex()}")


def parse_stream_chunked(data: bytes) -> object:
    parser = StreamParser(keyring=None, require_encryption=False)
    mid = len(data) // 2
    parser.feed(data[:mid])
    parser.feed(data[mid:])
    return parser.feed_eof()


def parse_stream_encrypted(data: bytes) -> object:
    parser = StreamParser(keyring=KEYRING)
    parser.feed(data)
    return parser.feed_eof()


def decode_packet_encrypted(data: bytes) -> object:
    return decode_packet(data, keyring=KEYRING)


def decompress_lzw(data: bytes) -> object:
    return lzw.decompress(data, 1 << 16)


def decrypt(data: bytes) -> object:
    return decrypt_payload(KEYRING, data)


@pytest.mark.parametrize("seed", [1, 2])
def test_packet_decoders_raise_only_decode_error(seed):
    rng = random.Random(seed)
    packets = valid_packets(rng)
    for _ in range(CASES_PER_SEED):
        damaged = mutate(rng, rng.choice(packets))
        assert_only_decode_error(decode_packet, damaged)
        assert_only_decode_error(decode_message, damaged)
        sealed = encrypt_payload(1, KEYRING, damaged)
        assert_only_decode_error(decode_packet_encrypted, sealed)
        assert_only_decode_error(decode_packet_encrypted, mutate(rng, sealed))


@pytest.mark.parametrize("seed", [3, 4])
def test_stream_parser_raises_only_decode_error(seed):
    rng = random.Random(seed)
    bodies = [encode_stream_message(PUSH_PULL)] + [
        encode_stream_message(m) for m in (MESSAGES[0], MESSAGES[2], MESSAGES[7], MESSAGES[8])
    ]
    streams = bodies + [encode_stream(b, compress=True) for b in bodies]
    for _ in range(CASES_PER_SEED):
        body = mutate(rng, rng.choice(streams))
        assert_only_decode_error(parse_stream_chunked, body)
        sealed = encode_stream(body, keyring=KEYRING, compress=rng.random() < 0.3)
        assert_only_decode_error(parse_stream_encrypted, sealed)
        assert_only_decode_error(parse_stream_encrypted, mutate(rng, sealed))


def test_other_parsers_raise_only_decode_error():
    rng = random.Random(5)
    compressed = [lzw.compress(rng.randbytes(n)) for n in (0, 10, 500)]
    compressed.append(lzw.compress(b"abc" * 300))
    sealed = [encrypt_payload(v, KEYRING, b"payload") for v in (0, 1)]
    tags = [encode_tags({"role": "xavi", "services": "postgres"}), b"", b"web"]
    for _ in range(CASES_PER_SEED):
        assert_only_decode_error(decompress_lzw, mutate(rng, rng.choice(compressed)))
        assert_only_decode_error(decrypt, mutate(rng, rng.choice(sealed)))
        assert_only_decode_error(parse_tags, mutate(rng, rng.choice(tags)))


def test_fuzz_inputs_include_valid_ones():
    # Guards the fuzzer itself: unmutated inputs decode, so the loops above
    # feed the parsers something close to valid rather than only noise.
    rng = random.Random(0)
    for packet in valid_packets(rng):
        assert decode_packet(packet)
    assert parse_stream_chunked(encode_stream_message(PUSH_PULL)) == PUSH_PULL
