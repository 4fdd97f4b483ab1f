"""LZW compatibility with Go's compress/lzw, LSB order, 8-bit literals."""

from __future__ import annotations

import random

import pytest

from xavi.protocol import lzw
from xavi.protocol.errors import DecodeError


def letters(alphabet: bytes, size: int, seed: int) -> bytes:
    """Return ``size`` random bytes drawn from ``alphabet``."""
    rng = random.Random(seed)
    return bytes(rng.choice(alphabet) for _ in range(size))


# Outputs of Go 1.19's lzw.NewWriter(w, lzw.LSB, 8), recorded with the Go
# test peer's codec mode (tests/interop checks many more against Go live).
GO_VECTORS = [
    (b"", "000302"),
    (b"a", "00c30404"),
    (b"ABCABC", "0083081922704840"),
    (b"TOBEORNOTTOBEORTOBEORNOT", "00a93c1152e48914274fa80824687061c183090302"),
    (bytes(300), "0001081c48b0a0c18308132a5cc8b0a1c38710234a9c48b1a2c58b180302"),
]


@pytest.mark.parametrize(("data", "expected"), GO_VECTORS)
def test_compress_matches_go_vectors(data, expected):
    assert lzw.compress(data).hex() == expected


@pytest.mark.parametrize(("data", "encoded"), GO_VECTORS)
def test_decompress_reads_go_vectors(data, encoded):
    assert lzw.decompress(bytes.fromhex(encoded), 1 << 20) == data


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)) * 40,
        b"abc" * 20000,
        random.Random(1).randbytes(30000),
        letters(b"ab", 60000, seed=2),
    ],
    ids=["all-bytes", "repetitive", "random", "two-letters"],
)
def test_round_trips_past_the_table_reset(data):
    # 30 kB of random bytes fills the 4096-entry table several times, so the
    # CLEAR-and-restart path and the 12-bit width are both exercised.
    assert lzw.decompress(lzw.compress(data), len(data)) == data


def test_bytes_after_the_eof_code_are_ignored():
    assert lzw.decompress(bytes.fromhex("0083081922704840") + b"junk", 100) == b"ABCABC"


def test_stream_without_eof_code_is_rejected():
    with pytest.raises(DecodeError, match="EOF"):
        lzw.decompress(bytes.fromhex("00830819227048"), 100)


def test_code_beyond_the_next_free_code_is_rejected():
    # CLEAR, then code 300 while the next free code is 257.
    bits = 256 | (300 << 9)
    with pytest.raises(DecodeError, match="invalid LZW code"):
        lzw.decompress(bits.to_bytes(3, "little"), 100)


def test_output_limit_is_enforced():
    with pytest.raises(DecodeError, match="limit"):
        lzw.decompress(lzw.compress(bytes(5000)), 4999)
    assert lzw.decompress(lzw.compress(bytes(5000)), 5000) == bytes(5000)
