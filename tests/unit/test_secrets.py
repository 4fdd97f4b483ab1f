"""The secrets file: created once with mode 0600, never overwritten, never shown."""

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from xavi.errors import SecretsError
from xavi.secrets import ensure_secrets, read_secrets


def test_first_run_creates_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "xavi.secrets"
    secrets, created = ensure_secrets(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(secrets.cluster_key)) == 32
    assert len(secrets.postgres_password) >= 24
    assert secrets.postgres_password != secrets.valkey_password


def test_second_run_keeps_existing_values(tmp_path: Path) -> None:
    path = tmp_path / "xavi.secrets"
    first, _ = ensure_secrets(path)
    second, created = ensure_secrets(path)
    assert not created
    assert second == first


def test_repr_and_str_hide_every_value(tmp_path: Path) -> None:
    secrets, _ = ensure_secrets(tmp_path / "xavi.secrets")
    for text in (repr(secrets), str(secrets), f"{secrets}"):
        assert secrets.postgres_password not in text
        assert secrets.valkey_password not in text
        assert secrets.cluster_key not in text


def test_symlink_is_rejected_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "xavi.secrets").symlink_to(target)
    with pytest.raises(SecretsError, match="symbolic link"):
        ensure_secrets(tmp_path / "xavi.secrets")
    assert not target.exists()


def test_malformed_file_is_reported_not_regenerated(tmp_path: Path) -> None:
    path = tmp_path / "xavi.secrets"
    path.write_text('{"postgres_password": "pw-value-123", "cluster_key": "bm90IDMyIGJ5dGVz"}')
    os.chmod(path, 0o600)
    with pytest.raises(SecretsError) as info:
        ensure_secrets(path)
    message = str(info.value)
    assert "valkey_password is missing" in message
    assert "cluster_key decodes to 12 bytes" in message
    assert "pw-value-123" not in message
    assert "pw-value-123" in path.read_text()


def test_invalid_json_is_reported_not_regenerated(tmp_path: Path) -> None:
    path = tmp_path / "xavi.secrets"
    path.write_text("{not json")
    os.chmod(path, 0o600)
    with pytest.raises(SecretsError, match="not valid JSON"):
        ensure_secrets(path)
    assert path.read_text() == "{not json"


def test_file_readable_by_others_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "xavi.secrets"
    ensure_secrets(path)
    os.chmod(path, 0o644)
    with pytest.raises(SecretsError, match="chmod 600"):
        read_secrets(path)


def test_file_holds_the_documented_keys(tmp_path: Path) -> None:
    path = tmp_path / "xavi.secrets"
    ensure_secrets(path)
    assert set(json.loads(path.read_text())) == {"postgres_password", "valkey_password",
                                                  "cluster_key"}
