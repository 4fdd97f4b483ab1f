"""Xavi's exception tree.

Every error Xavi raises on purpose derives from :class:`XaviError`. Errors from
lower layers (the Docker SDK, ``cryptography``, the file system) are translated
at the boundary with ``raise ... from exc`` so callers catch one tree::

    XaviError
    ├── ConfigError          the operator's config is invalid (all problems listed)
    ├── SecretsError         the secrets file is missing, malformed or unsafe
    ├── BundleError          an auth bundle cannot be decoded or would overwrite secrets
    ├── DockerError          the Docker Engine refused or failed a request
    │   ├── DockerUnavailable    the engine cannot be reached at all
    │   ├── ImageError           an image is missing and could not be pulled
    │   └── ContainerConflict    a container Xavi needs is owned by someone else
    └── EscalationError      an actor kept crashing; the agent must exit

Messages say what failed, on which value, and what to do next. They never
contain a secret value.
"""

from __future__ import annotations


class XaviError(Exception):
    """Base class of every error Xavi raises on purpose."""


class ConfigError(XaviError):
    """The config file is invalid; ``problems`` lists every problem with its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {source} ({len(self.problems)} problem(s)):\n{lines}")


class SecretsError(XaviError):
    """The secrets file cannot be created, read or trusted."""


class BundleError(XaviError):
    """An auth bundle is corrupt or conflicts with the secrets already on this host."""


class DockerError(XaviError):
    """The Docker Engine refused or failed a request."""


class DockerUnavailable(DockerError):
    """The Docker Engine cannot be reached."""


class ImageError(DockerError):
    """An image is not available locally and could not be pulled."""


class ContainerConflict(DockerError):
    """A container with Xavi's name exists but does not carry Xavi's labels."""


class EscalationError(XaviError):
    """An actor exceeded its restart intensity; the agent exits so its service manager acts."""
