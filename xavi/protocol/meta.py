"""Node metadata in serf's tag encoding (serf 0.9.4 ``encodeTags``/``decodeTags``).

Layout: one ``0xff`` byte, then a msgpack map of string keys to string
values, written with go-msgpack's default handle (raw strings, no str8).
Metadata that is empty or does not start with ``0xff`` is serf's older
role-only form, which reads as ``{"role": <the bytes>}``.

Go writes the map in random order (Go map iteration), so key order carries
no meaning. Xavi writes keys sorted, which keeps its metadata stable across
restarts so that an unchanged tag set never looks like an update.

memberlist truncates metadata to 512 bytes; ``encode_tags`` raises instead,
because truncated msgpack would no longer decode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import msgpack

from xavi.protocol.constants import META_MAX_SIZE, SERF_TAG_MAGIC
from xavi.protocol.errors import DecodeError
from xavi.protocol.wire import parse_msgpack

__all__ = ["encode_tags", "parse_tags"]


def encode_tags(tags: Mapping[str, str]) -> bytes:
    """Encode ``tags`` as serf metadata; raise ``ValueError`` above 512 bytes.

    Non-string keys or values raise ``TypeError``.
    """
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"tag {key!r} must map a str to a str")
    body = cast(bytes, msgpack.packb(dict(sorted(tags.items())), use_bin_type=False))
    meta = bytes((SERF_TAG_MAGIC,)) + body
    if len(meta) > META_MAX_SIZE:
        raise ValueError(
            f"encoded tags take {len(meta)} bytes, above the metadata limit of {META_MAX_SIZE}"
        )
    return meta


def parse_tags(meta: bytes) -> dict[str, str]:
    """Decode untrusted serf metadata into a tag map; raise ``DecodeError`` if invalid."""
    if not meta or meta[0] != SERF_TAG_MAGIC:
        try:
            return {"role": bytes(meta).decode()}
        except UnicodeDecodeError:
            raise DecodeError("role-only metadata is not valid UTF-8") from None
    fields = parse_msgpack(bytes(meta[1:]), "serf tags", allow_trailing=True)
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise DecodeError("serf tags are not a msgpack map")
    tags: dict[str, str] = {}
    for key, value in fields.items():
        if type(key) is not bytes or type(value) is not bytes:
            raise DecodeError("serf tags must map strings to strings")
        try:
            tags[key.decode()] = value.decode()
        except UnicodeDecodeError:
            raise DecodeError("serf tag is not valid UTF-8") from None
    return tags
