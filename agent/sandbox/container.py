"""ContainerEntry: one container of the sandbox, its status and its processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from agent.errors import AlreadyExists, NotFound
from agent.sandbox.engine import ContainerRuntime
from agent.sandbox.process import ProcessEntry
from agent.sandbox.status import ContainerStatus, check_move
from oci.spec import Spec


class ContainerEntry:
    """A container: id, bundle, status, processes keyed by exec id (the init is keyed by the
    container id, as in Kata), and the storage mount points it holds references on.

    ``runtime`` is the engine's handle for the container (`agent.sandbox.engine`).
    """

    def __init__(
        self,
        *,
        container_id: str,
        bundle: Path,
        runtime: ContainerRuntime,
        storages: tuple[str, ...] = (),
        spec: Spec | None = None,
    ) -> None:
        self.id = container_id
        self.spec = spec
        self.bundle = bundle
        self.runtime = runtime
        self.storages = storages
        self._status = ContainerStatus.CREATED
        self._paused_from: ContainerStatus | None = None
        self._processes: dict[str, ProcessEntry] = {}
        self.init_pid: int | None = None
        self.lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"ContainerEntry({self.id}, {self._status.value})"

    # -- status ----------------------------------------------------------------------------------

    @property
    def status(self) -> ContainerStatus:
        return self._status

    def move_to(self, status: ContainerStatus) -> None:
        """Change status; an illegal move raises FailedPrecondition naming both statuses."""
        check_move(self.id, self._status, status)
        if status is ContainerStatus.PAUSED:
            self._paused_from = self._status
        self._status = status

    def resume_status(self) -> ContainerStatus:
        """The status a resume returns to (RUNNING, or CREATED if paused before start)."""
        return self._paused_from or ContainerStatus.RUNNING

    def mark_stopped(self) -> None:
        """The init exited: legal from every status but STOPPED itself, where it is a no-op."""
        if self._status is not ContainerStatus.STOPPED:
            self.move_to(ContainerStatus.STOPPED)

    # -- processes -------------------------------------------------------------------------------

    def add_process(self, process: ProcessEntry) -> None:
        """A waited-for process whose output is still held (`agent.sandbox.process`) gives its
        exec id up to a new one: the host reused the id, so its readers are done with the old."""
        old = self._processes.get(process.exec_id)
        if old is not None:
            if not old.waited:
                raise AlreadyExists(
                    f"container {self.id}: exec id {process.exec_id} already exists"
                )
            old.close()
        self._processes[process.exec_id] = process
        process.on_retire(self._forget)
        if process.is_init:
            self.init_pid = process.pid

    def _forget(self, process: ProcessEntry) -> None:
        if self._processes.get(process.exec_id) is process:
            del self._processes[process.exec_id]

    def get_process(self, exec_id: str) -> ProcessEntry:
        """``exec_id == ""`` names the init. Unknown → NotFound. A process already waited for is
        still found while its output is being read."""
        key = exec_id or self.id
        process = self._processes.get(key)
        if process is None:
            what = "init process" if key == self.id else f"process {key}"
            raise NotFound(f"container {self.id}: {what} not found")
        return process

    def has_process(self, exec_id: str) -> bool:
        """A process of that id that was not waited for yet."""
        process = self._processes.get(exec_id or self.id)
        return process is not None and not process.waited

    def processes(self) -> Iterator[ProcessEntry]:
        return iter(list(self._processes.values()))

    @property
    def init(self) -> ProcessEntry | None:
        return self._processes.get(self.id)
