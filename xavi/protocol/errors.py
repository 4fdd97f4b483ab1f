"""Errors of the memberlist wire layer.

Hierarchy::

    Exception
    ├── DecodeError      untrusted bytes are malformed, forged or undecryptable
    └── ValueError
        └── KeyringError a caller asked for an invalid keyring change

``DecodeError`` is the fault of the peer that sent the bytes. ``KeyringError`` and
the plain ``ValueError`` that encoders raise for out-of-range fields are the
fault of the local caller.
"""

from __future__ import annotations

__all__ = ["DecodeError", "KeyringError"]


class DecodeError(Exception):
    """Untrusted bytes could not be decoded.

    This is the only exception that the parsers of network bytes in
    ``xavi.protocol`` raise (``decode_packet``, ``decode_message``,
    ``parse_*``, ``decrypt_payload``, ``lzw.decompress``, the stream reader).
    Whatever the input, they either return a result or raise this error.
    Messages name the layer that failed and never contain key material.
    """


class KeyringError(ValueError):
    """A keyring change was rejected: bad key size, unknown key or primary removal."""
