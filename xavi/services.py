"""Desired container specs of the four services, built from config, secrets and locations.

This module is pure except for :func:`write_secret_files`, which writes the
files that carry passwords into containers. Passwords reach Postgres through
``POSTGRES_PASSWORD_FILE`` and Valkey through a config file with
``requirepass``, so ``docker inspect`` of those two containers shows no
password. The app and the backup bot get the env contract
(``POSTGRES_PASSWORD``, ``VALKEY_PASSWORD`` and the hosts and ports) because
customer images read it from the environment; they also get ``*_FILE``
variants for images that can read a file instead.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from xavi.config import Config
from xavi.container_spec import ContainerSpec, MountSpec
from xavi.secrets import Secrets

POSTGRES_USER = "postgres"
POSTGRES_CONTAINER_PORT = 5432
VALKEY_CONTAINER_PORT = 6379
SECRETS_MOUNT_DIR = "/run/secrets/xavi"
PROVIDERS = ("postgres", "valkey")
DEPENDENTS = ("app", "backupbot")
"""Services whose containers need the location of the providers."""


@dataclass(frozen=True)
class Location:
    """Address at which a dependent container reaches a provider service."""

    host: str
    """A container name on the ``xavi`` network when local, else an IP address."""
    port: int
    local: bool
    node: str = ""
    """The node that runs the provider."""


def container_name(service: str) -> str:
    """Return the Docker name of a service's container."""
    return f"xavi-{service}"


def secret_dir(state_dir: Path, service: str) -> Path:
    """Return the host directory whose files are mounted into a service's container."""
    return state_dir / "run" / service


def publish_ip(config: Config) -> str:
    """Return the host address Postgres and Valkey are published on."""
    return config.cluster.advertise_addr or config.cluster.bind_addr


def _digest(*values: str) -> str:
    hasher = hashlib.sha256()
    for value in values:
        hasher.update(value.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _mount_secret(state_dir: Path, service: str, filename: str) -> MountSpec:
    return MountSpec(
        source=str(secret_dir(state_dir, service) / filename),
        target=f"{SECRETS_MOUNT_DIR}/{filename}",
        read_only=True,
    )


def secret_files(service: str, secrets: Secrets) -> dict[str, str]:
    """Return the file names and contents mounted into a service's container."""
    if service == "postgres":
        return {"postgres_password": secrets.postgres_password}
    if service == "valkey":
        conf = (
            "# Written by Xavi; edits are replaced.\n"
            f"requirepass {secrets.valkey_password}\n"
            "bind * -::*\n"
            "protected-mode no\n"
            "dir /data\n"
            "appendonly yes\n"
        )
        return {"valkey.conf": conf, "valkey_password": secrets.valkey_password}
    return {
        "postgres_password": secrets.postgres_password,
        "valkey_password": secrets.valkey_password,
    }


def build_spec(
    service: str,
    config: Config,
    secrets: Secrets,
    state_dir: Path,
    locations: dict[str, Location] | None = None,
) -> ContainerSpec:
    """Return the desired container spec of one service."""
    section = config.service[service]
    node = config.cluster.node_name
    secret_inputs = _digest(*secret_files(service, secrets).values())
    common = {
        "name": container_name(service),
        "service": service,
        "node": node,
        "image": config.images[service],
        "memory_bytes": section.limits.memory_bytes,
        "nano_cpus": section.limits.nano_cpus,
    }
    files = sorted(secret_files(service, secrets))
    mounts = [_mount_secret(state_dir, service, name) for name in files]

    if service == "postgres":
        data = (
            MountSpec(section.storage_path, "/var/lib/postgresql/data")
            if section.storage_path
            else MountSpec("xavi-postgres-data", "/var/lib/postgresql/data", kind="volume")
        )
        return ContainerSpec(
            **common,
            env=(
                ("POSTGRES_PASSWORD_FILE", f"{SECRETS_MOUNT_DIR}/postgres_password"),
                ("POSTGRES_USER", POSTGRES_USER),
                ("XAVI_SECRETS_DIGEST", secret_inputs),
            ),
            mounts=(*mounts, data),
            ports=((f"{POSTGRES_CONTAINER_PORT}/tcp", publish_ip(config), section.port or 5432),),
            healthcheck=(f"pg_isready -q -h 127.0.0.1 -U {POSTGRES_USER}",),
        )

    if service == "valkey":
        return ContainerSpec(
            **common,
            command=("valkey-server", f"{SECRETS_MOUNT_DIR}/valkey.conf"),
            env=(("XAVI_SECRETS_DIGEST", secret_inputs),),
            mounts=(*mounts, MountSpec("xavi-valkey-data", "/data", kind="volume")),
            ports=((f"{VALKEY_CONTAINER_PORT}/tcp", publish_ip(config), section.port or 6379),),
            healthcheck=(
                f'valkey-cli --no-auth-warning -a "$(cat {SECRETS_MOUNT_DIR}/valkey_password)" '
                "ping | grep -q PONG",
            ),
        )

    env = dict(section.env)
    env.update(_dependent_env(secrets, locations or {}))
    ports = []
    for mapping in section.ports:
        host_port, _, container_port = mapping.partition(":")
        proto = "tcp"
        if "/" in container_port:
            container_port, proto = container_port.split("/")
        ports.append((f"{container_port}/{proto}", publish_ip(config), int(host_port)))
    return ContainerSpec(
        **common,
        env=tuple(sorted(env.items())),
        mounts=tuple(mounts),
        ports=tuple(ports),
    )


def _dependent_env(secrets: Secrets, locations: dict[str, Location]) -> dict[str, str]:
    env = {
        "POSTGRES_USER": POSTGRES_USER,
        "POSTGRES_PASSWORD": secrets.postgres_password,
        "POSTGRES_PASSWORD_FILE": f"{SECRETS_MOUNT_DIR}/postgres_password",
        "VALKEY_PASSWORD": secrets.valkey_password,
        "VALKEY_PASSWORD_FILE": f"{SECRETS_MOUNT_DIR}/valkey_password",
    }
    for service, prefix in (("postgres", "POSTGRES"), ("valkey", "VALKEY")):
        location = locations.get(service)
        if location is not None:
            env[f"{prefix}_HOST"] = location.host
            env[f"{prefix}_PORT"] = str(location.port)
    return env


def write_secret_files(state_dir: Path, service: str, secrets: Secrets) -> None:
    """Write the files mounted into a service's container, atomically, only when changed.

    The directory is 0700 so no other host user can reach the files; the files
    are 0644 because the process inside the container may run as another uid.
    """
    directory = secret_dir(state_dir, service)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    for parent in (directory.parent, directory.parent.parent):
        if parent.stat().st_mode & 0o077:
            os.chmod(parent, 0o700)
    for name, content in secret_files(service, secrets).items():
        path = directory / name
        try:
            if path.read_text() == content:
                continue
        except FileNotFoundError:
            pass
        temporary = directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
