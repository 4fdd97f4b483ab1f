"""AES-GCM payload encryption and the keyring, as memberlist 0.2.2 does them.

Encrypted payload layout (``security.go``)::

    [version: 1 byte][nonce: 12 bytes][AES-GCM ciphertext + 16-byte tag]

- Version 0 pads the plaintext with PKCS#7 to a multiple of 16 bytes before
  sealing, so its overhead is up to 45 bytes. memberlist uses it when it
  speaks protocol version 1.
- Version 1 seals the plaintext as it is (29 bytes of overhead). memberlist
  uses it for protocol version 2 and later, the default.
- The key size picks AES-128, AES-192 or AES-256. Nonces are random.
- The additional data is empty for UDP packets in 0.2.2, the 5-byte stream
  header for streams, and newer memberlist releases append the label.

A keyring contains a primary key, used to encrypt, and any number of extra
keys that are only tried when decrypting, primary first. That is how a
cluster rotates keys: install the new key everywhere, switch the primary,
then remove the old one.

Invariant: no key bytes appear in a repr, a log line or an exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xavi.protocol.constants import (
    AES_BLOCK_SIZE,
    ENCRYPT_OVERHEAD,
    ENCRYPTION_VERSION_MAX,
    ENCRYPTION_VERSION_MIN,
    ENCRYPTION_VERSION_SIZE,
    KEY_SIZES,
    NONCE_SIZE,
    TAG_SIZE,
)
from xavi.protocol.errors import DecodeError, KeyringError

__all__ = [
    "Keyring",
    "decrypt_payload",
    "encrypt_overhead",
    "encrypt_payload",
    "encrypted_length",
    "validate_key",
]

NonceSource = Callable[[int], bytes]


def validate_key(key: bytes) -> None:
    """Raise ``KeyringError`` unless ``key`` is 16, 24 or 32 bytes long."""
    if not isinstance(key, bytes | bytearray) or len(key) not in KEY_SIZES:
        size = len(key) if isinstance(key, bytes | bytearray) else "non-bytes"
        raise KeyringError(f"invalid key size {size}: a key must be 16, 24 or 32 bytes")


def encrypt_overhead(version: int) -> int:
    """Return the maximum number of bytes that encryption adds for ``version``."""
    try:
        return ENCRYPT_OVERHEAD[version]
    except KeyError:
        raise ValueError(f"unsupported encryption version {version}") from None


def encrypted_length(version: int, plaintext_length: int) -> int:
    """Return the exact encrypted size of a plaintext of ``plaintext_length`` bytes."""
    if version >= 1:
        return ENCRYPTION_VERSION_SIZE + NONCE_SIZE + plaintext_length + TAG_SIZE
    padding = AES_BLOCK_SIZE - (plaintext_length % AES_BLOCK_SIZE)
    return ENCRYPTION_VERSION_SIZE + NONCE_SIZE + plaintext_length + padding + TAG_SIZE


class Keyring:
    """Encryption keys of one node: the primary key first, then decrypt-only keys.

    The operations mirror memberlist's ``Keyring``. ``install`` adds a key,
    and the first key installed becomes primary. Installing a key twice is a
    no-op. ``use`` makes an installed key primary. ``remove`` drops a
    non-primary key.
    """

    __slots__ = ("_ciphers", "_keys")

    def __init__(self, keys: Iterable[bytes] = (), primary_key: bytes | None = None) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        extra = [bytes(k) for k in keys]
        if extra and primary_key is None:
            raise KeyringError("a keyring with keys needs a primary key")
        if primary_key is not None:
            self.install(primary_key)
        for key in extra:
            self.install(key)

    def __repr__(self) -> str:
        return f"Keyring(keys={len(self._keys)})"

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> tuple[bytes, ...]:
        """All installed keys, primary first."""
        return tuple(self._keys)

    @property
    def primary_key(self) -> bytes | None:
        """The key used to encrypt, or None when the keyring is empty."""
        return self._keys[0] if self._keys else None

    def install(self, key: bytes) -> None:
        """Add ``key`` for decryption. The first key installed becomes primary."""
        validate_key(key)
        key = bytes(key)
        if key in self._ciphers:
            return
        self._keys.append(key)
        self._ciphers[key] = AESGCM(key)

    def use(self, key: bytes) -> None:
        """Make the installed ``key`` the primary key."""
        key = bytes(key)
        if key not in self._ciphers:
            raise KeyringError("the requested key is not installed in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Drop ``key``. Removing the primary key is rejected, a missing key is a no-op."""
        key = bytes(key)
        if self._keys and key == self._keys[0]:
            raise KeyringError("removing the primary key is not allowed; use another key first")
        if key in self._ciphers:
            self._keys.remove(key)
            del self._ciphers[key]

    def primary_cipher(self) -> AESGCM:
        """Return the AES-GCM cipher of the primary key."""
        if not self._keys:
            raise KeyringError("the keyring is empty, so nothing can be encrypted")
        return self._ciphers[self._keys[0]]

    def ciphers(self) -> list[AESGCM]:
        """Return the AES-GCM ciphers of all keys, primary first."""
        return [self._ciphers[k] for k in self._keys]


def encrypt_payload(
    version: int,
    keyring: Keyring,
    plaintext: bytes,
    additional_data: bytes = b"",
    *,
    nonce_source: NonceSource = os.urandom,
) -> bytes:
    """Encrypt ``plaintext`` with the primary key in memberlist's layout.

    ``nonce_source(12)`` supplies the nonce. Tests pass a fixed one to get
    repeatable bytes. Production keeps ``os.urandom``, because AES-GCM
    breaks if a nonce is ever reused with the same key.
    """
    if version not in (0, 1):
        raise ValueError(f"unsupported encryption version {version}")
    nonce = nonce_source(NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"nonce source returned {len(nonce)} bytes, expected {NONCE_SIZE}")
    if version == 0:
        pad = AES_BLOCK_SIZE - (len(plaintext) % AES_BLOCK_SIZE)
        plaintext = bytes(plaintext) + bytes((pad,)) * pad
    sealed = keyring.primary_cipher().encrypt(nonce, plaintext, additional_data or None)
    return bytes((version,)) + nonce + sealed


def decrypt_payload(keyring: Keyring, data: bytes, additional_data: bytes = b"") -> bytes:
    """Decrypt untrusted ``data`` with any installed key, primary first.

    Raises ``DecodeError`` for an unsupported version, a payload too short to
    hold a nonce and tag, bad version 0 padding, or when no key opens it.
    """
    if not data:
        raise DecodeError("cannot decrypt an empty payload")
    version = data[0]
    if not ENCRYPTION_VERSION_MIN <= version <= ENCRYPTION_VERSION_MAX:
        raise DecodeError(f"unsupported encryption version {version}")
    if len(data) < encrypted_length(version, 0):
        raise DecodeError(f"payload is too small to decrypt: {len(data)} bytes")

    nonce = bytes(data[ENCRYPTION_VERSION_SIZE : ENCRYPTION_VERSION_SIZE + NONCE_SIZE])
    sealed = bytes(data[ENCRYPTION_VERSION_SIZE + NONCE_SIZE :])
    aad = additional_data or None
    for cipher in keyring.ciphers():
        try:
            plain = cipher.decrypt(nonce, sealed, aad)
        except InvalidTag:
            continue
        if version == 0:
            return _strip_pkcs7(plain)
        return plain
    # Same wording as memberlist's error, so logs of both read alike.
    raise DecodeError("No installed keys could decrypt the message")


def _strip_pkcs7(plain: bytes) -> bytes:
    # memberlist trusts the last byte without checks. An authenticated
    # payload always has valid padding, so a bad value means a broken peer.
    if not plain:
        raise DecodeError("version 0 payload has no padding")
    pad = plain[-1]
    if not 1 <= pad <= AES_BLOCK_SIZE or pad > len(plain):
        raise DecodeError(f"invalid PKCS#7 padding value {pad}")
    return plain[:-pad]
