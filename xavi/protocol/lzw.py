"""LZW compression compatible with Go's ``compress/lzw`` (LSB order, 8-bit literals).

memberlist 0.2.2 compresses with ``lzw.NewWriter(w, lzw.LSB, 8)`` and
decompresses with the matching reader. This module produces the same bytes
as Go's writer and accepts exactly what Go's reader accepts.

The code stream, as Go lays it out:
- Codes are packed least-significant bit first. The code width starts at
  9 bits and grows by one each time the next free code reaches a power of
  two, up to 12 bits.
- Code 256 is CLEAR (reset the table and the width), 257 is EOF. The writer
  starts every stream with CLEAR and ends it with EOF, then pads the last
  byte with zero bits.
- When the writer's table is full (the next code would be 4095) it emits
  CLEAR and starts over. The reader instead freezes its table at 4095
  entries until it reads CLEAR.
- The reader stops at EOF and ignores any bytes after it. Input that ends
  before EOF, or a code above the next free code, is an error.
"""

from __future__ import annotations

from xavi.protocol.errors import DecodeError

__all__ = ["compress", "decompress"]

# TODO(lzw-speed): this coder is pure Python, at about 20 ms per 60 kB of
# incompressible input on the development machine, so a push/pull near the
# 20 MiB limit would take seconds. No packaged C coder writes Go's format.

_LIT_WIDTH = 8
_CLEAR = 1 << _LIT_WIDTH  # 256
_EOF = _CLEAR + 1  # 257
_MAX_WIDTH = 12
_MAX_CODE = (1 << _MAX_WIDTH) - 1  # 4095


def compress(data: bytes) -> bytes:
    """Compress ``data`` exactly as Go's ``lzw.NewWriter(w, LSB, 8)`` does."""
    out = bytearray()
    bits = 0
    n_bits = 0
    width = _LIT_WIDTH + 1
    hi = _EOF
    overflow = 1 << width
    table: dict[int, int] = {}

    def emit(code: int) -> None:
        nonlocal bits, n_bits
        bits |= code << n_bits
        n_bits += width
        while n_bits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            n_bits -= 8

    def next_code() -> bool:
        """Advance ``hi``. Return False when the table was reset instead."""
        nonlocal hi, width, overflow
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            emit(_CLEAR)
            width = _LIT_WIDTH + 1
            hi = _EOF
            overflow = 1 << width
            table.clear()
            return False
        return True

    if not data:
        emit(_CLEAR)
    else:
        emit(_CLEAR)
        code = data[0]
        for literal in data[1:]:
            key = (code << 8) | literal
            found = table.get(key)
            if found is not None:
                code = found
                continue
            emit(code)
            code = literal
            if next_code():
                table[key] = hi
        emit(code)
        next_code()
    emit(_EOF)
    if n_bits > 0:
        out.append(bits & 0xFF)
    return bytes(out)


def decompress(data: bytes, max_size: int) -> bytes:
    """Decompress an untrusted LZW stream; raise ``DecodeError`` if invalid.

    ``max_size`` bounds the output. A stream that would decompress to more
    bytes is rejected, which Go's reader does not do.
    """
    table: list[bytes] = [bytes((i,)) for i in range(_CLEAR)] + [b""] * ((1 << _MAX_WIDTH) - _CLEAR)
    out = bytearray()
    width = _LIT_WIDTH + 1
    hi = _EOF
    overflow = 1 << width
    last: bytes | None = None  # None: no previous code since the last CLEAR
    bits = 0
    n_bits = 0
    pos = 0
    size = len(data)

    while True:
        while n_bits < width:
            if pos >= size:
                raise DecodeError("LZW stream ended before its EOF code")
            bits |= data[pos] << n_bits
            pos += 1
            n_bits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        n_bits -= width

        if code == _CLEAR:
            width = _LIT_WIDTH + 1
            hi = _EOF
            overflow = 1 << width
            last = None
            continue
        if code == _EOF:
            return bytes(out)
        if code < _CLEAR or code < hi:
            entry = table[code]
        elif code == hi and last is not None:
            entry = last + last[:1]
        elif code == hi:
            # Only reachable while the table is frozen at 4095 entries, where
            # the entry for ``hi`` was defined before the freeze.
            entry = table[code]
        else:
            raise DecodeError(f"invalid LZW code {code}, next free code is {hi}")

        if last is not None:
            table[hi] = last + entry[:1]
        out += entry
        if len(out) > max_size:
            raise DecodeError(f"LZW output exceeds the limit of {max_size} bytes")

        last = entry
        hi += 1
        if hi >= overflow:
            if width == _MAX_WIDTH:
                last = None
                hi -= 1
            else:
                width += 1
                overflow = 1 << width
