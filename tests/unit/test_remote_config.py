"""Control URL polling against a local HTTP server: apply, skip unchanged, back off on failure."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pykka
import pytest

from xavi.actors.messages import ConfigChanged, GetStatus, SecretsLoaded
from xavi.actors.remote_config import RemoteConfigActor
from xavi.config import validate
from xavi.secrets import Secrets, generate_cluster_key

TOKEN = "token-for-tests-0123456789"


class ControlServer:
    """A control-plane stand-in on 127.0.0.1 that records each request."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = {"images": {"app": "example/app:2"},
                                              "services": ["app"]}
        self.raw_body: bytes | None = None
        self.delay = 0.0
        self.status_code = 200
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body,
                                           "headers": dict(self.headers)})
                time.sleep(owner.delay)
                if owner.status_code != 200:
                    self.send_response(owner.status_code)
                    self.end_headers()
                    return
                content = owner.raw_body or json.dumps(owner.config).encode()
                etag = f'"{hash(content) & 0xffffffff:x}"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                try:
                    self.wfile.write(content)
                except BrokenPipeError:
                    pass  # the agent gave up waiting, as the slow-server test wants

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ControlServer]:
    control = ControlServer()
    yield control
    control.close()


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def start_actor(config_dir: Path, url: str) -> pykka.ActorRef[Any]:
    local = {"control": {"url": url, "interval": 1}, "images": {"app": "example/app:1"},
             "services": ["app"], "cluster": {"node_name": "edge-7"}}
    (config_dir / "xavi.json").write_text(json.dumps(local))
    ref = RemoteConfigActor.start(None, config_dir)
    ref.tell(SecretsLoaded(Secrets("p" * 10, "v" * 10, generate_cluster_key(),
                                   control_token=TOKEN)))
    ref.tell(ConfigChanged(validate(local), 1))
    return ref


@pytest.fixture
def actor_factory(tmp_path: Path) -> Iterator[Any]:
    yield lambda url: start_actor(tmp_path, url)
    pykka.ActorRegistry.stop_all()


def test_new_config_is_written_for_the_watcher(
        server: ControlServer, actor_factory: Any, tmp_path: Path) -> None:
    actor_factory(server.url)
    wait_for(lambda: json.loads((tmp_path / "xavi.json").read_text()) == server.config)
    assert (tmp_path / "xavi.json").stat().st_mode & 0o777 == 0o600
    first = server.requests[0]
    assert first["path"] == "/v1/nodes/edge-7/sync"
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert first["body"]["node"] == "edge-7"


def test_unchanged_config_costs_one_conditional_request(
        server: ControlServer, actor_factory: Any, tmp_path: Path) -> None:
    actor_factory(server.url)
    wait_for(lambda: server.count() >= 3, timeout=5)
    with server.lock:
        later = server.requests[1:3]
    assert all("If-None-Match" in r["headers"] for r in later)
    mtime = (tmp_path / "xavi.json").stat().st_mtime_ns
    wait_for(lambda: server.count() >= 4, timeout=5)
    assert (tmp_path / "xavi.json").stat().st_mtime_ns == mtime


def test_invalid_config_is_not_applied_and_backs_off(
        server: ControlServer, actor_factory: Any, tmp_path: Path) -> None:
    server.raw_body = b'{"services": ["nope"]}'
    ref = actor_factory(server.url)
    wait_for(lambda: server.count() >= 1)
    wait_for(lambda: ref.ask(GetStatus(), timeout=5)["failures"] >= 1)
    status = ref.ask(GetStatus(), timeout=5)
    assert "is not a service" in status["last_error"]
    time.sleep(1.5)  # a poll without backoff would come after 1 s; with backoff after 2 s
    assert server.count() == 1
    assert json.loads((tmp_path / "xavi.json").read_text())["images"]["app"] == "example/app:1"


def test_server_down_backs_off_and_writes_nothing(
        server: ControlServer, actor_factory: Any, tmp_path: Path) -> None:
    url = server.url
    server.close()
    ref = actor_factory(url)
    wait_for(lambda: ref.ask(GetStatus(), timeout=5)["failures"] >= 1)
    assert "request failed" in ref.ask(GetStatus(), timeout=5)["last_error"]
    assert json.loads((tmp_path / "xavi.json").read_text())["images"]["app"] == "example/app:1"


def test_slow_server_times_out_and_writes_nothing(
        server: ControlServer, actor_factory: Any, tmp_path: Path) -> None:
    server.delay = 2.5
    ref = actor_factory(server.url)
    wait_for(lambda: ref.ask(GetStatus(), timeout=5)["failures"] >= 1, timeout=10)
    assert json.loads((tmp_path / "xavi.json").read_text())["images"]["app"] == "example/app:1"
    server.delay = 0.0


def test_server_error_backs_off(server: ControlServer, actor_factory: Any) -> None:
    server.status_code = 503
    ref = actor_factory(server.url)
    wait_for(lambda: ref.ask(GetStatus(), timeout=5)["failures"] >= 1)
    assert "HTTP 503" in ref.ask(GetStatus(), timeout=5)["last_error"]
    assert TOKEN not in ref.ask(GetStatus(), timeout=5)["last_error"]
