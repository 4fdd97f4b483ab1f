"""Auth bundles: validated before anything is written; existing secrets are protected."""

import base64
from pathlib import Path

import pytest

from xavi.bundle import apply_bundle, encode_bundle
from xavi.errors import BundleError
from xavi.secrets import Secrets, ensure_secrets, generate_cluster_key, read_secrets

CONFIG = {"images": {"app": "myorg/app:1"}, "services": ["app"]}


def make_secrets() -> Secrets:
    return Secrets("pg-password-aaaa", "vk-password-bbbb", generate_cluster_key())


def test_first_run_writes_config_and_secrets(tmp_path: Path) -> None:
    secrets = make_secrets()
    written = apply_bundle(encode_bundle(CONFIG, secrets), tmp_path)
    assert sorted(written) == [str(tmp_path / "xavi.json"), str(tmp_path / "xavi.secrets")]
    assert read_secrets(tmp_path / "xavi.secrets") == secrets
    assert (tmp_path / "xavi.json").stat().st_mode & 0o777 == 0o600


def test_conflicting_secrets_are_refused(tmp_path: Path) -> None:
    existing, _ = ensure_secrets(tmp_path / "xavi.secrets")
    with pytest.raises(BundleError, match="--replace-secrets"):
        apply_bundle(encode_bundle(CONFIG, make_secrets()), tmp_path)
    assert read_secrets(tmp_path / "xavi.secrets") == existing
    assert not (tmp_path / "xavi.json").exists()


def test_replace_secrets_takes_the_bundle(tmp_path: Path) -> None:
    ensure_secrets(tmp_path / "xavi.secrets")
    secrets = make_secrets()
    apply_bundle(encode_bundle(CONFIG, secrets), tmp_path, replace_secrets=True)
    assert read_secrets(tmp_path / "xavi.secrets") == secrets


@pytest.mark.parametrize("bundle", [
    "not base64 at all!",
    base64.b64encode(b"[1, 2]").decode(),
    base64.b64encode(b'{"config": {"services": ["nope"]}}').decode(),
    base64.b64encode(b'{"config": {}, "secrets": {"cluster_key": "x"}}').decode(),
])
def test_corrupt_bundle_writes_nothing(tmp_path: Path, bundle: str) -> None:
    with pytest.raises(BundleError):
        apply_bundle(bundle, tmp_path / "cfg")
    assert not (tmp_path / "cfg").exists()


def test_error_never_shows_secret_values(tmp_path: Path) -> None:
    secrets = make_secrets()
    ensure_secrets(tmp_path / "xavi.secrets")
    with pytest.raises(BundleError) as info:
        apply_bundle(encode_bundle(CONFIG, secrets), tmp_path)
    assert secrets.postgres_password not in str(info.value)
