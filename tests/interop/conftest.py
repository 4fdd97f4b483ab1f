"""Fixtures for interop tests against the Go memberlist test peer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest
from go_peer import GoPeer, build_go_peer
from py_node import PyNode
from xavi_node import XaviNode


@pytest.fixture(scope="session")
def go_peer_binary() -> Path:
    """The Go peer binary, built once per session (cached across sessions)."""
    try:
        return build_go_peer()
    except (RuntimeError, OSError) as exc:
        pytest.fail(
            "the Go memberlist peer could not be built; install golang-go and "
            f"golang-github-hashicorp-memberlist-dev, then run scripts/build-go-peer.sh: {exc}"
        )


@pytest.fixture
def start_go(go_peer_binary: Path) -> Iterator[Callable[..., GoPeer]]:
    """Factory that starts Go peers and shuts them all down after the test."""
    peers: list[GoPeer] = []

    def start(**flags: Any) -> GoPeer:
        flags.setdefault("preset", "fast")
        peer = GoPeer(go_peer_binary, **flags)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.close()


@pytest.fixture
def start_py() -> Iterator[Callable[..., PyNode]]:
    """Factory that starts Python endpoints and closes them after the test."""
    nodes: list[PyNode] = []

    def start(name: str, **options: Any) -> PyNode:
        node = PyNode(name, **options)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.close()


@pytest.fixture
def start_xavi(tmp_path: Path) -> Iterator[Callable[..., XaviNode]]:
    """Factory of in-process gossip-only agents sharing the first one's secrets; stops them all."""
    nodes: list[XaviNode] = []

    def start(name: str, **options: Any) -> XaviNode:
        if nodes and "secrets_from" not in options:
            options["secrets_from"] = nodes[0].secrets_path
        node = XaviNode(tmp_path, name, **options)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()
    pykka.ActorRegistry.stop_all()
