"""What the lifecycle needs from the container engine, as Protocols.

The services layer talks to these, never to `oci.engine` directly: `agent.sandbox.oci_runtime`
adapts the real engine, and unit tests pass fakes. Exits are reported as futures of the shell-style
status (exit code, or 128 + signal), resolved by the agent's single reaper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.sandbox.stdio import ChildStdio
from oci.spec import LinuxResources, Process, Spec


@dataclass(frozen=True, slots=True)
class Launched:
    """A process the engine started: its pid and a future of its shell-style exit status."""

    pid: int
    exit: asyncio.Future[int]


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuUsage:
    total: int = 0
    per_cpu: tuple[int, ...] = ()
    kernel: int = 0
    user: int = 0
    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryUsage:
    usage: int = 0
    max_usage: int = 0
    failcnt: int = 0
    limit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BlkioEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStats:
    """Cgroup statistics in the shape of the proto's CgroupStats (no protobuf below rpc/)."""

    cpu: CpuUsage = field(default_factory=CpuUsage)
    memory: MemoryUsage = field(default_factory=MemoryUsage)
    swap: MemoryUsage = field(default_factory=MemoryUsage)
    kernel: MemoryUsage = field(default_factory=MemoryUsage)
    memory_cache: int = 0
    use_hierarchy: bool = False
    memory_stats: dict[str, int] = field(default_factory=dict)
    pids_current: int = 0
    pids_limit: int = 0
    blkio_service_bytes: tuple[BlkioEntry, ...] = ()
    blkio_serviced: tuple[BlkioEntry, ...] = ()
    hugetlb: dict[str, MemoryUsage] = field(default_factory=dict)


class ContainerRuntime(Protocol):
    """One created container, as the engine runs it."""

    async def start(self) -> None:
        """Let the init exec the workload (after CREATED); runs poststart hooks."""

    async def exec(self, exec_id: str, process: Process, stdio: ChildStdio) -> Launched:
        """Start ``process`` in the container's namespaces and cgroup."""

    async def kill_all(self, signum: int) -> None:
        """Signal every process in the container's cgroup (freeze, kill, thaw)."""

    async def pause(self) -> None: ...

    async def resume(self) -> None: ...

    async def update(self, resources: LinuxResources) -> None: ...

    async def stats(self) -> ContainerStats: ...

    def pids(self) -> list[int]: ...

    def watch_oom(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time the container's memory cgroup reports an OOM kill."""

    async def destroy(self) -> None:
        """Kill what is left, run poststop hooks, remove the cgroup and the engine's state."""


class Engine(Protocol):
    async def create(
        self,
        *,
        container_id: str,
        bundle: Path,
        spec: Spec,
        stdio: ChildStdio,
    ) -> tuple[ContainerRuntime, Launched]:
        """Create the container from ``bundle`` (config.json already written from ``spec``):
        the init is set up and blocked until `ContainerRuntime.start`."""
        ...
