"""The one module that talks to the Docker Engine through the ``docker`` SDK.

Everything above this module works with :class:`ContainerSpec` and
:class:`ContainerState` records and Xavi's own exceptions. SDK errors are
translated here by HTTP status code, never by message text:

- connection failures -> :class:`DockerUnavailable`
- 404 on an image -> :class:`ImageError` (missing), other pull failures -> ImageError
- 409 on a name -> :class:`ContainerConflict`
- anything else -> :class:`DockerError`

Registry credentials are sent only to the registry they belong to, so a typo
in an image name cannot leak them to another registry.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount

from xavi.container_spec import (
    DEFAULT_REGISTRY,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_PREFIX,
    LABEL_SERVICE,
    LABEL_SPEC_HASH,
    NETWORK_NAME,
    ContainerSpec,
    ContainerState,
    MountSpec,
)
from xavi.errors import ContainerConflict, DockerError, DockerUnavailable, ImageError

__all__ = [
    "DEFAULT_REGISTRY", "LABEL_MANAGED", "LABEL_NODE", "LABEL_PREFIX", "LABEL_SERVICE",
    "LABEL_SPEC_HASH", "NETWORK_NAME", "ContainerSpec", "ContainerState", "DockerAdapter",
    "EventStream", "MountSpec", "image_registry",
]

_NETWORK_LOCK = threading.Lock()
"""Serialises network creation among the adapters of one process (the engine's own
duplicate check is not atomic in Docker 20.10)."""
REQUEST_TIMEOUT = 60
"""Seconds before a Docker API request (other than a pull) is given up."""


def image_registry(image: str) -> str:
    """Return the registry host an image reference points at (``docker.io`` when none)."""
    first, sep, _rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DEFAULT_REGISTRY


def _translate(exc: Exception, what: str) -> DockerError:
    if isinstance(exc, requests.exceptions.ConnectionError | docker.errors.DockerException) and \
            not isinstance(exc, docker.errors.APIError):
        target = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return DockerUnavailable(
            f"cannot reach the Docker Engine at {target} while trying to {what}: "
            f"{exc.__class__.__name__}. Check that dockerd is running, or point Xavi at it "
            "with --docker-host or DOCKER_HOST"
        )
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code
        detail = exc.explanation or str(exc)
        if status == 409:
            return ContainerConflict(f"failed to {what}: conflict (HTTP 409): {detail}")
        return DockerError(f"failed to {what}: HTTP {status}: {detail}")
    return DockerError(f"failed to {what}: {exc}")


class DockerAdapter:
    """A thread-safe facade over one Docker Engine."""

    def __init__(self, base_url: str | None = None) -> None:
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=REQUEST_TIMEOUT)
            else:
                self._client = docker.from_env(timeout=REQUEST_TIMEOUT)
        except docker.errors.DockerException as exc:
            raise _translate(exc, "connect") from exc
        self.fail_calls: Callable[[str], bool] | None = None
        """Fault injection: when set and it returns True for an operation, that call fails."""

    def _check_fault(self, operation: str) -> None:
        if self.fail_calls is not None and self.fail_calls(operation):
            raise DockerError(f"failed to {operation}: injected fault")

    def close(self) -> None:
        """Close the HTTP connections to the engine."""
        self._client.close()

    def ping(self) -> None:
        """Raise DockerUnavailable when the engine does not respond."""
        try:
            self._client.ping()
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise _translate(exc, "ping the engine") from exc

    # Images ---------------------------------------------------------------

    def image_exists(self, image: str) -> bool:
        """Return whether the image is present locally."""
        self._check_fault("inspect image")
        try:
            self._client.images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"inspect image {image}") from exc

    def pull(self, image: str, *, registry: str, username: str | None,
             password: str | None) -> None:
        """Pull an image, with the credentials only when they belong to its registry."""
        self._check_fault(f"pull {image}")
        auth = None
        if username and password and image_registry(image) == registry:
            auth = {"username": username, "password": password}
        repository, tag = _split_tag(image)
        try:
            self._client.images.pull(repository, tag=tag, auth_config=auth)
        except docker.errors.NotFound as exc:
            raise ImageError(
                f"image {image} was not found in registry {image_registry(image)}: "
                "check images.* in the config"
            ) from exc
        except docker.errors.APIError as exc:
            detail = (exc.explanation or str(exc)).replace(password or "\0", "***")
            hint = " (check docker.username and docker.password)" if "unauthorized" in \
                detail.lower() or exc.status_code in (401, 403) else ""
            raise ImageError(f"failed to pull {image}: {detail}{hint}") from exc
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"pull {image}") from exc

    # Network --------------------------------------------------------------

    def ensure_network(self, name: str = NETWORK_NAME) -> None:
        """Create the user-defined bridge network unless it exists."""
        self._check_fault("ensure network")
        with _NETWORK_LOCK:
            try:
                # The name filter also matches longer names, so compare exactly.
                existing = [n for n in self._client.networks.list(names=[name]) if n.name == name]
                if existing:
                    return
                self._client.networks.create(
                    name, driver="bridge", labels={LABEL_MANAGED: "true"}, check_duplicate=True
                )
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return
                raise _translate(exc, f"create network {name}") from exc
            except Exception as exc:  # noqa: BLE001
                raise _translate(exc, f"create network {name}") from exc

    # Containers -----------------------------------------------------------

    def get(self, name_or_id: str) -> ContainerState | None:
        """Return a container's state, or None when it does not exist."""
        self._check_fault(f"inspect {name_or_id}")
        try:
            attrs = self._client.api.inspect_container(name_or_id)
        except docker.errors.NotFound:
            return None
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"inspect container {name_or_id}") from exc
        return _state_from_attrs(attrs)

    def list_managed(self, service: str | None = None) -> list[ContainerState]:
        """Return every container with Xavi's label (of one service, when given)."""
        self._check_fault("list containers")
        filters = [f"{LABEL_MANAGED}=true"]
        if service:
            filters.append(f"{LABEL_SERVICE}={service}")
        try:
            summaries = self._client.api.containers(all=True, filters={"label": filters})
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, "list containers") from exc
        states = []
        for summary in summaries:
            state = self.get(summary["Id"])
            if state is not None:
                states.append(state)
        return states

    def create(self, spec: ContainerSpec, name: str | None = None) -> str:
        """Create (not start) a container from a spec; return its ID."""
        self._check_fault(f"create {spec.name}")
        mounts = [Mount(target=m.target, source=m.source, type=m.kind, read_only=m.read_only)
                  for m in spec.mounts]
        ports = {port: (host_ip, host_port) for port, host_ip, host_port in spec.ports}
        kwargs: dict[str, Any] = {
            "name": name or spec.name,
            "command": list(spec.command) or None,
            "environment": dict(spec.env),
            "labels": spec.labels(),
            "mounts": mounts,
            "ports": ports,
            "network": NETWORK_NAME,
            "detach": True,
            "restart_policy": {"Name": "no"},
        }
        if spec.memory_bytes:
            kwargs["mem_limit"] = spec.memory_bytes
            kwargs["memswap_limit"] = spec.memory_bytes
        if spec.nano_cpus:
            kwargs["nano_cpus"] = int(spec.nano_cpus)
        if spec.healthcheck:
            kwargs["healthcheck"] = {
                "test": ["CMD-SHELL", *spec.healthcheck],
                "interval": 2_000_000_000,
                "timeout": 5_000_000_000,
                "retries": 5,
                "start_period": 2_000_000_000,
            }
        try:
            container = self._client.containers.create(spec.image, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise ImageError(f"image {spec.image} is not present locally") from exc
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"create container {name or spec.name}") from exc
        return str(container.id)

    def _container_call(self, what: str, name_or_id: str, call: Callable[[], object]) -> None:
        self._check_fault(f"{what} {name_or_id}")
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, f"{what} container {name_or_id}") from exc

    def start(self, name_or_id: str) -> None:
        """Start a container."""
        self._container_call("start", name_or_id, lambda: self._client.api.start(name_or_id))

    def stop(self, name_or_id: str, timeout: int = 10) -> None:
        """Stop a container, killing it after ``timeout`` seconds."""
        self._container_call(
            "stop", name_or_id, lambda: self._client.api.stop(name_or_id, timeout=timeout)
        )

    def remove(self, name_or_id: str) -> None:
        """Remove a container (never its volumes)."""
        self._container_call(
            "remove", name_or_id, lambda: self._client.api.remove_container(name_or_id, v=False,
                                                                            force=True)
        )

    def rename(self, name_or_id: str, new_name: str) -> None:
        """Rename a container."""
        self._container_call(
            "rename", name_or_id, lambda: self._client.api.rename(name_or_id, new_name)
        )

    def update_limits(self, name_or_id: str, memory_bytes: int | None,
                      nano_cpus: int | None) -> None:
        """Change memory and CPU limits in place (0 removes a limit)."""
        memory = memory_bytes or 0
        cpus = int(nano_cpus or 0)

        def call() -> None:
            # docker-py's update_container has no nano_cpus argument, so the
            # endpoint is called with the engine's own field names.
            body: dict[str, Any] = {"NanoCpus": cpus}
            if memory:
                body.update(Memory=memory, MemorySwap=memory)
            url = self._client.api._url("/containers/{0}/update", name_or_id)
            self._client.api._raise_for_status(self._client.api._post_json(url, data=body))

        self._container_call("update", name_or_id, call)

    def events(self, filters: dict[str, Any]) -> EventStream:
        """Open a stream of Docker events; iterate it in a thread, close it to stop."""
        try:
            stream = self._client.api.events(decode=True, filters=filters)
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, "follow Docker events") from exc
        return EventStream(stream)


class EventStream:
    """An open Docker event stream; ``close`` ends the iteration from another thread."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            yield from self._stream
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, "read Docker events") from exc

    def close(self) -> None:
        """Stop the stream; a blocked iteration ends."""
        try:
            self._stream.close()
        except Exception:  # noqa: BLE001 - closing a dead stream is harmless
            pass


def _split_tag(image: str) -> tuple[str, str]:
    name, _, digest = image.partition("@")
    if digest:
        return name, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return repository, tag
    return image, "latest"


def _state_from_attrs(attrs: dict[str, Any]) -> ContainerState:
    state = attrs.get("State") or {}
    health = (state.get("Health") or {}).get("Status")
    host = attrs.get("HostConfig") or {}
    return ContainerState(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        labels=(attrs.get("Config") or {}).get("Labels") or {},
        status=state.get("Status", "unknown"),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        health=health,
        memory_bytes=int(host.get("Memory") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        started_at=state.get("StartedAt", ""),
    )
