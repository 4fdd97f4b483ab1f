"""memberlist 0.2.2 stream (TCP) messages: push/pull, stream pings, user messages.

A stream carries one message each way, then the connection closes. Layout
of a plaintext message, as ``sendLocalState`` and ``readStream`` build and
read it::

    [6 pushPull][header map {Join, Nodes, UserStateLen}]
        [node state map] * Nodes  [user state: UserStateLen raw bytes]
    [0 ping][ping map]   [2 ackResp][ack map]   [13 err][errResp map]
    [8 user][header map {UserMsgLen}][payload: UserMsgLen raw bytes]

The sender may wrap that message, innermost first:

- compress: ``[9][msgpack {Algo: 0, Buf: lzw}]``. Streams are compressed
  whenever compression is on, even when that makes them larger.
- encrypt: ``[10][length: uint32 BE][encrypted payload]``. The five header
  bytes (plus the label, in releases after 0.2.2) are the AES-GCM
  additional data. A reader rejects a length above 20 MiB.
- label (releases after 0.2.2): ``[244][length][label]`` before everything.

``StreamParser`` is a sans-I/O reader: feed it bytes as they arrive and it
returns the message once complete. Malformed input raises ``DecodeError``.
A plaintext stream is also limited to 20 MiB, which memberlist does not do.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import msgpack

from xavi.protocol.codec import add_label_header, decompress_fields, encode_compress
from xavi.protocol.constants import MAX_PUSH_STATE_BYTES, STREAM_ENCRYPT_HEADER_SIZE
from xavi.protocol.errors import DecodeError
from xavi.protocol.messages import Ack, ErrResp, MessageType, Ping, PushNodeState, PushPull, User
from xavi.protocol.security import (
    Keyring,
    NonceSource,
    decrypt_payload,
    encrypt_payload,
    encrypted_length,
)
from xavi.protocol.wire import (
    PushPullHeader,
    UserMsgHeader,
    decode_record,
    encode_body,
    encode_record,
)

__all__ = [
    "StreamMessage",
    "StreamParser",
    "encode_push_pull",
    "encode_stream",
    "encode_stream_message",
    "encode_user_stream",
    "parse_stream",
]

StreamMessage = PushPull | Ping | Ack | ErrResp | User

_U32 = struct.Struct(">I")
_SINGLE_RECORD: dict[int, type] = {
    MessageType.PING: Ping,
    MessageType.ACK_RESP: Ack,
    MessageType.ERR: ErrResp,
}


def encode_push_pull(state: PushPull) -> bytes:
    """Encode a push/pull message body: type byte, header, node states, user state."""
    header = PushPullHeader(
        nodes=len(state.nodes), user_state_len=len(state.user_state), join=state.join
    )
    parts = [bytes((MessageType.PUSH_PULL,)), encode_record(header)]
    parts.extend(encode_record(node) for node in state.nodes)
    parts.append(bytes(state.user_state))
    return b"".join(parts)


def encode_user_stream(payload: bytes) -> bytes:
    """Encode a user message body for a stream (memberlist's ``sendUserMsg``)."""
    header = encode_record(UserMsgHeader(user_msg_len=len(payload)))
    return bytes((MessageType.USER,)) + header + bytes(payload)


def encode_stream_message(message: StreamMessage) -> bytes:
    """Encode any stream message record as its plaintext body."""
    if isinstance(message, PushPull):
        return encode_push_pull(message)
    if isinstance(message, User):
        return encode_user_stream(message.payload)
    return encode_body(message)


def encode_stream(
    body: bytes,
    *,
    compress: bool = False,
    keyring: Keyring | None = None,
    encryption_version: int = 1,
    label: bytes = b"",
    nonce_source: NonceSource = os.urandom,
) -> bytes:
    """Wrap a plaintext stream body for sending, as ``rawSendMsgStream`` does."""
    if compress:
        body = encode_compress(body)
    if keyring is not None and len(keyring):
        length = encrypted_length(encryption_version, len(body))
        header = bytes((MessageType.ENCRYPT,)) + _U32.pack(length)
        body = header + encrypt_payload(
            encryption_version, keyring, body, header + label, nonce_source=nonce_source
        )
    return add_label_header(body, label)


class _BodyReader:
    """Incremental reader of one plaintext message: type byte onward."""

    def __init__(self, *, allow_compress: bool) -> None:
        self._allow_compress = allow_compress
        self._unpacker = msgpack.Unpacker(raw=True, max_buffer_size=MAX_PUSH_STATE_BYTES + 1024)
        self._kind: int | None = None
        self._header: Any = None
        self._nodes: list[PushNodeState] = []
        self._tail = bytearray()
        self._size = 0

    def feed(self, data: bytes) -> StreamMessage | None:
        self._size += len(data)
        if self._size > MAX_PUSH_STATE_BYTES:
            raise DecodeError(f"stream message exceeds {MAX_PUSH_STATE_BYTES} bytes")
        if self._kind is None:
            if not data:
                return None
            self._kind, data = data[0], data[1:]
            if self._kind == MessageType.COMPRESS and not self._allow_compress:
                raise DecodeError("compressed stream message is nested in another compress")
        try:
            self._unpacker.feed(data)
            return self._advance()
        except msgpack.OutOfData:
            return None
        except (ValueError, TypeError, msgpack.UnpackException, msgpack.BufferFull) as exc:
            raise DecodeError(f"stream message is not valid msgpack: {exc}") from None

    def _advance(self) -> StreamMessage | None:
        kind = self._kind
        if kind == MessageType.COMPRESS:
            plain = decompress_fields(self._unpacker.unpack(), MAX_PUSH_STATE_BYTES)
            inner = _BodyReader(allow_compress=False)
            return _finish(inner, plain, "decompressed stream message")
        if kind in _SINGLE_RECORD:
            record: StreamMessage = decode_record(_SINGLE_RECORD[kind], self._unpacker.unpack())
            return record
        if kind == MessageType.PUSH_PULL:
            return self._advance_push_pull()
        if kind == MessageType.USER:
            if self._header is None:
                self._header = decode_record(UserMsgHeader, self._unpacker.unpack())
                _check_length(self._header.user_msg_len, "user message length")
            if not self._read_tail(self._header.user_msg_len):
                return None
            return User(payload=bytes(self._tail))
        raise DecodeError(f"invalid stream message type {kind}")

    def _advance_push_pull(self) -> PushPull | None:
        if self._header is None:
            self._header = decode_record(PushPullHeader, self._unpacker.unpack())
            _check_length(self._header.nodes, "push/pull node count")
            _check_length(self._header.user_state_len, "push/pull user state length")
        while len(self._nodes) < self._header.nodes:
            self._nodes.append(decode_record(PushNodeState, self._unpacker.unpack()))
        if not self._read_tail(self._header.user_state_len):
            return None
        return PushPull(
            nodes=tuple(self._nodes), user_state=bytes(self._tail), join=self._header.join
        )

    def _read_tail(self, length: int) -> bool:
        missing = length - len(self._tail)
        if missing > 0:
            self._tail += self._unpacker.read_bytes(missing)
        return len(self._tail) == length


def _check_length(value: int, field: str) -> None:
    if not 0 <= value <= MAX_PUSH_STATE_BYTES:
        raise DecodeError(f"{field} {value} is out of range")


def _finish(reader: _BodyReader, data: bytes, description: str) -> StreamMessage:
    message = reader.feed(data)
    if message is None:
        raise DecodeError(f"{description} is truncated")
    return message


class StreamParser:
    """Sans-I/O reader of one incoming stream message.

    Call ``feed`` with each chunk read from the connection. It returns None
    until the message is complete, then the message. Call ``feed_eof`` when
    the peer closes its side. Bytes after the message are kept in
    ``unused_data`` and otherwise ignored, as memberlist ignores them.
    ``require_encryption`` mirrors ``GossipVerifyIncoming``: with a keyring,
    a plaintext stream is rejected unless it is False.
    """

    def __init__(
        self,
        *,
        keyring: Keyring | None = None,
        label: bytes = b"",
        require_encryption: bool = True,
    ) -> None:
        self._keyring = keyring
        self._label = label
        self._require_encryption = require_encryption
        self._buffer = bytearray()
        self._stage = "label"
        self._reader: _BodyReader | None = None
        self._message: StreamMessage | None = None
        self.unused_data = b""

    @property
    def message(self) -> StreamMessage | None:
        """The decoded message, once complete."""
        return self._message

    def feed(self, data: bytes) -> StreamMessage | None:
        """Consume untrusted ``data``; return the message once it is complete."""
        if self._message is not None:
            self.unused_data += bytes(data)
            return self._message
        if self._stage == "plain":
            assert self._reader is not None
            self._message = self._reader.feed(bytes(data))
            return self._message
        self._buffer += data
        if self._stage == "label" and not self._take_label():
            return None
        if self._stage == "start":
            if not self._buffer:
                return None
            if self._buffer[0] == MessageType.ENCRYPT:
                self._stage = "encrypted"
            else:
                self._start_plain()
                return self._message
        return self._take_encrypted()

    def feed_eof(self) -> StreamMessage:
        """Signal that the peer closed the stream; raise if no full message arrived."""
        if self._message is None:
            raise DecodeError("stream closed before a complete message arrived")
        return self._message

    def _take_label(self) -> bool:
        if not self._buffer:
            return False
        label = b""
        if self._buffer[0] == MessageType.HAS_LABEL:
            if len(self._buffer) < 2:
                return False
            size = self._buffer[1]
            if size == 0:
                raise DecodeError("label header cannot be empty when present")
            if len(self._buffer) < 2 + size:
                return False
            label = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
        if label != self._label:
            raise DecodeError("stream label does not match the expected label")
        self._stage = "start"
        return True

    def _start_plain(self) -> None:
        if self._keyring is not None and len(self._keyring) and self._require_encryption:
            raise DecodeError("encryption is configured but the remote stream is not encrypted")
        self._stage = "plain"
        self._reader = _BodyReader(allow_compress=True)
        data = bytes(self._buffer)
        self._buffer.clear()
        self._message = self._reader.feed(data)

    def _take_encrypted(self) -> StreamMessage | None:
        if len(self._buffer) < STREAM_ENCRYPT_HEADER_SIZE:
            return None
        (length,) = _U32.unpack_from(self._buffer, 1)
        if length > MAX_PUSH_STATE_BYTES:
            raise DecodeError(f"remote stream of {length} bytes is larger than the limit")
        end = STREAM_ENCRYPT_HEADER_SIZE + length
        if len(self._buffer) < end:
            return None
        if self._keyring is None or not len(self._keyring):
            raise DecodeError("remote stream is encrypted and encryption is not configured")
        header = bytes(self._buffer[:STREAM_ENCRYPT_HEADER_SIZE])
        sealed = bytes(self._buffer[STREAM_ENCRYPT_HEADER_SIZE:end])
        self.unused_data = bytes(self._buffer[end:])
        self._buffer.clear()
        plain = decrypt_payload(self._keyring, sealed, header + self._label)
        self._message = _finish(_BodyReader(allow_compress=True), plain, "decrypted stream message")
        return self._message


def parse_stream(
    data: bytes,
    *,
    keyring: Keyring | None = None,
    label: bytes = b"",
    require_encryption: bool = True,
) -> StreamMessage:
    """Decode one complete untrusted stream message held in ``data``."""
    parser = StreamParser(keyring=keyring, label=label, require_encryption=require_encryption)
    parser.feed(data)
    return parser.feed_eof()
