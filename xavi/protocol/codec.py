"""Encoding and decoding of memberlist 0.2.2 UDP packets (sans-I/O).

A message is one type byte followed by a msgpack body, written the way
memberlist's ``encode()`` writes it with hashicorp/go-msgpack 0.5.5's
default ``MsgpackHandle``:

- A struct is a msgpack map keyed by the Go field names, sorted by name.
  Fields tagged ``omitempty`` (the ping source fields) are left out when
  they are zero.
- Strings and byte slices both use the old msgpack raw family (fixstr,
  raw16, raw32). The handle has ``WriteExt`` off, so Go never writes str8 or
  bin. ``msgpack.packb(..., use_bin_type=False)`` writes the same bytes.
- A nil byte slice is written as msgpack nil. Go replies with a nil ack
  payload, so Xavi writes an empty ``bytes`` field as nil as well.
- ``[]uint8`` (the ``Vsn`` field) is written as raw bytes, not as an array.
- A user message body is the payload itself, without msgpack.

A packet is built in this order (``rawSendMsgPacket``), and peeled in the
reverse order by ``decode_packet``::

    messages -> compound (if more than one) -> compress (only if smaller)
             -> CRC header (receiver speaks protocol 5) -> encrypt
             -> label header (memberlist after 0.2.2)

Compound layout: ``[7][count: 1 byte][length: uint16 BE] * count`` then the
parts. Compress layout: ``[9]`` then the msgpack map ``{Algo: 0, Buf: lzw}``.
CRC layout: ``[12][CRC-32 IEEE of the rest: uint32 BE]`` then the payload.
Label layout: ``[244][length: 1 byte][label]``. The label is the AES-GCM
additional data of the encrypted payload.

Deviations from memberlist, all stricter:
- ``decode_packet`` rejects the whole packet when any part is malformed or
  truncated. memberlist handles the good parts and logs the rest.
- Decompressed size and nesting depth are limited.
- A message type that memberlist would log as not supported is rejected.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any, cast

import msgpack

from xavi.protocol import lzw
from xavi.protocol.constants import (
    COMPOUND_MAX_PART_SIZE,
    COMPOUND_MAX_PARTS,
    CRC_HEADER_SIZE,
    LABEL_MAX_SIZE,
    LZW_ALGO,
    MAX_DECOMPRESSED_PACKET,
    MAX_NESTING_DEPTH,
)
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import Message, MessageType
from xavi.protocol.security import Keyring, NonceSource, decrypt_payload, encrypt_payload
from xavi.protocol.wire import decode_body, encode_body, parse_msgpack

__all__ = [
    "add_label_header",
    "decode_message",
    "decode_packet",
    "decompress_fields",
    "encode_compound",
    "encode_compress",
    "encode_message",
    "encode_packet",
    "parse_compound",
    "parse_compress",
    "parse_label_header",
]

# Message types that decode_message turns into records.
_MESSAGE_TYPES = frozenset(
    {
        MessageType.PING,
        MessageType.INDIRECT_PING,
        MessageType.ACK_RESP,
        MessageType.NACK_RESP,
        MessageType.SUSPECT,
        MessageType.ALIVE,
        MessageType.DEAD,
        MessageType.USER,
        MessageType.ERR,
    }
)
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def encode_message(msg: Message) -> bytes:
    """Encode one message as its type byte plus body, byte for byte as Go does."""
    return encode_body(msg)


def decode_message(data: bytes) -> Message:
    """Decode one untrusted message (type byte plus body) into its record."""
    if not data:
        raise DecodeError("empty message")
    kind = data[0]
    if kind not in _MESSAGE_TYPES:
        raise DecodeError(f"message type {kind} is not a gossip message")
    return decode_body(kind, data[1:])


def encode_compound(parts: Sequence[bytes]) -> bytes:
    """Join up to 255 encoded messages into one compound message."""
    if len(parts) > COMPOUND_MAX_PARTS:
        raise ValueError(f"a compound message takes at most 255 parts, got {len(parts)}")
    header = bytearray((MessageType.COMPOUND, len(parts)))
    for part in parts:
        if len(part) > COMPOUND_MAX_PART_SIZE:
            raise ValueError(f"compound part of {len(part)} bytes exceeds 65535")
        header += _U16.pack(len(part))
    return bytes(header) + b"".join(parts)


def parse_compound(body: bytes) -> list[bytes]:
    """Split an untrusted compound body (after its type byte) into its parts."""
    if not body:
        raise DecodeError("compound message is missing its part count")
    count = body[0]
    offset = 1 + 2 * count
    if len(body) < offset:
        raise DecodeError("compound message is truncated in its length table")
    parts = []
    for i in range(count):
        (length,) = _U16.unpack_from(body, 1 + 2 * i)
        end = offset + length
        if end > len(body):
            raise DecodeError(
                f"compound message is truncated: {count - i} of {count} parts missing"
            )
        parts.append(body[offset:end])
        offset = end
    if offset != len(body):
        raise DecodeError(f"compound message has {len(body) - offset} trailing bytes")
    return parts


def encode_compress(payload: bytes) -> bytes:
    """Wrap ``payload`` in a compress message, LZW-compressed as memberlist does."""
    fields = {"Algo": LZW_ALGO, "Buf": lzw.compress(payload)}
    body = cast(bytes, msgpack.packb(fields, use_bin_type=False))
    return bytes((MessageType.COMPRESS,)) + body


def parse_compress(body: bytes, max_size: int = MAX_DECOMPRESSED_PACKET) -> bytes:
    """Decompress an untrusted compress body (after its type byte)."""
    fields = parse_msgpack(body, "compress message", allow_trailing=True)
    return decompress_fields(fields, max_size)


def decompress_fields(fields: Any, max_size: int) -> bytes:
    """Decompress an already unpacked, untrusted compress map ``{Algo, Buf}``."""
    if not isinstance(fields, dict):
        raise DecodeError("compress message body is not a map")
    algo = fields.get(b"Algo", 0)
    if algo is None:
        algo = 0
    if type(algo) is not int or algo != LZW_ALGO:
        raise DecodeError(f"cannot decompress unknown algorithm {algo!r}")
    buf = fields.get(b"Buf") or b""
    if not isinstance(buf, bytes):
        raise DecodeError("compress message Buf is not a byte string")
    return lzw.decompress(buf, max_size)


# TODO(label-interop): labels follow memberlist releases after 0.2.2 and are
# tested only against Xavi itself, because Debian's 0.2.2 has no labels.
def add_label_header(payload: bytes, label: bytes) -> bytes:
    """Prefix ``payload`` with a label header. An empty label adds nothing."""
    if not label:
        return payload
    if len(label) > LABEL_MAX_SIZE:
        raise ValueError(f"label of {len(label)} bytes exceeds the maximum of 255")
    return bytes((MessageType.HAS_LABEL, len(label))) + label + payload


def parse_label_header(data: bytes) -> tuple[bytes, bytes]:
    """Split untrusted ``data`` into (label, rest). Unlabelled data has label b""."""
    if not data or data[0] != MessageType.HAS_LABEL:
        return b"", data
    if len(data) < 3:
        raise DecodeError("label header is truncated")
    size = data[1]
    if size == 0:
        raise DecodeError("label header cannot be empty when present")
    if len(data) < 2 + size:
        raise DecodeError("label header is truncated")
    return data[2 : 2 + size], data[2 + size :]


def encode_packet(
    messages: Sequence[bytes],
    *,
    compress: bool = False,
    crc: bool = False,
    label: bytes = b"",
    keyring: Keyring | None = None,
    encryption_version: int = 1,
    nonce_source: NonceSource = os.urandom,
) -> bytes:
    """Build one UDP packet from encoded messages, layered as memberlist does.

    ``crc`` should be set only for receivers whose protocol max is at least
    5. ``keyring`` (non-empty) turns encryption on with its primary key.
    """
    if not messages:
        raise ValueError("a packet needs at least one message")
    payload = messages[0] if len(messages) == 1 else encode_compound(messages)
    if compress:
        compressed = encode_compress(payload)
        # memberlist keeps the compressed form only when it is smaller.
        if len(compressed) < len(payload):
            payload = compressed
    if crc:
        payload = bytes((MessageType.HAS_CRC,)) + _U32.pack(zlib.crc32(payload)) + payload
    if keyring is not None and len(keyring):
        payload = encrypt_payload(
            encryption_version, keyring, payload, label, nonce_source=nonce_source
        )
    return add_label_header(payload, label)


def decode_packet(
    data: bytes,
    *,
    keyring: Keyring | None = None,
    label: bytes = b"",
    require_encryption: bool = True,
) -> list[Message]:
    """Peel every layer of an untrusted UDP packet and return its messages.

    ``label`` is the label this node expects, and a packet must carry the
    same one. With a non-empty ``keyring`` the packet is decrypted. If that
    fails and ``require_encryption`` is False (memberlist's
    ``GossipVerifyIncoming = false``), the packet is read as plaintext.
    Raises ``DecodeError`` for anything malformed.
    """
    packet_label, data = parse_label_header(bytes(data))
    if packet_label != label:
        raise DecodeError("packet label does not match the expected label")
    if keyring is not None and len(keyring):
        try:
            data = decrypt_payload(keyring, data, label)
        except DecodeError:
            if require_encryption:
                raise
    if len(data) >= CRC_HEADER_SIZE and data[0] == MessageType.HAS_CRC:
        (expected,) = _U32.unpack_from(data, 1)
        data = data[CRC_HEADER_SIZE:]
        if zlib.crc32(data) != expected:
            raise DecodeError("packet CRC-32 does not match its payload")
    out: list[Message] = []
    # One decompression budget for the whole packet, so nested or repeated
    # compress layers cannot multiply the limit.
    budget = [MAX_DECOMPRESSED_PACKET]
    _decode_command(data, out, 0, budget)
    return out


def _decode_command(data: bytes, out: list[Message], depth: int, budget: list[int]) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise DecodeError(f"packet nests more than {MAX_NESTING_DEPTH} compound or compress layers")
    if not data:
        raise DecodeError("empty message in packet")
    kind = data[0]
    if kind == MessageType.COMPOUND:
        for part in parse_compound(data[1:]):
            _decode_command(part, out, depth + 1, budget)
    elif kind == MessageType.COMPRESS:
        plain = parse_compress(data[1:], budget[0])
        budget[0] -= len(plain)
        _decode_command(plain, out, depth + 1, budget)
    else:
        out.append(decode_message(data))
