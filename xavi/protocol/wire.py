"""msgpack bodies of memberlist messages: the Go field names and their types.

Each record of ``xavi.protocol.messages`` maps to a msgpack map keyed by
the Go struct's field names, sorted by name as go-msgpack 0.5.5 writes
them. ``WIRE_FIELDS`` lists, per record, the Go key, the Python attribute,
the value kind and whether Go tags the field ``omitempty``.

Decoding follows go-msgpack's leniency where it is harmless. Unknown keys
are skipped, and missing keys and nil values give the zero value. An
integer of any msgpack width is accepted if it fits the Go type. Trailing
bytes after the body are ignored, as Go's decoder ignores them. Everything else
(wrong types, out-of-range integers, invalid UTF-8 in a string, a ``Vsn``
that is not six bytes) raises ``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from operator import attrgetter
from typing import Any, Final, cast

import msgpack

from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import (
    Ack,
    Alive,
    Dead,
    ErrResp,
    IndirectPing,
    Message,
    MessageType,
    Nack,
    NodeStateKind,
    Ping,
    PushNodeState,
    Suspect,
    User,
)

__all__ = [
    "WIRE_FIELDS",
    "PushPullHeader",
    "UserMsgHeader",
    "decode_body",
    "decode_record",
    "encode_body",
    "encode_record",
    "parse_msgpack",
    "record_to_map",
]


@dataclass(frozen=True, slots=True)
class PushPullHeader:
    """Header of a push/pull stream: counts of the node states and user state bytes."""

    nodes: int
    user_state_len: int
    join: bool


@dataclass(frozen=True, slots=True)
class UserMsgHeader:
    """Header of a user message sent over a stream."""

    user_msg_len: int


# Kinds: (name, Go type). Integers carry their unsigned or signed range.
U16: Final = "u16"
U32: Final = "u32"
INT: Final = "int"  # Go int, 64-bit signed on every platform memberlist runs on
STR: Final = "str"
BYTES: Final = "bytes"
BOOL: Final = "bool"
VSN: Final = "vsn"
STATE: Final = "state"

# (Go key, Python attribute, kind, omitempty), sorted by Go key.
Field = tuple[str, str, str, bool]

WIRE_FIELDS: Final[dict[type, tuple[Field, ...]]] = {
    Ping: (
        ("Node", "node", STR, False),
        ("SeqNo", "seq_no", U32, False),
        ("SourceAddr", "source_addr", BYTES, True),
        ("SourceNode", "source_node", STR, True),
        ("SourcePort", "source_port", U16, True),
    ),
    IndirectPing: (
        ("Nack", "nack", BOOL, False),
        ("Node", "node", STR, False),
        ("Port", "port", U16, False),
        ("SeqNo", "seq_no", U32, False),
        ("SourceAddr", "source_addr", BYTES, True),
        ("SourceNode", "source_node", STR, True),
        ("SourcePort", "source_port", U16, True),
        ("Target", "target", BYTES, False),
    ),
    Ack: (("Payload", "payload", BYTES, False), ("SeqNo", "seq_no", U32, False)),
    Nack: (("SeqNo", "seq_no", U32, False),),
    Suspect: (
        ("From", "from_node", STR, False),
        ("Incarnation", "incarnation", U32, False),
        ("Node", "node", STR, False),
    ),
    Alive: (
        ("Addr", "addr", BYTES, False),
        ("Incarnation", "incarnation", U32, False),
        ("Meta", "meta", BYTES, False),
        ("Node", "node", STR, False),
        ("Port", "port", U16, False),
        ("Vsn", "vsn", VSN, False),
    ),
    Dead: (
        ("From", "from_node", STR, False),
        ("Incarnation", "incarnation", U32, False),
        ("Node", "node", STR, False),
    ),
    ErrResp: (("Error", "error", STR, False),),
    PushPullHeader: (
        ("Join", "join", BOOL, False),
        ("Nodes", "nodes", INT, False),
        ("UserStateLen", "user_state_len", INT, False),
    ),
    UserMsgHeader: (("UserMsgLen", "user_msg_len", INT, False),),
    PushNodeState: (
        ("Addr", "addr", BYTES, False),
        ("Incarnation", "incarnation", U32, False),
        ("Meta", "meta", BYTES, False),
        ("Name", "name", STR, False),
        ("Port", "port", U16, False),
        ("State", "state", STATE, False),
        ("Vsn", "vsn", VSN, False),
    ),
}

_TYPE_OF: Final[dict[type, MessageType]] = {
    Ping: MessageType.PING,
    IndirectPing: MessageType.INDIRECT_PING,
    Ack: MessageType.ACK_RESP,
    Nack: MessageType.NACK_RESP,
    Suspect: MessageType.SUSPECT,
    Alive: MessageType.ALIVE,
    Dead: MessageType.DEAD,
    User: MessageType.USER,
    ErrResp: MessageType.ERR,
}
_RECORD_OF: Final[dict[MessageType, type]] = {v: k for k, v in _TYPE_OF.items()}


class _FieldError(Exception):
    """Internal: a value does not fit its field. Callers add the field name."""


# --- Per-kind converters. Encoders check Python values, decoders untrusted ones.


def _int_encoder(low: int, high: int) -> Callable[[Any], Any]:
    def encode(value: Any) -> Any:
        if type(value) is int and low <= value <= high:
            return value
        raise _FieldError(f"{value!r} is outside {low}..{high}")

    return encode


def _int_decoder(low: int, high: int) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if value is None:
            return 0
        if type(value) is int and low <= value <= high:
            return value
        raise _FieldError(f"is not an integer in {low}..{high}")

    return decode


def _encode_str(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode()
    raise _FieldError("must be str")


def _decode_str(value: Any) -> Any:
    if value is None:
        return ""
    if type(value) is not bytes:
        raise _FieldError("is not a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise _FieldError("is not valid UTF-8") from None


def _encode_bytes(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        # Go writes a nil slice as msgpack nil, and Xavi's empty bytes map to nil.
        return bytes(value) if value else None
    raise _FieldError("must be bytes")


def _decode_bytes(value: Any) -> Any:
    if value is None:
        return b""
    if type(value) is bytes:
        return value
    raise _FieldError("is not a byte string")


def _encode_bool(value: Any) -> Any:
    return bool(value)


def _decode_bool(value: Any) -> Any:
    if value is None:
        return False
    if type(value) is bool:
        return value
    raise _FieldError("is not a bool")


def _encode_vsn(value: Any) -> Any:
    try:
        return bytes(value) if len(value) == 6 else _fail_vsn()
    except (TypeError, ValueError):
        return _fail_vsn()


def _fail_vsn() -> Any:
    raise _FieldError("must be six integers 0-255")


def _decode_vsn(value: Any) -> Any:
    if type(value) is bytes and len(value) == 6:
        return tuple(value)
    raise _FieldError("is not six version bytes")


def _encode_state(value: Any) -> Any:
    return int(NodeStateKind(value))


def _decode_state(value: Any) -> Any:
    if value is None:
        return NodeStateKind.ALIVE
    if type(value) is int:
        try:
            return NodeStateKind(value)
        except ValueError:
            pass
    raise _FieldError(f"is not a known node state: {value!r}")


_CONVERTERS: Final[dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]] = {
    U16: (_int_encoder(0, 0xFFFF), _int_decoder(0, 0xFFFF)),
    U32: (_int_encoder(0, 0xFFFFFFFF), _int_decoder(0, 0xFFFFFFFF)),
    INT: (_int_encoder(-(2**63), 2**63 - 1), _int_decoder(-(2**63), 2**63 - 1)),
    STR: (_encode_str, _decode_str),
    BYTES: (_encode_bytes, _decode_bytes),
    BOOL: (_encode_bool, _decode_bool),
    VSN: (_encode_vsn, _decode_vsn),
    STATE: (_encode_state, _decode_state),
}


class _Codec:
    """Precomputed field order and converters of one record type."""

    __slots__ = (
        "attrs",
        "decoders",
        "encoders",
        "getter",
        "keys",
        "order",
        "raw_keys",
        "record_type",
    )

    def __init__(self, record_type: type, fields: tuple[Field, ...]) -> None:
        self.record_type = record_type
        self.keys = tuple((key, omitempty) for key, _, _, omitempty in fields)
        self.raw_keys = tuple(key.encode() for key, _, _, _ in fields)
        self.attrs = tuple(attr for _, attr, _, _ in fields)
        self.getter = attrgetter(*self.attrs)
        self.encoders = tuple(_CONVERTERS[kind][0] for _, _, kind, _ in fields)
        self.decoders = tuple(_CONVERTERS[kind][1] for _, _, kind, _ in fields)
        # Positions of the dataclass's fields in wire order, for positional init.
        names = [f.name for f in dataclass_fields(record_type)]
        self.order = tuple(self.attrs.index(name) for name in names)


_CODECS: Final[dict[type, _Codec]] = {t: _Codec(t, f) for t, f in WIRE_FIELDS.items()}


def record_to_map(record: object) -> dict[str, Any]:
    """Return the Go-keyed map of a record, in Go's key order, ready for packb."""
    codec = _CODECS[type(record)]
    values = codec.getter(record)
    if len(codec.attrs) == 1:
        values = (values,)
    out: dict[str, Any] = {}
    for (key, omitempty), encode, value in zip(codec.keys, codec.encoders, values):
        if omitempty and not value:
            continue
        try:
            out[key] = encode(value)
        except _FieldError as exc:
            raise ValueError(f"{type(record).__name__}.{key}: {exc}") from None
    return out


def encode_record(record: object) -> bytes:
    """Encode a record's msgpack map as go-msgpack writes it."""
    return cast(bytes, msgpack.packb(record_to_map(record), use_bin_type=False))


def encode_body(msg: Message) -> bytes:
    """Encode a message record as its type byte plus body."""
    kind = _TYPE_OF.get(type(msg))
    if kind is None:
        raise TypeError(f"{type(msg).__name__} is not a packet message record")
    if kind == MessageType.USER:
        return bytes((kind,)) + bytes(msg.payload)  # type: ignore[union-attr]
    body = cast(bytes, msgpack.packb(record_to_map(msg), use_bin_type=False))
    return bytes((kind,)) + body


def parse_msgpack(data: bytes, description: str, *, allow_trailing: bool = False) -> Any:
    """Unpack one msgpack value from untrusted ``data``; raise ``DecodeError`` if invalid."""
    try:
        return msgpack.unpackb(data, raw=True)
    except msgpack.ExtraData as exc:
        if allow_trailing:
            return exc.unpacked
        raise DecodeError(f"{description} has trailing bytes") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"{description} is not valid msgpack: {exc}") from None


def decode_record(record_type: type, fields: Any) -> Any:
    """Build ``record_type`` from an already unpacked, untrusted msgpack map."""
    if type(fields) is not dict:
        raise DecodeError(f"{record_type.__name__} body is not a map")
    codec = _CODECS[record_type]
    get = fields.get
    values = []
    for raw_key, decode in zip(codec.raw_keys, codec.decoders):
        try:
            values.append(decode(get(raw_key)))
        except _FieldError as exc:
            raise DecodeError(f"{record_type.__name__} field {raw_key.decode()} {exc}") from None
    return record_type(*[values[i] for i in codec.order])


def decode_body(kind: int, body: bytes) -> Message:
    """Decode an untrusted body of message type ``kind`` into its record."""
    if kind == MessageType.USER:
        return User(payload=bytes(body))
    record_type = _RECORD_OF[kind]  # type: ignore[index]
    fields = parse_msgpack(body, f"{record_type.__name__} body", allow_trailing=True)
    return cast(Message, decode_record(record_type, fields))
