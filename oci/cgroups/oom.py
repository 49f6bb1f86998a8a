"""OOM notification without blocking an event loop: each watcher exposes a file descriptor that
becomes readable when something happened, and a non-blocking `read()` that says how many OOM
events that was.

asyncio use::

    watcher = manager.oom_watcher()
    loop.add_reader(watcher.fileno(), on_ready)   # on_ready calls watcher.read()
    ...
    loop.remove_reader(watcher.fileno()); watcher.close()

* cgroup v1: an eventfd registered with `cgroup.event_control` on `memory.oom_control`. The
  kernel signals it on every OOM in the cgroup and once more when the cgroup is removed;
  `read()` reports the count of OOM signals and sets `gone` when the cgroup has disappeared.
* cgroup v2: `memory.events` is a kernfs file whose changes raise EPOLLPRI. The watcher owns an
  epoll set holding that file (stdlib `select.epoll`; no inotify binding needed) and exposes the
  epoll fd, which is readable while the file has an unread change. `read()` re-reads the file
  and reports the increase of its `oom_kill` counter.
"""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path
from typing import Protocol

from .errors import from_oserror
from .fs import parse_flat_keyed, write


class OomWatcher(Protocol):
    gone: bool
    """True once the cgroup has been removed (no further events will come)."""

    def fileno(self) -> int: ...

    def read(self) -> int:
        """OOM events since the last read (0 if none); never blocks."""
        ...

    def close(self) -> None: ...


class V1OomWatcher:
    def __init__(self, memory_dir: Path) -> None:
        self._dir = memory_dir
        self.gone = False
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ctl = memory_dir / "memory.oom_control"
            try:
                self._cfd = os.open(ctl, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise from_oserror(f"open {ctl}", e) from None
            try:
                write(memory_dir / "cgroup.event_control", f"{self._efd} {self._cfd}")
            except BaseException:
                os.close(self._cfd)
                raise
        except BaseException:
            os.close(self._efd)
            raise

    def fileno(self) -> int:
        return self._efd

    def read(self) -> int:
        if self._efd < 0:
            return 0
        try:
            count = os.eventfd_read(self._efd)
        except BlockingIOError:
            count = 0
        if not (self._dir / "memory.oom_control").exists():
            # the kernel signals the eventfd once more when the cgroup is removed
            self.gone = True
            return max(0, count - 1)
        return count

    def close(self) -> None:
        if self._efd >= 0:
            os.close(self._cfd)
            os.close(self._efd)
            self._efd = self._cfd = -1


class FileChangeWatcher:
    """An epoll set holding one kernfs file (cgroup v2 `*.events`), readable on change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise from_oserror(f"open {path}", e) from None
        try:
            self._ep = select.epoll()
            self._ep.register(self._fd, select.EPOLLPRI)
        except OSError as e:
            os.close(self._fd)
            raise from_oserror(f"epoll on {path}", e) from None

    def fileno(self) -> int:
        return self._ep.fileno()

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a change; True if one arrived."""
        return bool(self._ep.poll(timeout))

    def read_text(self) -> str | None:
        """The file's current content (clears the pending change); None if it is gone."""
        try:
            return os.pread(self._fd, 65536, 0).decode("ascii", "replace")
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise from_oserror(f"read {self.path}", e) from None

    def close(self) -> None:
        if self._fd >= 0:
            self._ep.close()
            os.close(self._fd)
            self._fd = -1


class V2OomWatcher:
    def __init__(self, cgroup_dir: Path) -> None:
        self._dir = cgroup_dir
        self.gone = False
        self._w = FileChangeWatcher(cgroup_dir / "memory.events")
        text = self._w.read_text() or ""
        self._last = parse_flat_keyed(text).get("oom_kill", 0)

    def fileno(self) -> int:
        return self._w.fileno()

    def read(self) -> int:
        text = self._w.read_text()
        if text is None or not self._dir.exists():
            self.gone = True
            return 0
        now = parse_flat_keyed(text).get("oom_kill", 0)
        delta, self._last = max(0, now - self._last), now
        return delta

    def close(self) -> None:
        self._w.close()
