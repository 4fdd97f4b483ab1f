"""Watch the config directory with inotify and call back once per finished change.

The directory is watched, not the file, because editors that save by rename
(vim), tools that swap a symlink (``ln -s new tmp && mv -T tmp xavi.json``,
Kubernetes' ``..data`` swap) and ``mv`` of a new file all replace the file's
inode, and a watch on the old inode would go silent.

A change counts as finished when a file in the directory is closed after
writing (``IN_CLOSE_WRITE``), moved in or out (``IN_MOVED_TO``,
``IN_MOVED_FROM``), deleted, or created as a symlink. Plain ``IN_MODIFY`` events only mark the directory as "being
written": a writer that pauses halfway through keeps the file open, so no
half-written file is read. A writer that never closes (rare: mmap) is read
``STALE_WRITE_AFTER`` seconds after its last modification. After a finished
change the watcher waits ``DEBOUNCE`` seconds of quiet, so a burst of events
(a rename save writes a backup, the new file, then renames) gives one call.
The callback decides whether the content changed; the watcher does not read it.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

from inotify_simple import INotify, flags

from xavi import log

DEBOUNCE = 0.05
"""Seconds of quiet after a finished change before the callback runs."""
STALE_WRITE_AFTER = 2.0
"""Seconds after the last modification at which an unclosed write is read anyway."""

_FINISHED = flags.CLOSE_WRITE | flags.MOVED_TO | flags.DELETE | flags.MOVED_FROM
_WATCH_MASK = _FINISHED | flags.CREATE | flags.MODIFY | flags.ATTRIB | flags.DELETE_SELF | flags.MOVE_SELF


class DirectoryWatcher:
    """Calls ``on_change(reason)`` from its own thread when watched names change."""

    def __init__(self, directory: Path, names: Callable[[str], bool],
                 on_change: Callable[[str], None]) -> None:
        self.directory = directory
        self.names = names
        """Decides whether a file name in the directory is of interest."""
        self.on_change = on_change
        self._inotify = INotify()
        self._wake_read, self._wake_write = os.pipe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xavi-config-watcher", daemon=True)

    def start(self) -> None:
        """Start watching; raise OSError when the directory cannot be watched."""
        self._inotify.add_watch(str(self.directory), _WATCH_MASK)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and release the inotify descriptor."""
        self._stop.set()
        os.write(self._wake_write, b"x")
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._inotify.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _run(self) -> None:
        finished_at: float | None = None
        modified_at: float | None = None
        reasons: set[str] = set()
        while not self._stop.is_set():
            timeout = self._timeout(finished_at, modified_at)
            ready, _, _ = select.select([self._inotify.fileno(), self._wake_read], [], [], timeout)
            now = time.monotonic()
            if self._inotify.fileno() in ready:
                for event in self._inotify.read(timeout=0):
                    if event.mask & (flags.DELETE_SELF | flags.MOVE_SELF):
                        log.error("config_directory_gone", path=self.directory,
                                  action="restart the agent once the directory exists again")
                        continue
                    if not self.names(event.name):
                        continue
                    if event.mask & flags.CREATE and not (self.directory / event.name).is_symlink():
                        # A new regular file is being written; its close finishes it.
                        modified_at = now
                        reasons.add(event.name)
                    elif event.mask & (_FINISHED | flags.CREATE):
                        finished_at = now
                        modified_at = None
                        reasons.add(event.name)
                    elif event.mask & (flags.MODIFY | flags.ATTRIB):
                        modified_at = now
                continue
            if self._stop.is_set():
                return
            due_finished = finished_at is not None and now - finished_at >= DEBOUNCE
            due_stale = modified_at is not None and now - modified_at >= STALE_WRITE_AFTER
            if (due_finished and modified_at is None) or due_stale:
                reason = "file changed: " + ",".join(sorted(reasons)) if reasons else \
                    "file modified without close"
                finished_at = modified_at = None
                reasons.clear()
                try:
                    self.on_change(reason)
                except Exception as exc:  # noqa: BLE001 - the watcher must survive a callback error
                    log.error("config_watch_callback_failed", error=exc)

    @staticmethod
    def _timeout(finished_at: float | None, modified_at: float | None) -> float | None:
        now = time.monotonic()
        deadlines = []
        if finished_at is not None:
            deadlines.append(finished_at + DEBOUNCE)
        if modified_at is not None:
            deadlines.append(modified_at + STALE_WRITE_AFTER)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)
