"""The control socket's listener: accept connections, check peers, serve requests.

Theory of operation (claiming and binding the path is in
:mod:`xavi.actors.control_path`):

- **Peers.** ``SO_PEERCRED`` gives the peer's uid and gid. Allowed are root,
  the agent's own uid and members of the configured group; anyone else gets
  an error frame and the connection is closed.
- **Threads.** One accept thread waits on the listening socket and a wake-up
  pipe with a selector. Each connection gets a short-lived handler thread,
  at most ``MAX_CONNECTIONS`` at once. :meth:`ControlListener.close` wakes
  and joins them all.
- **Bad input.** A malformed, truncated or oversized frame and a read that
  times out get an error frame; then the connection is closed. Nothing a
  peer sends can stop the accept thread.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xavi import log
from xavi.actors.control_path import SocketSettings, bind_socket, claim_socket, release_socket
from xavi.protocol.control_frames import (
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    FrameError,
    encode_frame,
    error_response,
    read_frame,
)

READ_TIMEOUT = 5.0
"""Seconds a connection may take to send a whole request, and may stay idle between requests."""
MAX_CONNECTIONS = 16
"""Connections served at once; more get an error frame at once."""
JOIN_TIMEOUT = 3.0
"""Seconds :meth:`ControlListener.close` waits for the handler threads together."""
DRAIN_BYTES = 256 * 1024
"""Bytes read and dropped after an error reply, so that closing sends FIN, not RST."""
DRAIN_TIMEOUT = 0.5
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCredentials:
    """The process at the other end of a connection, from ``SO_PEERCRED``."""

    pid: int
    uid: int
    gid: int


RequestHandler = Callable[[dict[str, Any], PeerCredentials], dict[str, Any]]


def peer_credentials(conn: socket.socket) -> PeerCredentials:
    """Return the credentials the kernel recorded for the peer of ``conn``."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def authorization_error(peer: PeerCredentials, group_gid: int | None) -> str | None:
    """Return why ``peer`` may not use the socket, or None when it may."""
    if peer.uid in (0, os.geteuid()):
        return None
    if group_gid is not None:
        if peer.gid == group_gid:
            return None
        try:
            members = grp.getgrgid(group_gid).gr_mem
            name = pwd.getpwuid(peer.uid).pw_name
        except KeyError:
            members, name = [], ""
        if name and name in members:
            return None
    allowed = "root or the agent's user"
    if group_gid is not None:
        allowed += f" or a member of group {group_gid}"
    return f"permission denied: uid {peer.uid} is not {allowed}"


class ControlListener:
    """Accepts connections on the control socket and serves each in a handler thread."""

    def __init__(self, settings: SocketSettings, handler: RequestHandler,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.settings = settings
        self.handler = handler
        self.read_timeout = read_timeout
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handlers: dict[threading.Thread, socket.socket] = {}
        self.counters = {"connections": 0, "requests": 0, "rejected_peers": 0, "bad_frames": 0}

    def open(self) -> None:
        """Claim, bind and start accepting."""
        claim_socket(self.settings)
        self._listener = bind_socket(self.settings)
        self._listener.setblocking(False)
        identity = os.stat(self.settings.path)
        self._identity = (identity.st_dev, identity.st_ino)
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="xavi-control-accept", daemon=True)
        self._accept_thread.start()

    def close(self) -> None:
        """Stop accepting, end every connection, join the threads and remove the socket file."""
        self._stop.set()
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass
        if self._accept_thread is not None and self._accept_thread is not threading.current_thread():
            self._accept_thread.join(timeout=JOIN_TIMEOUT)
        if self._listener is not None:
            self._listener.close()
        if self._identity is not None:
            release_socket(self.settings.path, self._identity)
        with self._lock:
            handlers = dict(self._handlers)
        for conn in handlers.values():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in handlers:
            if thread is not threading.current_thread():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = [t.name for t in handlers if t.is_alive()]
        if left:
            # TODO(control): a handler waiting on a slow ask outlives close, because an ask
            # cannot be interrupted. A restart waits up to a minute, then the daemon thread ends.
            log.warning("control_threads_left", threads=",".join(left))
        self._wake_read.close()
        self._wake_write.close()

    def stats(self) -> dict[str, int]:
        """Return the counters and the number of connections being served."""
        with self._lock:
            return {**self.counters, "active_connections": len(self._handlers)}

    # Threads --------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _events in selector.select():
                    if key.fileobj is self._wake_read or self._stop.is_set():
                        return
                    self._accept_one()

    def _accept_one(self) -> None:
        assert self._listener is not None
        try:
            conn, _address = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.error("control_accept_failed", error=exc.strerror or exc)
            self._stop.wait(0.1)  # EMFILE and the like: do not spin
            return
        conn.setblocking(True)
        conn.settimeout(self.read_timeout)
        thread: threading.Thread | None = None
        with self._lock:
            self.counters["connections"] += 1
            if len(self._handlers) < MAX_CONNECTIONS:
                thread = threading.Thread(target=self._serve, args=(conn,),
                                          name="xavi-control-conn", daemon=True)
                self._handlers[thread] = conn
        if thread is None:
            # NOTE: the reply is sent from the accept thread; a fresh socket's send buffer
            # takes the small frame without blocking.
            log.warning("control_connection_rejected", reason="too many connections",
                        limit=MAX_CONNECTIONS)
            self._reply_and_close(conn, error_response(
                f"busy: {MAX_CONNECTIONS} connections are being served; try again", "busy"),
                drain=False)
            return
        thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            peer = peer_credentials(conn)
            refusal = authorization_error(peer, self.settings.group_gid)
            if refusal is not None:
                self._count("rejected_peers")
                log.warning("control_peer_rejected", uid=peer.uid, gid=peer.gid, pid=peer.pid)
                self._reply_and_close(conn, error_response(refusal, "permission_denied"))
                return
            self._serve_requests(conn, peer)
        except Exception as exc:  # noqa: BLE001 - a connection must never take the agent down
            log.error("control_connection_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
            with self._lock:
                self._handlers.pop(threading.current_thread(), None)

    def _serve_requests(self, conn: socket.socket, peer: PeerCredentials) -> None:
        while not self._stop.is_set():
            try:
                request = read_frame(conn, MAX_REQUEST_BYTES)
            except FrameError as exc:
                self._count("bad_frames")
                log.warning("control_bad_frame", uid=peer.uid, pid=peer.pid, error=exc)
                self._reply_and_close(conn, error_response(f"bad request frame: {exc}",
                                                           "bad_frame"))
                return
            except TimeoutError:
                self._reply_and_close(conn, error_response(
                    f"no complete request within {self.read_timeout:g} s; closing", "timeout"))
                return
            except OSError:
                return
            if request is None:
                return
            self._count("requests")
            response = self.handler(request, peer)
            try:
                conn.sendall(encode_frame(response, MAX_RESPONSE_BYTES))
            except FrameError as exc:
                log.error("control_response_too_large", cmd=str(request.get("cmd")), error=exc)
                conn.sendall(encode_frame(error_response(f"the response cannot be sent: {exc}",
                                                         "internal"), MAX_RESPONSE_BYTES))

    def _reply_and_close(self, conn: socket.socket, response: dict[str, Any],
                         drain: bool = True) -> None:
        """Send a last frame, then read and drop what the peer still sends, so it gets the frame."""
        try:
            conn.sendall(encode_frame(response, MAX_RESPONSE_BYTES))
            conn.shutdown(socket.SHUT_WR)
            if not drain:
                return
            conn.settimeout(DRAIN_TIMEOUT)
            drained = 0
            while drained < DRAIN_BYTES:
                chunk = conn.recv(16 * 1024)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError as exc:
            if exc.errno not in (None, errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                log.debug("control_reply_failed", error=exc.strerror or exc)
        finally:
            conn.close()

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1
