"""Control-socket frames: round trips, size limits, and FrameError for every bad input."""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator

import msgpack
import pytest

from xavi.protocol.control_frames import (
    HEADER,
    MAX_NESTING,
    MAX_REQUEST_BYTES,
    FrameDecoder,
    FrameError,
    decode_payload,
    encode_frame,
    error_response,
    ok_response,
    read_frame,
    write_frame,
)

REQUEST = {"cmd": "fault", "args": {"kind": "hang", "actor": "config", "seconds": 2.5}}
FUZZ_SEEDS = range(4)
CASES_PER_SEED = 2000


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    left.settimeout(2)
    right.settimeout(2)
    yield left, right
    left.close()
    right.close()


def frame_of(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_request_round_trips() -> None:
    frame = encode_frame(REQUEST, MAX_REQUEST_BYTES)

    assert frame[:4] == struct.pack(">I", len(frame) - 4)
    assert FrameDecoder(MAX_REQUEST_BYTES).feed(frame) == [REQUEST]


def test_responses_have_documented_shape() -> None:
    assert ok_response([1]) == {"ok": True, "result": [1]}
    assert error_response("no", "bad_request") == {"ok": False, "error": "no",
                                                    "code": "bad_request"}


def test_decoder_takes_bytes_one_at_a_time() -> None:
    decoder = FrameDecoder(MAX_REQUEST_BYTES)
    frame = encode_frame(REQUEST, MAX_REQUEST_BYTES)
    seen = []
    for index in range(len(frame)):
        seen.extend(decoder.feed(frame[index:index + 1]))

    assert seen == [REQUEST]
    assert decoder.pending == 0


def test_decoder_splits_several_frames_in_one_chunk() -> None:
    first = encode_frame({"cmd": "status"}, MAX_REQUEST_BYTES)
    second = encode_frame({"cmd": "members"}, MAX_REQUEST_BYTES)
    decoder = FrameDecoder(MAX_REQUEST_BYTES)

    assert decoder.feed(first + second[:5]) == [{"cmd": "status"}]
    assert decoder.feed(second[5:]) == [{"cmd": "members"}]


def test_frame_at_limit_is_accepted() -> None:
    # A str of 1000 and one of about 64 KiB both take msgpack's 3-byte str16 header.
    overhead = len(msgpack.packb({"p": "x" * 1000})) - 1000
    big = {"p": "x" * (MAX_REQUEST_BYTES - overhead)}

    frame = encode_frame(big, MAX_REQUEST_BYTES)

    assert len(frame) - HEADER.size == MAX_REQUEST_BYTES
    assert FrameDecoder(MAX_REQUEST_BYTES).feed(frame) == [big]


def test_encoding_above_limit_raises() -> None:
    with pytest.raises(FrameError, match="limit"):
        encode_frame({"p": "x" * MAX_REQUEST_BYTES}, MAX_REQUEST_BYTES)


def test_encoding_unencodable_value_raises() -> None:
    with pytest.raises(FrameError, match="msgpack"):
        encode_frame({"p": object()}, MAX_REQUEST_BYTES)


def test_oversized_announcement_raises_before_payload() -> None:
    decoder = FrameDecoder(MAX_REQUEST_BYTES)

    with pytest.raises(FrameError, match="limit"):
        decoder.feed(struct.pack(">I", MAX_REQUEST_BYTES + 1))


@pytest.mark.parametrize(("payload", "message"), [
    (msgpack.packb([1, 2]), "not a map"),
    (msgpack.packb("status"), "not a map"),
    (msgpack.packb({1: "a"}), "msgpack"),
    (b"\xc1", "msgpack"),
    (msgpack.packb({"a": 1}) + b"\x00", "msgpack"),
    (b"\x85", "msgpack"),
    (b"", "msgpack"),
    (b"\x81\xa1a\xa2\xff\xfe", "msgpack"),
])
def test_bad_payload_raises_frame_error(payload: bytes, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_payload(payload)


def test_nesting_beyond_limit_raises() -> None:
    value: object = "leaf"
    for _ in range(MAX_NESTING + 2):
        value = {"n": value}

    with pytest.raises(FrameError, match="nests"):
        decode_payload(msgpack.packb(value))


def test_nesting_at_limit_is_accepted() -> None:
    value: object = "leaf"
    for _ in range(MAX_NESTING - 1):
        value = {"n": value}

    assert decode_payload(msgpack.packb(value)) == value


def mutations(rng: random.Random) -> Iterator[bytes]:
    valid = [encode_frame(m, MAX_REQUEST_BYTES) for m in
             (REQUEST, {"cmd": "status", "args": {}}, {"x": [1, 2.5, None, True, b"b"]})]
    for _ in range(CASES_PER_SEED):
        frame = bytearray(rng.choice(valid))
        choice = rng.randrange(5)
        if choice == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(64)))
        elif choice == 1:
            yield bytes(frame[:rng.randrange(len(frame))])
        elif choice == 2:
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
            yield bytes(frame)
        elif choice == 3:
            cut = rng.randrange(HEADER.size, len(frame))
            yield frame_of(bytes(frame[HEADER.size:cut]))
        else:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40)))
            yield frame_of(payload)


@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_decoder_raises_only_frame_error(seed: int) -> None:
    rng = random.Random(seed)
    for data in mutations(rng):
        decoder = FrameDecoder(MAX_REQUEST_BYTES)
        try:
            messages = decoder.feed(data)
        except FrameError:
            continue
        assert all(isinstance(m, dict) for m in messages)


def test_read_frame_returns_none_at_clean_end(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    left.shutdown(socket.SHUT_WR)

    assert read_frame(right, MAX_REQUEST_BYTES) is None


def test_read_frame_reads_written_frame(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    write_frame(left, REQUEST, MAX_REQUEST_BYTES)

    assert read_frame(right, MAX_REQUEST_BYTES) == REQUEST


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_read_frame_truncated_raises(pair: tuple[socket.socket, socket.socket],
                                     cut: int) -> None:
    left, right = pair
    left.sendall(encode_frame(REQUEST, MAX_REQUEST_BYTES)[:cut])
    left.shutdown(socket.SHUT_WR)

    with pytest.raises(FrameError, match="closed after"):
        read_frame(right, MAX_REQUEST_BYTES)


def test_read_frame_oversized_raises_without_reading_payload(
        pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    left.sendall(struct.pack(">I", 0xFFFFFFFF))

    with pytest.raises(FrameError, match="4294967295 bytes"):
        read_frame(right, MAX_REQUEST_BYTES)


def test_read_frame_times_out_as_timeout_error(
        pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    right.settimeout(0.05)
    left.sendall(b"\x00\x00")

    with pytest.raises(TimeoutError):
        read_frame(right, MAX_REQUEST_BYTES)
