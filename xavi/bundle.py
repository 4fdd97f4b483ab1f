"""Auth bundles: one base64 string that bootstraps a new host into a cluster.

A bundle is base64 (standard or URL-safe alphabet) of a JSON object::

    {"version": 1, "config": {...xavi.json...}, "secrets": {...xavi.secrets...}}

``secrets`` is optional. Applying a bundle validates everything first and
writes nothing when any part is invalid. It never replaces existing secrets
with different ones unless the operator says so (``--replace-secrets``),
because new secrets would cut the host off from its data and its cluster.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from xavi.config import validate
from xavi.errors import BundleError, ConfigError, SecretsError
from xavi.secrets import SECRETS_FILE, Secrets, parse_secrets, read_secrets, \
    write_secrets_atomically

BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 1024 * 1024
"""A bundle larger than this is rejected before decoding."""


def encode_bundle(config: dict[str, Any], secrets: Secrets | None) -> str:
    """Return a bundle carrying ``config`` and, when given, ``secrets``."""
    data: dict[str, Any] = {"version": BUNDLE_VERSION, "config": config}
    if secrets is not None:
        data["secrets"] = secrets.to_json_dict()
    return base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def decode_bundle(text: str) -> tuple[dict[str, Any], Secrets | None]:
    """Decode and validate a bundle; raise BundleError that names the problem (never a value)."""
    compact = "".join(text.split())
    if len(compact) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the auth bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        padded = compact + "=" * (-len(compact) % 4)
        if "-" in padded or "_" in padded:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BundleError(
            "the auth bundle is not base64 of a JSON object; copy it again in one piece "
            "(for example from 'xavi ctl bundle' on a running host)"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise BundleError("the auth bundle has no 'config' object")
    if data.get("version", BUNDLE_VERSION) != BUNDLE_VERSION:
        raise BundleError(f"the auth bundle has version {data.get('version')!r}; "
                          f"this Xavi reads version {BUNDLE_VERSION}")
    try:
        validate(data["config"], "auth bundle config")
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    secrets = None
    if "secrets" in data:
        try:
            secrets = parse_secrets(data["secrets"], "auth bundle secrets")
        except SecretsError as exc:
            raise BundleError(str(exc)) from None
    return data["config"], secrets


def apply_bundle(text: str, config_dir: Path, *, replace_secrets: bool = False) -> list[str]:
    """Write the bundle's config and secrets into ``config_dir``; return what was written."""
    config, secrets = decode_bundle(text)
    secrets_path = config_dir / SECRETS_FILE
    existing = read_secrets(secrets_path)
    written = []
    if secrets is not None and existing is not None and existing != secrets \
            and not replace_secrets:
        raise BundleError(
            f"{secrets_path} already holds different secrets; Xavi keeps them, because "
            "replacing them would cut this host off from its data and cluster. Run again "
            "with --replace-secrets if this host must take the bundle's secrets"
        )
    config_dir.mkdir(parents=True, exist_ok=True)
    if secrets is not None and existing != secrets:
        write_secrets_atomically(secrets_path, secrets)
        written.append(str(secrets_path))
    config_path = config_dir / "xavi.json"
    temporary = config_dir / f".xavi.json.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, config_path)
    written.append(str(config_path))
    return written
