"""The gossip keyring as stored in ``xavi.secrets``: list, install, use, remove.

The keyring is ``cluster_key`` (the primary key, which encrypts outgoing
gossip) plus ``extra_cluster_keys`` (keys that also decrypt incoming gossip).
A key rotation across a cluster is: ``install`` the new key on every host,
``use`` it on every host, then ``remove`` the old one, as with memberlist's
keyring and ``serf keys``.

Rules enforced here:

- A key is standard base64 of 16, 24 or 32 bytes (AES-128, -192 or -256).
- The primary key cannot be removed; ``use`` another key first.
- ``use`` needs a key that is already installed.
- Every change is written with :func:`~xavi.secrets.write_secrets_atomically`
  (mode 0600, rename into place). Changes are serialised inside this process;
  the file is read again before each change, so an edit by hand in between is
  kept.

Keys are shown only as fingerprints (:func:`fingerprint`), never as values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from xavi.errors import SecretsError
from xavi.secrets import Secrets, read_secrets, write_secrets_atomically

KEY_SIZES = (16, 24, 32)
"""Accepted key lengths in bytes, the AES key sizes memberlist accepts."""
FINGERPRINT_PREFIX = "sha256:"
FINGERPRINT_HEX = 16
"""Hex digits of the SHA-256 of the key bytes shown as its fingerprint."""

_CHANGE_LOCK = threading.Lock()


class KeyringError(SecretsError):
    """A keyring change is invalid (bad key, unknown key, removing the primary key)."""


@dataclass(frozen=True)
class KeyringChange:
    """The outcome of one keyring operation."""

    secrets: Secrets
    changed: bool
    """False when the keyring already was as requested and the file was not written."""
    message: str


def fingerprint(key: str) -> str:
    """Return the printable fingerprint of a base64 key: ``sha256:`` and 16 hex digits."""
    digest = hashlib.sha256(base64.b64decode(key)).hexdigest()
    return FINGERPRINT_PREFIX + digest[:FINGERPRINT_HEX]


def validate_key(text: str) -> str:
    """Return the key in canonical base64; raise KeyringError naming the problem (never the value)."""
    compact = "".join(text.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError("the key is not valid base64") from None
    if len(raw) not in KEY_SIZES:
        raise KeyringError(f"the key decodes to {len(raw)} bytes; a key must be 16, 24 or 32 "
                           "bytes (generate one with 'head -c 32 /dev/urandom | base64')")
    return base64.b64encode(raw).decode("ascii")


def list_keys(secrets: Secrets) -> list[dict[str, object]]:
    """Return the keyring as fingerprints, the primary key first."""
    keys: list[dict[str, object]] = [{"fingerprint": fingerprint(secrets.cluster_key),
                                      "primary": True}]
    keys.extend({"fingerprint": fingerprint(k), "primary": False}
                for k in secrets.extra_cluster_keys)
    return keys


def _resolve(secrets: Secrets, key_or_fingerprint: str) -> str:
    """Return the installed key named by its value or its fingerprint."""
    installed = (secrets.cluster_key, *secrets.extra_cluster_keys)
    text = key_or_fingerprint.strip()
    if text.startswith(FINGERPRINT_PREFIX):
        matches = [k for k in installed if fingerprint(k) == text]
        if not matches:
            raise KeyringError(f"no installed key has the fingerprint {text}; "
                               "see 'xavi ctl keys list'")
        return matches[0]
    key = validate_key(text)
    if key not in installed:
        raise KeyringError(f"the key {fingerprint(key)} is not installed; install it first "
                           "with 'xavi ctl keys install'")
    return key


def install_key(secrets: Secrets, key_text: str) -> KeyringChange:
    """Add a key that decrypts gossip (it does not encrypt until ``use``)."""
    key = validate_key(key_text)
    if key == secrets.cluster_key or key in secrets.extra_cluster_keys:
        return KeyringChange(secrets, False, f"key {fingerprint(key)} is already installed")
    updated = replace(secrets, extra_cluster_keys=(*secrets.extra_cluster_keys, key))
    return KeyringChange(updated, True, f"key {fingerprint(key)} installed")


def use_key(secrets: Secrets, key_or_fingerprint: str) -> KeyringChange:
    """Make an installed key the primary key; the old primary key stays installed."""
    key = _resolve(secrets, key_or_fingerprint)
    if key == secrets.cluster_key:
        return KeyringChange(secrets, False, f"key {fingerprint(key)} already is the primary key")
    extra = tuple(k for k in secrets.extra_cluster_keys if k != key)
    updated = replace(secrets, cluster_key=key, extra_cluster_keys=(secrets.cluster_key, *extra))
    return KeyringChange(updated, True, f"key {fingerprint(key)} is now the primary key")


def remove_key(secrets: Secrets, key_or_fingerprint: str) -> KeyringChange:
    """Remove an installed key other than the primary key."""
    key = _resolve(secrets, key_or_fingerprint)
    if key == secrets.cluster_key:
        raise KeyringError(f"key {fingerprint(key)} is the primary key and cannot be removed; "
                           "make another key primary first with 'xavi ctl keys use'")
    extra = tuple(k for k in secrets.extra_cluster_keys if k != key)
    updated = replace(secrets, extra_cluster_keys=extra)
    return KeyringChange(updated, True, f"key {fingerprint(key)} removed")


OPERATIONS = {"install": install_key, "use": use_key, "remove": remove_key}
"""Keyring changes by the name ``xavi ctl keys`` gives them."""


def change_keyring(path: Path, operation: str, key_text: str) -> KeyringChange:
    """Apply one keyring operation to the secrets file at ``path`` and write it atomically."""
    apply = OPERATIONS.get(operation)
    if apply is None:
        raise KeyringError(f"unknown keyring operation {operation!r}; expected one of "
                           f"{', '.join(OPERATIONS)}")
    with _CHANGE_LOCK:
        secrets = read_secrets(path)
        if secrets is None:
            raise SecretsError(f"{path} does not exist; start the agent once to create it")
        change = apply(secrets, key_text)
        if change.changed:
            write_secrets_atomically(path, change.secrets)
    return change
