"""The host's secrets file ``xavi.secrets``: generate once, load, write atomically.

Invariants:
- The file is created with mode 0600 from its first byte (``O_CREAT|O_EXCL``
  with mode 0600 on a temporary name in the same directory, then ``rename``),
  so no other user can ever read a partial or complete copy.
- A symlink at the file's path is rejected, never followed.
- An existing value is never overwritten by generation: missing keys are
  added, present ones are kept.
- A malformed file is reported, not regenerated, because a new cluster key or
  password would cut this host off from its cluster and its data.
- Secret values never appear in ``repr``, ``str``, logs or exception text.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets as token_source
import stat
from dataclasses import dataclass, field
from pathlib import Path

from xavi.errors import SecretsError

SECRETS_FILE = "xavi.secrets"
CLUSTER_KEY_BYTES = 32
"""AES-256: memberlist accepts 16, 24 or 32-byte keys; Xavi generates 32."""
PASSWORD_BYTES = 24
"""Random bytes behind each generated password (32 URL-safe characters)."""


@dataclass(frozen=True)
class Secrets:
    """The host's secrets. ``repr`` and ``str`` show only which values are set."""

    postgres_password: str = field(repr=False)
    valkey_password: str = field(repr=False)
    cluster_key: str = field(repr=False)
    """Base64 of the primary gossip key (32 bytes)."""
    extra_cluster_keys: tuple[str, ...] = field(default=(), repr=False)
    """Base64 of further keys that decrypt gossip during a key rotation."""
    control_token: str | None = field(default=None, repr=False)
    """Bearer token for ``control.url``, usually delivered by the auth bundle."""

    def __repr__(self) -> str:
        count = 3 + len(self.extra_cluster_keys) + (1 if self.control_token else 0)
        return f"Secrets(<{count} values hidden>)"

    __str__ = __repr__

    def cluster_key_bytes(self) -> bytes:
        """Return the decoded primary gossip key."""
        return base64.b64decode(self.cluster_key)

    def to_json_dict(self) -> dict[str, object]:
        """Return the on-disk form (the only place values leave this object)."""
        data: dict[str, object] = {
            "postgres_password": self.postgres_password,
            "valkey_password": self.valkey_password,
            "cluster_key": self.cluster_key,
        }
        if self.extra_cluster_keys:
            data["extra_cluster_keys"] = list(self.extra_cluster_keys)
        if self.control_token:
            data["control_token"] = self.control_token
        return data


def generate_password() -> str:
    """Return a new random password made of URL-safe characters."""
    return token_source.token_urlsafe(PASSWORD_BYTES)


def generate_cluster_key() -> str:
    """Return base64 of 32 new random bytes."""
    return base64.b64encode(token_source.token_bytes(CLUSTER_KEY_BYTES)).decode("ascii")


def _check_key(name: str, value: object, problems: list[str]) -> None:
    if not isinstance(value, str):
        problems.append(f"{name} is not a string")
        return
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        problems.append(f"{name} is not valid base64")
        return
    if len(raw) not in (16, 24, 32):
        problems.append(f"{name} decodes to {len(raw)} bytes; a key must be 16, 24 or 32 bytes")


def parse_secrets(data: object, source: str) -> Secrets:
    """Validate decoded secrets JSON; raise SecretsError naming each problem (never a value)."""
    if not isinstance(data, dict):
        raise SecretsError(f"{source}: the top level is not a JSON object; fix or restore the file")
    problems = []
    for name in ("postgres_password", "valkey_password"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            problems.append(f"{name} is missing or not a non-empty string")
    _check_key("cluster_key", data.get("cluster_key"), problems)
    extra = data.get("extra_cluster_keys", [])
    if not isinstance(extra, list):
        problems.append("extra_cluster_keys is not a list")
        extra = []
    for index, key in enumerate(extra):
        _check_key(f"extra_cluster_keys[{index}]", key, problems)
    token = data.get("control_token")
    if token is not None and (not isinstance(token, str) or not token):
        problems.append("control_token is not a non-empty string")
    unknown = sorted(set(data) - {"postgres_password", "valkey_password", "cluster_key",
                                  "extra_cluster_keys", "control_token"})
    if unknown:
        problems.append(f"unknown keys {', '.join(unknown)}")
    if problems:
        raise SecretsError(
            f"{source} is malformed: {'; '.join(problems)}. Xavi does not regenerate it, "
            "because new secrets would cut this host off from its cluster and data: "
            "fix the file or restore it from another host of the cluster"
        )
    return Secrets(
        postgres_password=data["postgres_password"],
        valkey_password=data["valkey_password"],
        cluster_key=data["cluster_key"],
        extra_cluster_keys=tuple(extra),
        control_token=token,
    )


def _reject_symlink(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise SecretsError(
            f"{path} is a symbolic link, which Xavi does not follow for a secrets file. "
            "Replace it with a regular file"
        )
    if not stat.S_ISREG(mode):
        raise SecretsError(f"{path} is not a regular file; remove or replace it")


def read_secrets(path: Path) -> Secrets | None:
    """Read and validate the secrets file; return None when it does not exist."""
    _reject_symlink(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretsError(f"cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        content = handle.read()
    if mode & 0o077:
        raise SecretsError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run 'chmod 600 {path}'"
        )
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SecretsError(
            f"{path} is not valid JSON; Xavi does not regenerate it, because new secrets "
            "would cut this host off from its cluster and data: fix or restore it"
        ) from None
    return parse_secrets(data, str(path))


def write_secrets_atomically(path: Path, secrets: Secrets, *, replace: bool = True) -> None:
    """Write the secrets file with mode 0600 from its first byte, atomically.

    With ``replace=False`` an existing file is never overwritten (hard link
    instead of rename), so two agents starting at once cannot both generate.
    """
    _reject_symlink(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".{path.name}.{os.getpid()}.{token_source.token_hex(4)}.tmp"
    payload = (json.dumps(secrets.to_json_dict(), indent=2) + "\n").encode("utf-8")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.rename(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise SecretsError(
                    f"{path} appeared while Xavi was creating it; start the agent again"
                ) from None
            finally:
                temporary.unlink(missing_ok=True)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_secrets(path: Path) -> tuple[Secrets, bool]:
    """Load the secrets file, creating it on first run; return the secrets and whether it was created."""
    existing = read_secrets(path)
    if existing is not None:
        return existing, False
    created = Secrets(
        postgres_password=generate_password(),
        valkey_password=generate_password(),
        cluster_key=generate_cluster_key(),
    )
    write_secrets_atomically(path, created, replace=False)
    return created, True
