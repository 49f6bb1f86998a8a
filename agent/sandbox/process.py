"""ProcessEntry: one process of a container (its init or an exec), as the agent tracks it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from agent.errors import NotFound
from agent.sandbox.stdio import ProcessIO

ESRCH_TEXT = "ESRCH: No such process"


class ProcessEntry:
    """A process of a container: exec id, pid, stdio and exit status.

    The exit is reported once with `set_exited` (by the reaper's future, wired by the services
    layer); waiters and output readers are told at that moment. The entry is removed from its
    container by the first `WaitProcess` that returns.
    """

    def __init__(
        self,
        *,
        container_id: str,
        exec_id: str,
        pid: int,
        io: ProcessIO,
        is_init: bool,
    ) -> None:
        self.container_id = container_id
        self.exec_id = exec_id
        self.pid = pid
        self.io = io
        self.is_init = is_init
        self._status: int | None = None
        self._exited = asyncio.Event()
        self._on_exit: list[Callable[[ProcessEntry], None]] = []

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

    def add_exit_callback(self, callback: Callable[[ProcessEntry], None]) -> None:
        if self.exited:
            callback(self)
        else:
            self._on_exit.append(callback)

    def set_exited(self, status: int) -> None:
        """Record the exit (once); wakes waiters, starts the output drain deadline."""
        if self._status is not None:
            return
        self._status = status
        self.io.mark_exited(time.monotonic())
        self._exited.set()
        callbacks, self._on_exit = self._on_exit, []
        for callback in callbacks:
            callback(self)

    async def wait(self) -> int:
        await self._exited.wait()
        assert self._status is not None
        return self._status

    def live_pid(self) -> int:
        """The pid to signal. After the exit the pid may already belong to someone else, so a
        signal must not be sent: the caller gets the ESRCH text the shim ignores."""
        if self._status is not None:
            raise NotFound(f"{self.label} (pid {self.pid}) has exited: {ESRCH_TEXT}")
        return self.pid

    def close(self) -> None:
        """Release the stdio fds (pending reads return EOF)."""
        self.io.close()
