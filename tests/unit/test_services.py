"""Desired container specs: what changes the spec hash and what does not."""

from pathlib import Path

from xavi.config import validate
from xavi.secrets import Secrets, generate_cluster_key
from xavi.services import build_spec

SECRETS = Secrets("pg-password-0123", "vk-password-0123", generate_cluster_key())


def spec_for(tmp_path: Path, **cluster: object) -> str:
    config = validate({"images": {"app": "example/app:1"}, "services": ["postgres"],
                       "postgres": {"max_ram": "256m"}, "cluster": cluster})
    return build_spec("postgres", config, SECRETS, tmp_path).spec_hash()


def test_node_name_does_not_change_spec_hash(tmp_path: Path) -> None:
    assert spec_for(tmp_path, node_name="edge-1") == spec_for(tmp_path, node_name="edge-2")


def test_published_port_changes_spec_hash(tmp_path: Path) -> None:
    assert spec_for(tmp_path, advertise_addr="192.0.2.1") != spec_for(tmp_path,
                                                                      advertise_addr="192.0.2.2")


def test_postgres_password_reaches_container_only_by_file(tmp_path: Path) -> None:
    config = validate({"images": {"app": "example/app:1"}, "services": ["postgres"]})
    spec = build_spec("postgres", config, SECRETS, tmp_path)
    assert SECRETS.postgres_password not in repr(spec)
    assert SECRETS.postgres_password not in str(spec.env)
    assert ("POSTGRES_PASSWORD_FILE", "/run/secrets/xavi/postgres_password") in spec.env
