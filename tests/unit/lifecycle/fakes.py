"""Fakes for the lifecycle services: an engine whose "processes" are futures plus the real stdio
fds the service hands over (kept as dups, so a test can write output and exit them)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import Internal
from agent.sandbox.engine import Launched
from agent.sandbox.stdio import ChildStdio
from agent.spawn import Completed
from agent.storage import Storage
from oci.cgroups.stats import CgroupStats, MemoryData, MemoryStats, PidsStats
from oci.spec import LinuxResources, Process, Spec


@dataclass
class FakeProc:
    pid: int
    stdin: int
    stdout: int
    stderr: int
    exit: asyncio.Future[int]
    process: Process | None = None

    def write(self, data: bytes, *, err: bool = False) -> None:
        os.write(self.stderr if err else self.stdout, data)

    def finish(self, status: int) -> None:
        for fd in {self.stdin, self.stdout, self.stderr}:
            os.close(fd)
        if not self.exit.done():
            self.exit.set_result(status)


_next_pid = [40000]


def _launch(stdio: ChildStdio, process: Process | None = None) -> FakeProc:
    _next_pid[0] += 1
    fds = {fd: os.dup(fd) for fd in {stdio.stdin, stdio.stdout, stdio.stderr}}
    return FakeProc(
        pid=_next_pid[0],
        stdin=fds[stdio.stdin],
        stdout=fds[stdio.stdout],
        stderr=fds[stdio.stderr],
        exit=asyncio.get_running_loop().create_future(),
        process=process,
    )


@dataclass
class FakeRuntime:
    container_id: str = "c"
    spec: Spec | None = None
    init: FakeProc | None = None
    started: bool = False
    paused: bool = False
    destroyed: bool = False
    killed_all: list[int] = field(default_factory=list)
    execs: dict[str, FakeProc] = field(default_factory=dict)
    updates: list[LinuxResources] = field(default_factory=list)
    oom_callbacks: list[Callable[[], None]] = field(default_factory=list)
    fail_start: bool = False
    fail_cpuset: bool = False
    cpuset_refreshes: int = 0

    async def start(self) -> None:
        if self.fail_start:
            raise Internal("start failed")
        self.started = True

    async def exec(self, exec_id: str, process: Process, stdio: ChildStdio) -> Launched:
        proc = _launch(stdio, process)
        self.execs[exec_id] = proc
        return Launched(proc.pid, proc.exit)

    async def kill_all(self, signum: int) -> None:
        self.killed_all.append(signum)
        for proc in [self.init, *self.execs.values()]:
            if proc is not None and not proc.exit.done():
                proc.finish(128 + signum)

    async def pause(self) -> None:
        self.paused = True

    async def resume(self) -> None:
        self.paused = False

    async def update(self, resources: LinuxResources) -> None:
        self.updates.append(resources)

    async def refresh_cpuset(self) -> None:
        if self.fail_cpuset:
            raise Internal(f"container {self.container_id}: cpuset: EINVAL")
        self.cpuset_refreshes += 1

    async def stats(self) -> CgroupStats:
        return CgroupStats(
            memory_stats=MemoryStats(usage=MemoryData(usage=1234, limit=5678)),
            pids_stats=PidsStats(current=2),
        )

    def pids(self) -> list[int]:
        return [] if self.init is None else [self.init.pid]

    def watch_oom(self, callback: Callable[[], None]) -> None:
        self.oom_callbacks.append(callback)

    async def destroy(self) -> None:
        self.destroyed = True
        await self.kill_all(9)


@dataclass
class FakeEngine:
    runtimes: dict[str, FakeRuntime] = field(default_factory=dict)
    fail_create: Exception | None = None

    async def create(
        self, *, container_id: str, bundle: Path, spec: Spec, stdio: ChildStdio
    ) -> tuple[FakeRuntime, Launched]:
        if self.fail_create is not None:
            raise self.fail_create
        assert (bundle / "config.json").exists()
        init = _launch(stdio, spec.process)
        runtime = FakeRuntime(container_id=container_id, spec=spec, init=init)
        self.runtimes[container_id] = runtime
        return runtime, Launched(init.pid, init.exit)


@dataclass
class FakeStorage:
    refs: dict[str, list[str]] = field(default_factory=dict)  # mount point -> owners
    fail: bool = False
    released_all: bool = False
    ephemeral_updates: list[Storage] = field(default_factory=list)
    stats: int = 0

    async def add_storages(
        self, storages: Sequence[Storage], container_id: str | None
    ) -> list[str]:
        if self.fail:
            raise Internal("mount failed")
        for s in storages:
            self.refs.setdefault(s.mount_point, []).append(container_id or "")
        return [s.mount_point for s in storages]

    async def release(self, container_id: str | None) -> None:
        owner = container_id or ""
        for mp in list(self.refs):
            self.refs[mp] = [o for o in self.refs[mp] if o != owner]
            if not self.refs[mp]:
                del self.refs[mp]

    async def release_all(self) -> None:
        self.refs.clear()
        self.released_all = True

    async def update_ephemeral_mounts(self, storages: Sequence[Storage]) -> None:
        self.ephemeral_updates.extend(storages)

    async def stat_shared_mounts(self) -> None:
        self.stats += 1


@dataclass
class FakeRunner:
    """Records helper runs; the namespace helper "succeeds" without doing anything."""

    calls: list[list[str]] = field(default_factory=list)
    returncode: int = 0

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109
        env: Mapping[str, str] | None = None,
    ) -> Completed:
        self.calls.append(list(argv))
        return Completed(tuple(argv), self.returncode, b"", b"boom" if self.returncode else b"")
