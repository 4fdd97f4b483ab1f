"""The config model of ``xavi.json`` and its validation (pure: no I/O but reading one file).

The keys of the original agent's example config keep their meaning:
``control``, ``docker``, ``images``, ``valkey``, ``postgres``, ``cluster`` and
``services``. Xavi adds a few keys a real deployment needs; each is documented
in the README's config table and in :data:`SCHEMA` below.

Validation collects every problem before it reports, each with its JSON path,
and suggests the closest known key for an unknown one. A config that fails
validation never replaces the one in force.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xavi.errors import ConfigError

SERVICES: tuple[str, ...] = ("postgres", "valkey", "app", "backupbot")
"""Every service Xavi can run, in start order (providers before their users)."""

DEFAULT_IMAGES = {
    "postgres": "postgres:16",
    "valkey": "valkey/valkey:8",
    "backupbot": "wearecococo/backupbot:latest",
}
"""Images used when ``images`` omits a service; the app has no default."""

MIN_MEMORY_BYTES = 6 * 1024 * 1024
"""Docker rejects memory limits below 6 MiB."""

MIN_CPU = 0.01
"""Docker's smallest CPU quota is a hundredth of a core."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def parse_size(text: str) -> int:
    """Convert a Docker-style size (``512m``, ``1g``, ``1.5g``, ``65536``) to bytes.

    Raises ValueError when ``text`` is not such a size.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(text)
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.lower()])


@dataclass(frozen=True)
class Limits:
    """Docker resource limits of one service; ``None`` means unlimited."""

    memory_bytes: int | None = None
    nano_cpus: int | None = None
    """CPU quota in billionths of a core (Docker's ``NanoCpus``); an int, as Docker requires."""


@dataclass(frozen=True)
class ControlSection:
    """Control-plane polling settings (``control``)."""

    url: str | None = None
    interval: int = 30
    """Seconds between polls of ``url``."""


@dataclass(frozen=True)
class DockerSection:
    """Image pull settings (``docker``)."""

    registry: str = "docker.io"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    pull_policy: str = "missing"
    """``missing``: pull only images absent locally; ``always``: pull before each (re)create."""

    def __repr__(self) -> str:
        secret = "'***'" if self.password else "None"
        return (
            f"DockerSection(registry={self.registry!r}, username={self.username!r}, "
            f"password={secret}, pull_policy={self.pull_policy!r})"
        )


@dataclass(frozen=True)
class ServiceSection:
    """Per-service settings (``postgres``, ``valkey``, ``app``, ``backupbot``)."""

    limits: Limits = Limits()
    port: int | None = None
    """Host port the service is published on at the advertised address (postgres, valkey)."""
    storage_path: str | None = None
    """Host directory for the service's data (postgres); a named volume when absent."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment for the container (app, backupbot), sorted by name."""
    ports: tuple[str, ...] = ()
    """Extra published ports as ``HOST:CONTAINER`` (app)."""


@dataclass(frozen=True)
class ClusterSection:
    """The gossip mesh (``cluster``)."""

    bind_port: int = 7946
    bind_addr: str = "0.0.0.0"
    advertise_addr: str | None = None
    node_name: str = field(default_factory=socket.gethostname)
    peers: tuple[str, ...] = ()
    delegate_protocol: str = "serf"
    """``serf`` (delegate versions 2-5, the default) or ``plain`` (0, plain memberlist apps)."""
    timing: str = "lan"
    """memberlist timing preset: ``lan`` (default), ``local`` (faster, for one machine) or ``wan``."""
    label: str = ""
    """Optional packet label of newer memberlist releases; empty (off) by default."""


@dataclass(frozen=True)
class Config:
    """A validated ``xavi.json``."""

    control: ControlSection
    docker: DockerSection
    images: dict[str, str]
    services: tuple[str, ...]
    """Enabled services on this host, in start order."""
    service: dict[str, ServiceSection]
    cluster: ClusterSection
    raw: dict[str, Any] = field(repr=False, compare=False)


# Each section maps key -> (validator, description). A validator returns the
# converted value or raises ValueError with the reason (without the path).
Validator = Callable[[Any], Any]


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{json.dumps(value)} is not a non-empty string")
    return value


def _size(value: Any) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"{json.dumps(value)} is not a size like 512m or 1g")
    try:
        size = parse_size(str(value))
    except ValueError:
        raise ValueError(f"{json.dumps(value)} is not a size like 512m or 1g") from None
    if size < MIN_MEMORY_BYTES:
        raise ValueError(f"{json.dumps(value)} is below Docker's minimum of 6m")
    return size


def _cpus(value: Any) -> int:
    try:
        cpus = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        raise ValueError(f"{json.dumps(value)} is not a number of CPUs like \"0.5\"") from None
    if not cpus >= MIN_CPU:
        raise ValueError(f"{json.dumps(value)} is not a number of CPUs of at least {MIN_CPU}")
    host_cpus = os.cpu_count() or 1
    # A fleet-wide config may ask for more cores than a small host has; Docker
    # would refuse the container, so the quota is capped at the host's cores.
    return int(min(cpus, host_cpus) * 1e9)


def _port(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(f"{json.dumps(value)} is not a port number from 1 to 65535")
    return value


def _seconds(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{json.dumps(value)} is not a whole number of seconds of at least 1")
    return value


def _url(value: Any) -> str:
    text = _string(value)
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ValueError(f"{json.dumps(value)} is not an https:// URL")
    if parsed.scheme == "http" and parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
        # The bearer token and the config would cross the network in clear.
        raise ValueError(f"{json.dumps(value)} uses plain http to another host: use https://")
    return text.rstrip("/")


def _abs_path(value: Any) -> str:
    text = _string(value)
    if not os.path.isabs(text):
        raise ValueError(f"{json.dumps(value)} is not an absolute path")
    return text


def _ip(value: Any) -> str:
    text = _string(value)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{json.dumps(value)} is not an IP address") from None
    return text


def _advertise_ip(value: Any) -> str:
    text = _ip(value)
    address = ipaddress.ip_address(text)
    if address.is_unspecified:
        raise ValueError(f"{json.dumps(value)} cannot be advertised: give this host's own address")
    if address in ipaddress.ip_network("172.17.0.0/16"):
        raise ValueError(
            f"{json.dumps(value)} is in Docker's default bridge range 172.17.0.0/16, "
            "which other hosts cannot reach: give the host's own address"
        )
    return text


def _node_name(value: Any) -> str:
    text = _string(value)
    if not _NAME_RE.match(text):
        raise ValueError(f"{json.dumps(value)} is not a node name (letters, digits, '.', '_', '-')")
    return text


def _peer(value: Any) -> str:
    text = _string(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{json.dumps(value)} is not HOST:PORT like 192.0.2.10:7946")
    return text


def _label(value: Any) -> str:
    if not isinstance(value, str) or len(value.encode()) > 255:
        raise ValueError(f"{json.dumps(value)} is not a label of at most 255 bytes")
    return value


def _one_of(*choices: str) -> Validator:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{json.dumps(value)} is not one of {', '.join(choices)}")
        return str(value)

    return check


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError("is not an object of NAME: value strings")
    bad = [k for k, v in value.items() if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)
           or not isinstance(v, str)]
    if bad:
        raise ValueError(f"has invalid entries {', '.join(map(repr, bad))} (names like MY_VAR, string values)")
    return tuple(sorted(value.items()))


def _ports(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(p, str) and re.match(r"^\d{1,5}:\d{1,5}(/(tcp|udp))?$", p) for p in value
    ):
        raise ValueError(f"{json.dumps(value)} is not a list of \"HOST:CONTAINER\" port strings")
    return tuple(value)


SCHEMA: dict[str, dict[str, Validator]] = {
    "control": {"url": _url, "interval": _seconds},
    "docker": {
        "registry": _string,
        "username": _string,
        "password": _string,
        "pull_policy": _one_of("missing", "always"),
    },
    "images": {name: _string for name in SERVICES},
    "postgres": {"max_ram": _size, "max_cpu": _cpus, "storage_path": _abs_path, "port": _port},
    "valkey": {"max_ram": _size, "max_cpu": _cpus, "port": _port},
    "app": {"max_ram": _size, "max_cpu": _cpus, "env": _env, "ports": _ports},
    "backupbot": {"max_ram": _size, "max_cpu": _cpus, "env": _env},
    "cluster": {
        "bind_port": _port,
        "bind_addr": _ip,
        "advertise_addr": _advertise_ip,
        "node_name": _node_name,
        "peers": lambda v: v,  # checked item by item below
        "delegate_protocol": _one_of("serf", "plain"),
        "timing": _one_of("lan", "local", "wan"),
        "label": _label,
    },
    "services": lambda v: v,  # checked item by item below
}

DEFAULT_PORTS = {"postgres": 5432, "valkey": 6379}


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"


def validate(raw: Any, source: str = "xavi.json") -> Config:
    """Validate a decoded ``xavi.json`` and return the config; raise ConfigError with all problems."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the top level is not a JSON object"])

    values: dict[str, dict[str, Any]] = {}
    for key, section_value in raw.items():
        if key not in SCHEMA:
            problems.append(f"{key}: unknown key{_suggest(key, list(SCHEMA))}")
            continue
        rules = SCHEMA[key]
        if not isinstance(rules, dict):
            continue
        if not isinstance(section_value, dict):
            problems.append(f"{key}: is not an object")
            continue
        values[key] = {}
        for sub, sub_value in section_value.items():
            if sub not in rules:
                problems.append(f"{key}.{sub}: unknown key{_suggest(sub, list(rules))}")
                continue
            try:
                values[key][sub] = rules[sub](sub_value)
            except ValueError as exc:
                problems.append(f"{key}.{sub}: {exc}")

    services = _validate_services(raw.get("services"), problems)
    peers = _validate_peers(values.get("cluster", {}).get("peers", []), problems)

    images = {**DEFAULT_IMAGES, **values.get("images", {})}
    for name in services:
        if name not in images:
            problems.append(f"images.{name}: missing, and the service {name!r} is enabled")

    if problems:
        raise ConfigError(source, problems)

    section_values = {name: values.get(name, {}) for name in SERVICES}
    return Config(
        control=ControlSection(**values.get("control", {})),
        docker=DockerSection(**values.get("docker", {})),
        images=images,
        services=services,
        service={name: _service_section(name, v) for name, v in section_values.items()},
        cluster=ClusterSection(**{**values.get("cluster", {}), "peers": peers}),
        raw=raw,
    )


def _validate_services(value: Any, problems: list[str]) -> tuple[str, ...]:
    if value is None:
        return SERVICES
    if not isinstance(value, list):
        problems.append(f"services: {json.dumps(value)} is not a list of service names")
        return ()
    chosen = set()
    for index, item in enumerate(value):
        if item not in SERVICES:
            hint = _suggest(str(item), list(SERVICES))
            problems.append(f"services[{index}]: {json.dumps(item)} is not a service{hint}")
        else:
            chosen.add(item)
    return tuple(name for name in SERVICES if name in chosen)


def _validate_peers(value: Any, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list):
        problems.append(f"cluster.peers: {json.dumps(value)} is not a list of HOST:PORT strings")
        return ()
    peers = []
    for index, item in enumerate(value):
        try:
            peers.append(_peer(item))
        except ValueError as exc:
            problems.append(f"cluster.peers[{index}]: {exc}")
    return tuple(peers)


def _service_section(name: str, values: dict[str, Any]) -> ServiceSection:
    return ServiceSection(
        limits=Limits(memory_bytes=values.get("max_ram"), nano_cpus=values.get("max_cpu")),
        port=values.get("port", DEFAULT_PORTS.get(name)),
        storage_path=values.get("storage_path"),
        env=values.get("env", ()),
        ports=values.get("ports", ()),
    )


def parse_config_text(text: str, source: str = "xavi.json") -> Config:
    """Parse and validate the text of a config file (JSON errors name line and column)."""
    if not text.strip():
        raise ConfigError(source, ["the file is empty"])
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        before = text[: exc.pos].rstrip()
        if before.endswith(",") and text[exc.pos: exc.pos + 1] in "}]":
            hint = " (a trailing comma before it?)"
        raise ConfigError(
            source, [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}{hint}"]
        ) from None
    return validate(raw, source)


def load_config(path: Path) -> Config:
    """Read and validate a config file; raise ConfigError when it is missing or invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            str(path), ["the file does not exist: create it, or bootstrap with --auth BUNDLE"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot be read: {exc}"]) from None
    return parse_config_text(text, str(path))
