"""Gossip keyring in the secrets file: install, use, remove, list, and the rules they enforce."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from xavi.errors import SecretsError
from xavi.keyring import KeyringError, change_keyring, fingerprint, list_keys, validate_key
from xavi.secrets import ensure_secrets, read_secrets

NEW_KEY = base64.b64encode(bytes(range(32))).decode()
SHORT_KEY = base64.b64encode(bytes(16)).decode()


@pytest.fixture
def secrets_path(tmp_path: Path) -> Path:
    path = tmp_path / "xavi.secrets"
    ensure_secrets(path)
    return path


def current(path: Path) -> tuple[str, tuple[str, ...]]:
    secrets = read_secrets(path)
    assert secrets is not None
    return secrets.cluster_key, secrets.extra_cluster_keys


def test_install_adds_decrypting_key(secrets_path: Path) -> None:
    primary, _ = current(secrets_path)

    change = change_keyring(secrets_path, "install", NEW_KEY)

    assert change.changed
    assert current(secrets_path) == (primary, (NEW_KEY,))
    assert stat.S_IMODE(os.stat(secrets_path).st_mode) == 0o600


def test_install_twice_changes_nothing(secrets_path: Path) -> None:
    change_keyring(secrets_path, "install", NEW_KEY)
    before = secrets_path.stat().st_mtime_ns

    change = change_keyring(secrets_path, "install", NEW_KEY)

    assert not change.changed
    assert "already installed" in change.message
    assert secrets_path.stat().st_mtime_ns == before


@pytest.mark.parametrize(("key", "problem"), [
    ("not base64!", "not valid base64"),
    (base64.b64encode(bytes(20)).decode(), "20 bytes"),
    ("", "0 bytes"),
])
def test_invalid_key_is_rejected_without_its_value(secrets_path: Path, key: str,
                                                   problem: str) -> None:
    with pytest.raises(KeyringError, match=problem) as caught:
        change_keyring(secrets_path, "install", key)

    if key:
        assert key not in str(caught.value)


def test_keys_of_16_24_32_bytes_are_valid() -> None:
    for size in (16, 24, 32):
        key = base64.b64encode(bytes(size)).decode()
        assert validate_key(key) == key


def test_use_needs_installed_key(secrets_path: Path) -> None:
    with pytest.raises(KeyringError, match="not installed"):
        change_keyring(secrets_path, "use", NEW_KEY)


def test_use_makes_key_primary_and_keeps_old(secrets_path: Path) -> None:
    old, _ = current(secrets_path)
    change_keyring(secrets_path, "install", NEW_KEY)

    change = change_keyring(secrets_path, "use", NEW_KEY)

    assert change.changed
    assert current(secrets_path) == (NEW_KEY, (old,))


def test_primary_key_cannot_be_removed(secrets_path: Path) -> None:
    primary, _ = current(secrets_path)

    with pytest.raises(KeyringError, match="primary key and cannot be removed"):
        change_keyring(secrets_path, "remove", primary)


def test_remove_by_fingerprint(secrets_path: Path) -> None:
    primary, _ = current(secrets_path)
    change_keyring(secrets_path, "install", SHORT_KEY)

    change = change_keyring(secrets_path, "remove", fingerprint(SHORT_KEY))

    assert change.changed
    assert current(secrets_path) == (primary, ())


def test_unknown_fingerprint_is_rejected(secrets_path: Path) -> None:
    with pytest.raises(KeyringError, match="no installed key"):
        change_keyring(secrets_path, "remove", "sha256:0000000000000000")


def test_list_shows_fingerprints_not_keys(secrets_path: Path) -> None:
    change_keyring(secrets_path, "install", NEW_KEY)
    secrets = read_secrets(secrets_path)
    assert secrets is not None

    keys = list_keys(secrets)

    assert [k["primary"] for k in keys] == [True, False]
    assert keys[1]["fingerprint"] == fingerprint(NEW_KEY)
    assert NEW_KEY not in json.dumps(keys)
    assert secrets.cluster_key not in json.dumps(keys)


def test_missing_secrets_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SecretsError, match="does not exist"):
        change_keyring(tmp_path / "xavi.secrets", "install", NEW_KEY)
