"""Frames of the control socket: a 4-byte big-endian length, then a msgpack map.

Wire layout of one frame::

    +----------------------+-------------------------------------+
    | length: uint32, BE   | payload: msgpack map, ``length`` B  |
    +----------------------+-------------------------------------+

A request is ``{"cmd": str, "args": map}``; a response is
``{"ok": true, "result": any}`` or ``{"ok": false, "error": str, "code": str}``. Several
frames may follow each other on one connection; each request gets exactly one
response, in order.

Invariants:

- Sizes are checked from the length prefix before any payload byte is
  buffered, so a peer cannot make the agent allocate more than
  ``MAX_REQUEST_BYTES`` (agent side) or ``MAX_RESPONSE_BYTES`` (client side).
- Every function that parses untrusted bytes raises :class:`FrameError` and
  nothing else, whatever the input (the fuzz test in
  ``tests/unit/test_control_frames.py`` checks this).
- This module does no I/O except in :func:`read_frame` and
  :func:`write_frame`, which only move bytes; the decoder itself is
  :class:`FrameDecoder`, fed with whatever bytes arrive.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

from xavi.errors import XaviError

HEADER = struct.Struct(">I")
"""The length prefix: payload size in bytes, unsigned 32-bit big-endian."""
MAX_REQUEST_BYTES = 64 * 1024
"""Largest request payload the agent reads; a request is a command name and a few arguments."""
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest response payload ``xavi ctl`` reads; status of a large cluster fits with room to spare."""
MAX_NESTING = 32
"""Deepest nesting of maps and lists accepted in a payload."""
_READ_CHUNK = 16 * 1024

__all__ = [
    "HEADER",
    "MAX_NESTING",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "FrameDecoder",
    "FrameError",
    "decode_payload",
    "encode_frame",
    "error_response",
    "ok_response",
    "read_frame",
    "write_frame",
]


class FrameError(XaviError):
    """A frame is malformed, truncated or larger than the limit of its side."""


def encode_frame(message: dict[str, Any], max_bytes: int) -> bytes:
    """Encode ``message`` as one frame; raise FrameError if it cannot be encoded or is too large."""
    try:
        payload: bytes = msgpack.packb(message, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise FrameError(f"cannot encode the message as msgpack: {exc}") from exc
    if len(payload) > max_bytes:
        raise FrameError(f"the frame payload is {len(payload)} bytes; the limit is {max_bytes}")
    return HEADER.pack(len(payload)) + payload


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_NESTING:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def decode_payload(payload: bytes) -> dict[str, Any]:
    """Decode untrusted payload bytes into a map with string keys; raise FrameError otherwise."""
    try:
        # unpackb bounds every string, array and map by len(payload) by itself.
        value = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types for bad input
        raise FrameError(f"the payload is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(value, dict):
        raise FrameError(f"the payload is a msgpack {type(value).__name__}, not a map")
    if not all(isinstance(key, str) for key in value):
        raise FrameError("the payload map has keys that are not strings")
    if _depth(value) > MAX_NESTING:
        raise FrameError(f"the payload nests deeper than {MAX_NESTING} levels")
    return value


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, take whole messages out.

    After a :class:`FrameError` the stream is out of sync and the decoder
    must be discarded, because the next length prefix cannot be found.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._expected: int | None = None

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add received bytes; return the messages completed by them, in order."""
        self._buffer.extend(data)
        messages: list[dict[str, Any]] = []
        while True:
            if self._expected is None:
                if len(self._buffer) < HEADER.size:
                    return messages
                (length,) = HEADER.unpack_from(self._buffer)
                if length > self.max_bytes:
                    raise FrameError(
                        f"the frame announces {length} bytes; the limit is {self.max_bytes}"
                    )
                del self._buffer[:HEADER.size]
                self._expected = length
            if len(self._buffer) < self._expected:
                return messages
            payload = bytes(self._buffer[:self._expected])
            del self._buffer[:self._expected]
            self._expected = None
            messages.append(decode_payload(payload))


def read_frame(sock: socket.socket, max_bytes: int) -> dict[str, Any] | None:
    """Read one frame from a blocking socket; return None on a clean end of stream.

    Raises FrameError for a bad or truncated frame, and lets ``TimeoutError``
    and other ``OSError`` through, because those are about the connection,
    not the bytes.
    """
    header = _read_exactly(sock, HEADER.size, allow_eof=True)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise FrameError(f"the frame announces {length} bytes; the limit is {max_bytes}")
    payload = _read_exactly(sock, length, allow_eof=False)
    assert payload is not None
    return decode_payload(payload)


def _read_exactly(sock: socket.socket, size: int, *, allow_eof: bool) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), _READ_CHUNK))
        if not chunk:
            if allow_eof and not chunks:
                return None
            raise FrameError(
                f"the connection closed after {len(chunks)} of {size} bytes of a frame"
            )
        chunks.extend(chunk)
    return bytes(chunks)


def write_frame(sock: socket.socket, message: dict[str, Any], max_bytes: int) -> None:
    """Encode ``message`` and send it whole."""
    sock.sendall(encode_frame(message, max_bytes))


def ok_response(result: Any) -> dict[str, Any]:
    """Return the response of a command that succeeded."""
    return {"ok": True, "result": result}


def error_response(error: str, code: str = "failed") -> dict[str, Any]:
    """Return the response of a request that failed.

    ``error`` explains why and what to do; ``code`` is a stable word for scripts
    (``permission_denied``, ``bad_frame``, ``bad_request``, ``not_running`` ...).
    """
    return {"ok": False, "error": error, "code": code}
