"""serf tag encoding of node metadata (xavi.protocol.meta)."""

from __future__ import annotations

import pytest

from xavi.protocol.constants import META_MAX_SIZE
from xavi.protocol.errors import DecodeError
from xavi.protocol.meta import encode_tags, parse_tags


def test_tags_match_serf_bytes():
    # serf 0.9.4 encodeTags({"role": "x"}), recorded from the Go test peer.
    assert encode_tags({"role": "x"}).hex() == "ff81a4726f6c65a178"


def test_tags_round_trip():
    tags = {"services": "postgres,valkey", "role": "xavi", "é": "ü"}
    assert parse_tags(encode_tags(tags)) == tags


def test_tag_keys_are_written_sorted():
    assert encode_tags({"b": "1", "a": "2"}) == encode_tags({"a": "2", "b": "1"})


def test_role_only_metadata_reads_as_role():
    assert parse_tags(b"web") == {"role": "web"}
    assert parse_tags(b"") == {"role": ""}


def test_tags_above_512_bytes_are_rejected():
    with pytest.raises(ValueError, match="512"):
        encode_tags({"k": "v" * META_MAX_SIZE})


def test_largest_allowed_tags_fit_exactly():
    # 0xff (1) + fixmap (1) + fixstr "k" (2) + raw16 header (3) = 7 bytes of overhead.
    meta = encode_tags({"k": "v" * (META_MAX_SIZE - 7)})
    assert len(meta) == META_MAX_SIZE


@pytest.mark.parametrize(
    "meta", [b"\xff\x91\x01", b"\xff\x81\x01\xa1x", b"\xff\x81\xa1\xff\xa1x", b"\xff\xc1"]
)
def test_malformed_tags_raise_decode_error(meta):
    with pytest.raises(DecodeError):
        parse_tags(meta)


def test_non_string_tags_are_rejected_when_encoding():
    with pytest.raises(TypeError):
        encode_tags({"a": 1})  # type: ignore[dict-item]
