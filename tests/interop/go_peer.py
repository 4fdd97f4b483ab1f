"""Driver of the Go memberlist test peer (tests/interop/peer) for pytest.

``GoPeer`` starts the binary, writes JSON commands to its stdin and drains
its stdout and stderr from threads: a full pipe would block memberlist's
callbacks and hang the whole peer. Replies are matched to commands by id,
events and log lines are kept in order so a test can wait for them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-go-peer.sh"
DEFAULT_TIMEOUT = 10.0


def build_go_peer() -> Path:
    """Build the peer (cached by source hash) and return the binary's path."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-go-peer.sh failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


class GoPeerError(Exception):
    """The Go peer replied with ok=false, died, or did not reply in time."""


class GoPeer:
    """One running Go peer process: a memberlist node or the codec helper."""

    def __init__(self, binary: Path, *, mode: str = "node", **flags: Any) -> None:
        args = [str(binary), f"-mode={mode}"]
        for name, value in flags.items():
            flag = name.replace("_", "-")
            if isinstance(value, bool):
                args.append(f"-{flag}={'true' if value else 'false'}")
            else:
                args.append(f"-{flag}={value}")

        self.process = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

        self._lock = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.logs: list[str] = []
        self._next_id = 1
        self._threads = [
            threading.Thread(target=self._drain_stdout, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

        self.name = flags.get("name", "go-peer")
        self.port = 0
        if mode == "node":
            ready = self.wait_event(lambda e: e.get("event") == "ready")
            self.port = int(ready["port"])

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) where the peer listens for UDP and TCP."""
        return ("127.0.0.1", self.port)

    def _drain_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                item = {"event": "invalid-output", "line": line}
            with self._lock:
                if "id" in item:
                    self._replies[item["id"]] = item
                else:
                    self.events.append(item)
                self._lock.notify_all()
        with self._lock:
            self._lock.notify_all()

    def _drain_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.logs.append(line.rstrip("\n"))
                self._lock.notify_all()

    def _wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = check()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise GoPeerError(
                        f"timed out after {timeout} s waiting for {what}; logs:\n"
                        + "\n".join(self.logs[-30:])
                    )
                if self.process.poll() is not None and not self._threads[0].is_alive():
                    raise GoPeerError(
                        f"peer exited with {self.process.returncode} while "
                        f"waiting for {what}; logs:\n" + "\n".join(self.logs[-30:])
                    )
                self._lock.wait(min(remaining, 0.2))

    def request(self, cmd: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply; raise ``GoPeerError`` unless ok."""
        reply = self.request_raw(cmd, timeout=timeout, **fields)
        if not reply.get("ok"):
            raise GoPeerError(f"{cmd} failed: {reply.get('error')}")
        return reply

    def request_raw(self, cmd: str, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict:
        """Send a command and return its reply, ok or not."""
        with self._lock:
            command_id = self._next_id
            self._next_id += 1
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"id": command_id, "cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        return self._wait(lambda: self._replies.pop(command_id, None), timeout, f"reply to {cmd}")

    def wait_event(
        self,
        predicate: Callable[[dict], bool],
        timeout: float = DEFAULT_TIMEOUT,
        what: str = "event",
    ) -> dict[str, Any]:
        """Return the first event (old or new) that matches ``predicate``."""
        return self._wait(
            lambda: next((e for e in self.events if predicate(e)), None), timeout, what
        )

    def wait_log(self, text: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Return the first stderr line that contains ``text``."""
        return self._wait(
            lambda: next((line for line in self.logs if text in line), None),
            timeout,
            f"log line containing {text!r}",
        )

    def close(self) -> None:
        """Shut the peer down, killing it if it does not exit within 5 s."""
        try:
            assert self.process.stdin is not None
            self.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


def b64(key: bytes) -> str:
    """Return ``key`` as standard base64, the form the peer's -keys flag takes."""
    return base64.b64encode(key).decode()
