"""Sandbox: the registry of the pod's containers and its sandbox-wide state.

One per agent. No syscalls here; the services layer performs effects and records results through
these methods, which guard the invariants (unique ids, lifecycle of the sandbox itself).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from agent.sandbox.container import ContainerEntry
from agent.sandbox.oom import OomEvents
from agent.sandbox.process import ProcessEntry

_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")
MAX_ID_LENGTH = 255  # the id is one path component (<run_dir>/<id>) and a cgroup name


def validate_container_id(container_id: str) -> None:
    """Kata's rule: ``^[alnum][alnum_.-]+$`` (so also at least two characters), and at most
    NAME_MAX characters."""
    if not container_id:
        raise InvalidArgument("container_id: container id is empty")
    shown = container_id if len(container_id) <= 80 else container_id[:80] + "..."
    if len(container_id) > MAX_ID_LENGTH:
        raise InvalidArgument(
            f"container_id: invalid container id {shown!r}: longer than {MAX_ID_LENGTH} characters"
        )
    if not _CONTAINER_ID.match(container_id):
        raise InvalidArgument(
            f"container_id: invalid container id {shown!r}: must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$"
        )


def validate_exec_id(exec_id: str) -> None:
    if not exec_id:
        raise InvalidArgument("exec_id: exec id is empty")
    if len(exec_id) > MAX_ID_LENGTH or "/" in exec_id or "\0" in exec_id:
        shown = exec_id if len(exec_id) <= 80 else exec_id[:80] + "..."
        raise InvalidArgument(f"exec_id: invalid exec id {shown!r}")


class SandboxState(enum.StrEnum):
    EMPTY = "empty"  # before CreateSandbox
    READY = "ready"
    DESTROYED = "destroyed"


@dataclass(frozen=True, slots=True)
class GuestHooks:
    """Executables found under CreateSandbox's ``guest_hook_path``."""

    prestart: tuple[str, ...] = ()
    poststart: tuple[str, ...] = ()
    poststop: tuple[str, ...] = ()


class Sandbox:
    def __init__(self) -> None:
        self._state = SandboxState.EMPTY
        self.id = ""
        self.hostname = ""
        self.hooks = GuestHooks()
        self.storages: tuple[str, ...] = ()
        self.ipc_ns: Path | None = None
        self.uts_ns: Path | None = None
        self.pid_ns_owner: str | None = None  # container whose init's pid namespace is shared
        self.oom = OomEvents()
        self._containers: dict[str, ContainerEntry] = {}
        self._reserved: set[str] = set()

    # -- the sandbox itself ----------------------------------------------------------------------

    @property
    def state(self) -> SandboxState:
        return self._state

    def begin_create(self) -> None:
        if self._state is SandboxState.READY:
            raise AlreadyExists(f"sandbox {self.id or '(unnamed)'} already exists")
        if self._state is SandboxState.DESTROYED:
            raise FailedPrecondition("sandbox was destroyed; the agent is shutting down")

    def mark_ready(self, sandbox_id: str, hostname: str) -> None:
        self.begin_create()
        self.id = sandbox_id
        self.hostname = hostname
        self._state = SandboxState.READY

    def require_ready(self) -> None:
        if self._state is SandboxState.EMPTY:
            raise FailedPrecondition("no sandbox: CreateSandbox must be called first")
        if self._state is SandboxState.DESTROYED:
            raise FailedPrecondition("sandbox was destroyed; the agent is shutting down")

    def mark_destroyed(self) -> None:
        self._state = SandboxState.DESTROYED
        self.oom.close()

    # -- containers ------------------------------------------------------------------------------

    def reserve(self, container_id: str) -> None:
        """Claim an id for a CreateContainer in progress; a second create of it fails."""
        validate_container_id(container_id)
        self.require_ready()
        if container_id in self._containers or container_id in self._reserved:
            raise AlreadyExists(f"container {container_id} already exists")
        self._reserved.add(container_id)

    def release(self, container_id: str) -> None:
        """Give up a reservation (the create failed)."""
        self._reserved.discard(container_id)

    def add_container(self, entry: ContainerEntry) -> None:
        """Complete a reservation."""
        if entry.id in self._containers:
            raise AlreadyExists(f"container {entry.id} already exists")
        self._reserved.discard(entry.id)
        self._containers[entry.id] = entry

    def get_container(self, container_id: str) -> ContainerEntry:
        entry = self._containers.get(container_id)
        if entry is None:
            if not container_id:
                raise InvalidArgument("container id is empty")
            raise NotFound(f"container {container_id} not found (invalid container id)")
        return entry

    def remove_container(self, container_id: str) -> None:
        self._containers.pop(container_id, None)
        if self.pid_ns_owner == container_id:
            self.pid_ns_owner = None

    def containers(self) -> Iterator[ContainerEntry]:
        return iter(list(self._containers.values()))

    def __len__(self) -> int:
        return len(self._containers)

    def get_process(self, container_id: str, exec_id: str) -> ProcessEntry:
        return self.get_container(container_id).get_process(exec_id)
