"""What the lifecycle needs from the container engine, as Protocols.

The services layer talks to these, never to `oci.engine` directly: `agent.sandbox.oci_runtime`
adapts the real engine, and unit tests pass fakes. Exits are reported as futures of the shell-style
status (exit code, or 128 + signal), resolved by the agent's single reaper.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.sandbox.stdio import ChildStdio
from oci.cgroups.stats import CgroupStats
from oci.spec import LinuxResources, Process, Spec


@dataclass(frozen=True, slots=True)
class Launched:
    """A process the engine started: its pid and a future of its shell-style exit status."""

    pid: int
    exit: asyncio.Future[int]


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

    async def refresh_cpuset(self) -> None:
        """Give the container's cgroup the CPUs that came online (OnlineCPUMem), keeping its
        own cpuset if the spec or an update set one."""

    async def stats(self) -> CgroupStats: ...

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
