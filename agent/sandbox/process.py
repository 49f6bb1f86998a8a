"""ProcessEntry: one process of a container (its init or an exec), as the agent tracks it.

Lifetime. The shim reads a process's output with ReadStdout/ReadStderr loops and calls WaitProcess
on the same or another connection, in any order relative to each other and to the exit. So the
entry and its stdio outlive the exit and the wait until the output was delivered:

* WaitProcess returns the status once; a later WaitProcess gets NOT_FOUND (`mark_waited`).
* The entry leaves its container when it was waited for **and** every output returned EOF to a
  reader (`settle`; whichever of the two comes last retires it). Until then reads go on returning
  what is still in the pipes, in order, up to EOF.
* Bounded: if no read comes for ``stdio_grace`` seconds after the exit (the reader went away, or
  never came), the stdio fds are released (later reads get EOF; a waited entry is retired), and
  RemoveContainer releases everything at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.errors import NotFound
from agent.sandbox.stdio import ProcessIO

log = logging.getLogger(__name__)

ESRCH_TEXT = "ESRCH: No such process"
STDIO_GRACE = 60.0  # seconds without a read after the exit before the stdio is released


class ProcessEntry:
    """A process of a container: exec id, pid, stdio and exit status.

    The exit is reported once with `set_exited` (by the reaper's future, wired by the services
    layer); waiters and output readers are told at that moment. See the module docstring for
    when the entry leaves its container.
    """

    def __init__(
        self,
        *,
        container_id: str,
        exec_id: str,
        pid: int,
        io: ProcessIO,
        is_init: bool,
        stdio_grace: float = STDIO_GRACE,
    ) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = pid
        self.io = io
        self.is_init = is_init
        self._status: int | None = None
        self._exited = asyncio.Event()
        self._on_exit: list[Callable[[ProcessEntry], None]] = []
        self._waited = False
        self._on_retire: Callable[[ProcessEntry], None] | None = None
        self._grace = stdio_grace
        self._grace_timer: asyncio.TimerHandle | None = None
        self._reads_seen = 0

    def __repr__(self) -> str:
        return f"ProcessEntry({self.container_id}/{self.exec_id}, pid={self.pid})"

    @property
    def label(self) -> str:
        return f"container {self.container_id} process {self.exec_id}"

    @property
    def exited(self) -> bool:
        return self._status is not None

    @property
    def exit_status(self) -> int | None:
        """Exit code, or 128 + signal number when killed by a signal; None while running."""
        return self._status

    @property
    def waited(self) -> bool:
        """A WaitProcess has returned the exit status."""
        return self._waited

    def add_exit_callback(self, callback: Callable[[ProcessEntry], None]) -> None:
        if self.exited:
            callback(self)
        else:
            self._on_exit.append(callback)

    def on_retire(self, callback: Callable[[ProcessEntry], None]) -> None:
        """``callback(self)`` once the entry is done with (see `settle`): its container drops it."""
        self._on_retire = callback

    def set_exited(self, status: int) -> None:
        """Record the exit (once); wakes waiters, starts the output drain deadline and the
        grace period of the stdio."""
        if self._status is not None:
            return
        self._status = status
        self.io.mark_exited(time.monotonic())
        self._exited.set()
        self._reads_seen = self.io.reads
        self._grace_timer = asyncio.get_running_loop().call_later(self._grace, self._grace_over)
        callbacks, self._on_exit = self._on_exit, []
        for callback in callbacks:
            callback(self)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._status is not None
        return self._status

    def mark_waited(self) -> None:
        """A WaitProcess returned the status: retire now if the output was already delivered."""
        self._waited = True
        self.settle()

    def settle(self) -> None:
        """Retire the entry if it was waited for and every output has returned EOF (call after
        a read returned EOF, and after the wait)."""
        if self._waited and self.io.drained:
            self.close()
            callback, self._on_retire = self._on_retire, None
            if callback is not None:
                callback(self)

    def _grace_over(self) -> None:
        """No read for ``stdio_grace`` seconds since the exit (or the last check): release the
        stdio. A read meanwhile, or one still pending, starts the period again."""
        self._grace_timer = None
        io = self.io
        if io.drained:
            return
        reads = io.reads
        if io.reading or reads != self._reads_seen:
            self._reads_seen = reads
            self._grace_timer = asyncio.get_running_loop().call_later(self._grace, self._grace_over)
            return
        log.warning(
            "output of an exited process released: no reader",
            extra={
                "container_id": self.container_id,
                "exec_id": self.exec_id,
                "grace_s": self._grace,
                "unread_bytes": io.unread(),
            },
        )
        io.close()
        self.settle()

    def live_pid(self) -> int:
        """The pid to signal. After the exit the pid may already belong to someone else, so a
        signal must not be sent: the caller gets the ESRCH text the shim ignores."""
        if self._status is not None:
            raise NotFound(f"{self.label} (pid {self.pid}) has exited: {ESRCH_TEXT}")
        return self.pid

    def close(self) -> None:
        """Release the stdio fds (pending reads return EOF)."""
        timer, self._grace_timer = self._grace_timer, None
        if timer is not None:
            timer.cancel()
        self.io.close()
