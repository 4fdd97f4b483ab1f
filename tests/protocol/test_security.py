"""AES-GCM payload encryption and keyring rules (xavi.protocol.security)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xavi.protocol.errors import DecodeError, KeyringError
from xavi.protocol.security import (
    Keyring,
    decrypt_payload,
    encrypt_overhead,
    encrypt_payload,
    encrypted_length,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 17))
KEY_C = bytes(range(2, 26))
FIXED_NONCE = bytes(range(12))


def fixed_nonce(size: int) -> bytes:
    return FIXED_NONCE[:size]


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("key", [KEY_A, KEY_B, KEY_C], ids=["aes256", "aes128", "aes192"])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1400])
def test_payload_round_trips(version, key, size):
    ring = Keyring(primary_key=key)
    plain = bytes(i % 251 for i in range(size))
    sealed = encrypt_payload(version, ring, plain, b"aad")
    assert len(sealed) == encrypted_length(version, size)
    assert len(sealed) - size <= encrypt_overhead(version)
    assert decrypt_payload(ring, sealed, b"aad") == plain


def test_version_1_layout():
    ring = Keyring(primary_key=KEY_A)
    sealed = encrypt_payload(1, ring, b"hello", nonce_source=fixed_nonce)
    assert sealed == b"\x01" + FIXED_NONCE + AESGCM(KEY_A).encrypt(FIXED_NONCE, b"hello", None)


def test_version_0_pads_with_pkcs7_before_sealing():
    ring = Keyring(primary_key=KEY_B)
    sealed = encrypt_payload(0, ring, b"hello", nonce_source=fixed_nonce)
    padded = b"hello" + bytes([11]) * 11
    assert sealed == b"\x00" + FIXED_NONCE + AESGCM(KEY_B).encrypt(FIXED_NONCE, padded, None)


def test_version_0_pads_full_block():
    assert encrypted_length(0, 16) == 1 + 12 + 32 + 16


def test_wrong_key_raises_decode_error():
    sealed = encrypt_payload(1, Keyring(primary_key=KEY_A), b"secret")
    with pytest.raises(DecodeError, match="No installed keys could decrypt the message"):
        decrypt_payload(Keyring(primary_key=KEY_B), sealed)


def test_wrong_additional_data_raises_decode_error():
    ring = Keyring(primary_key=KEY_A)
    sealed = encrypt_payload(1, ring, b"secret", b"label-a")
    with pytest.raises(DecodeError):
        decrypt_payload(ring, sealed, b"label-b")


@pytest.mark.parametrize(
    "data", [b"", b"\x02" + bytes(40), b"\x01" + bytes(28), b"\x00" + bytes(44)]
)
def test_malformed_payloads_raise_decode_error(data):
    with pytest.raises(DecodeError):
        decrypt_payload(Keyring(primary_key=KEY_A), data)


def test_bad_version_0_padding_raises_decode_error():
    ring = Keyring(primary_key=KEY_B)
    sealed = b"\x00" + FIXED_NONCE + AESGCM(KEY_B).encrypt(FIXED_NONCE, b"x" * 15 + b"\x20", None)
    with pytest.raises(DecodeError, match="padding"):
        decrypt_payload(ring, sealed)


def test_keyring_decrypts_with_any_installed_key():
    old, new = Keyring(primary_key=KEY_A), Keyring(primary_key=KEY_B)
    both = Keyring(keys=[KEY_A], primary_key=KEY_B)
    assert decrypt_payload(both, encrypt_payload(1, old, b"from old")) == b"from old"
    assert decrypt_payload(both, encrypt_payload(1, new, b"from new")) == b"from new"


def test_keyring_encrypts_with_the_primary_key_only():
    ring = Keyring(keys=[KEY_A], primary_key=KEY_B)
    sealed = encrypt_payload(1, ring, b"x")
    assert decrypt_payload(Keyring(primary_key=KEY_B), sealed) == b"x"
    with pytest.raises(DecodeError):
        decrypt_payload(Keyring(primary_key=KEY_A), sealed)


def test_keyring_install_use_remove_follow_memberlist():
    ring = Keyring()
    ring.install(KEY_A)
    assert ring.primary_key == KEY_A
    ring.install(KEY_B)
    ring.install(KEY_B)
    assert ring.keys == (KEY_A, KEY_B)
    ring.use(KEY_B)
    assert ring.keys == (KEY_B, KEY_A)
    ring.remove(KEY_A)
    assert ring.keys == (KEY_B,)
    ring.remove(KEY_C)
    assert ring.keys == (KEY_B,)


def test_keyring_rejects_removing_the_primary_key():
    ring = Keyring(keys=[KEY_A], primary_key=KEY_B)
    with pytest.raises(KeyringError, match="primary"):
        ring.remove(KEY_B)


def test_keyring_rejects_using_an_unknown_key():
    with pytest.raises(KeyringError, match="not installed"):
        Keyring(primary_key=KEY_A).use(KEY_B)


@pytest.mark.parametrize("size", [0, 8, 15, 31, 33])
def test_keyring_rejects_invalid_key_sizes(size):
    with pytest.raises(KeyringError, match="16, 24 or 32"):
        Keyring(primary_key=bytes(size))


def test_keyring_with_keys_needs_a_primary_key():
    with pytest.raises(KeyringError):
        Keyring(keys=[KEY_A])


def test_empty_keyring_cannot_encrypt():
    with pytest.raises(KeyringError):
        encrypt_payload(1, Keyring(), b"x")


def test_keyring_repr_hides_keys():
    text = repr(Keyring(keys=[KEY_B], primary_key=KEY_A))
    assert text == "Keyring(keys=2)"
    assert KEY_A.hex() not in text


def test_decode_error_message_hides_key_material():
    sealed = encrypt_payload(1, Keyring(primary_key=KEY_A), b"secret")
    with pytest.raises(DecodeError) as info:
        decrypt_payload(Keyring(primary_key=KEY_B), sealed)
    assert KEY_A.hex() not in str(info.value)
    assert KEY_B.hex() not in str(info.value)
