"""The control socket's path: claim it for one agent, bind it safely, release it.

Theory of operation:

- **Claim.** One agent per socket path. :func:`claim_socket` takes an
  exclusive ``flock`` on ``<socket>.lock`` for the life of the process (the
  kernel releases it when the process dies, even by ``kill -9``). A second
  agent fails to take it and refuses to start. A socket file found at the
  path is probed with ``connect()``. When the connection is refused, a
  killed agent left the file and it is replaced. When it is accepted,
  something is listening and the agent refuses to start.
- **Bind.** The parent folder is created with mode 0700 (0750 with a group)
  when missing; an existing folder is left as it is. The socket is bound at a
  temporary name in that folder with umask 0177, so it exists with mode 0600
  from the start. With a group it then gets that group and mode 0660. It
  then replaces the path by ``rename``, which is atomic, so a client never
  finds the path missing, also when a restarted ControlServer takes over the
  path from its hung predecessor in the same process.
- **Release.** A listener removes the socket file at stop only if the file
  still is the one it bound, so a stopping predecessor never removes its
  successor's socket.
"""

from __future__ import annotations

import fcntl
import os
import secrets as token_source
import socket
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from xavi import log
from xavi.errors import XaviError

DEFAULT_SOCKET = Path("/run/xavi/xavi.sock")
LISTEN_BACKLOG = 64
SUN_PATH_MAX = 107
"""Maximum Unix socket path in bytes on Linux (``sun_path`` is 108 bytes with its NUL)."""

_STATE_LOCK = threading.Lock()
_claims: dict[Path, int] = {}
"""Socket paths this process holds the lock of, with the lock file's descriptor."""
_bound: dict[Path, tuple[int, int]] = {}
"""Socket path -> (st_dev, st_ino) of the socket this process listens on there now."""


class SocketInUse(XaviError):
    """Another agent has locked the control socket, or another program listens on it."""


class SocketSetupError(XaviError):
    """The control socket or its folder cannot be created."""


@dataclass(frozen=True)
class SocketSettings:
    """Path of the control socket and the group that may use it."""

    path: Path = DEFAULT_SOCKET
    group_gid: int | None = None
    """Members of this group may connect too (socket 0660, folder 0750); None: 0600 and 0700."""


def probe(path: Path) -> bool:
    """Return whether something accepts connections on the Unix socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(1.0)
        try:
            client.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except TimeoutError:
            return True  # the backlog is full: someone listens but is busy
        return True


def _ensure_folder(folder: Path, group_gid: int | None) -> None:
    if folder.exists():
        if group_gid is not None and not folder.stat().st_mode & stat.S_IXGRP:
            log.warning("control_socket_folder_closed_to_group", path=folder,
                        action=f"run 'chgrp {group_gid} {folder} && chmod 0750 {folder}'")
        return
    mode = 0o750 if group_gid is not None else 0o700
    try:
        folder.mkdir(parents=True, mode=mode)
        if group_gid is not None:
            os.chown(folder, -1, group_gid)
        os.chmod(folder, mode)
    except OSError as exc:
        raise SocketSetupError(f"cannot create the control socket folder {folder}: "
                               f"{exc.strerror}; create it or choose another --socket") from None
    log.info("control_socket_folder_created", path=folder, mode=f"{mode:04o}")


def claim_socket(settings: SocketSettings) -> None:
    """Take the socket path for this process; raise SocketInUse when another agent has it.

    Idempotent within one process. The lock is kept until the process exits.
    """
    path = settings.path
    # The socket is first bound at a temporary name of 14 bytes in the same folder.
    longest = max(len(os.fsencode(path)), len(os.fsencode(path.parent)) + 1 + 14)
    if longest > SUN_PATH_MAX:
        raise SocketSetupError(f"the control socket path {path} is too long: a Unix socket "
                               f"path may have at most {SUN_PATH_MAX} bytes, and the folder "
                               "must leave room for a 14-byte temporary name. Choose a "
                               "shorter --socket")
    with _STATE_LOCK:
        if path in _claims:
            return
        _ensure_folder(path.parent, settings.group_gid)
        lock_path = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SocketSetupError(f"cannot open the lock file {lock_path}: {exc.strerror}") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SocketInUse(
                f"another Xavi agent (pid {holder}) is running with the control socket {path}; "
                "stop it first, or give this agent another --socket"
            ) from None
        if path.exists() and _bound.get(path) is None and probe(path):
            os.close(fd)
            raise SocketInUse(f"a process is already listening on {path}; stop it or choose "
                              "another --socket")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _claims[path] = fd


def bind_socket(settings: SocketSettings) -> socket.socket:
    """Bind and listen at a temporary name, then rename it over the socket path."""
    path = settings.path
    temporary = path.with_name(f".{token_source.token_hex(4)}.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _STATE_LOCK:
            previous = os.umask(0o177)
            try:
                listener.bind(str(temporary))
            finally:
                os.umask(previous)
            if settings.group_gid is not None:
                os.chown(temporary, -1, settings.group_gid)
                os.chmod(temporary, 0o660)
            listener.listen(LISTEN_BACKLOG)
            _replace_existing(path)
            identity = os.stat(temporary)
            os.rename(temporary, path)
            _bound[path] = (identity.st_dev, identity.st_ino)
    except OSError as exc:
        listener.close()
        temporary.unlink(missing_ok=True)
        raise SocketSetupError(f"cannot create the control socket {path}: {exc.strerror}") \
            from None
    except BaseException:
        listener.close()
        temporary.unlink(missing_ok=True)
        raise
    return listener


def _replace_existing(path: Path) -> None:
    """Check what is at ``path`` before the rename replaces it (caller holds the state lock)."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise SocketSetupError(f"{path} exists and is not a socket; Xavi does not replace it. "
                               "Remove it or choose another --socket")
    if _bound.get(path) == (found.st_dev, found.st_ino):
        log.info("control_socket_taken_over", path=path)
        return
    if probe(path):
        raise SocketInUse(f"a process is already listening on {path}; stop it or choose "
                          "another --socket")
    log.warning("control_socket_stale_replaced", path=path,
                reason="connect() was refused: left by an agent that did not stop cleanly")


def release_socket(path: Path, identity: tuple[int, int]) -> None:
    """Remove the socket file if it still is the one bound by this listener."""
    with _STATE_LOCK:
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return
        if (found.st_dev, found.st_ino) != identity:
            return  # a newer listener took the path over
        path.unlink()
        _bound.pop(path, None)
