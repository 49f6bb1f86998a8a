"""Container use cases: create, start, remove, update, stats, pause, resume.

CreateContainer (reference doc §4.1), each step undone in reverse if a later one fails:

1. reserve the id (validated, unique, sandbox ready);
2. mount and reference the storages (``agent.storage``), keyed by mount point;
3. rewrite the spec (`agent.sandbox.specs`): sandbox ipc/uts namespaces, shared pid namespace,
   guest hooks, cgroups path, ``root.path`` → the bundle's rootfs;
4. the bundle ``<run_dir>/<cid>/{config.json,rootfs}`` (`agent.sandbox.bundle`);
5. stdio (pipes or a pty) and the engine's create: the init waits for StartContainer;
6. record the container; the first container's pid namespace becomes the sandbox's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent.devices.model import Device
from agent.errors import (
    AgentError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
)
from agent.sandbox import ContainerEntry, ContainerStatus, ProcessEntry, ProcessIO, Sandbox
from agent.sandbox.bundle import Bundles
from agent.sandbox.engine import ContainerRuntime, Engine, Launched
from agent.sandbox.netdev import InterfaceStats, read_net_dev
from agent.sandbox.process import STDIO_GRACE
from agent.sandbox.specs import prepare_spec
from agent.storage import Storage
from oci.cgroups.stats import CgroupStats
from oci.spec import LinuxResources, Process, Spec, SpecError, check, check_resources

log = logging.getLogger(__name__)
T = TypeVar("T")


class StorageRefs(Protocol):
    """The part of `agent.storage.StorageManager` the lifecycle uses."""

    async def add_storages(
        self, storages: Sequence[Storage], container_id: str | None
    ) -> list[str]: ...

    async def release(self, container_id: str | None) -> None: ...


class DeviceRefs(Protocol):
    """The part of `agent.devices.handlers.DeviceManager` the lifecycle uses."""

    async def apply(self, devices: Sequence[Device], spec: Spec, container_id: str) -> Spec: ...

    def rewrite_env(self, env: Sequence[str], container_id: str) -> tuple[str, ...]: ...

    def release(self, container_id: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleSettings:
    """The slice of `AgentConfig` the lifecycle needs (built once in agent.app)."""

    run_dir: Path
    sandbox_ns_dir: Path
    pipe_size: int = 0
    guest_resolv_conf: Path | None = Path("/etc/resolv.conf")
    kill_timeout: float = 10.0
    stdio_grace: float = STDIO_GRACE  # agent.sandbox.process


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateContainer:
    container_id: str
    spec: Spec | None
    storages: tuple[Storage, ...] = ()
    sandbox_pidns: bool = False
    devices: tuple[Device, ...] = ()


class ContainerService:
    def __init__(
        self,
        *,
        sandbox: Sandbox,
        engine: Engine,
        storage: StorageRefs,
        bundles: Bundles,
        settings: LifecycleSettings,
        devices: DeviceRefs | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._engine = engine
        self._storage = storage
        self._devices = devices
        self._bundles = bundles
        self._settings = settings
        self._background = Background()
        self._timings: dict[str, float] = {}  # engine create time, for the "created" log

    # -- create / start --------------------------------------------------------------------------

    async def create(self, args: CreateContainer) -> None:
        await asyncio.shield(self._background.run(self._create_registered(args)))

    async def _create_registered(self, args: CreateContainer) -> None:
        cid = args.container_id
        sandbox = self._sandbox
        sandbox.reserve(cid)
        try:
            async with contextlib.AsyncExitStack() as undo:
                entry = await self._create(args, undo)
                sandbox.add_container(entry)
                undo.pop_all()
        finally:
            sandbox.release(cid)
        log.info(
            "container created",
            extra={"container_id": cid, "engine_ms": round(self._timings.pop(cid, 0.0), 2)},
        )

    async def _create(
        self, args: CreateContainer, undo: contextlib.AsyncExitStack
    ) -> ContainerEntry:
        cid = args.container_id
        sandbox = self._sandbox
        if args.spec is None:
            raise InvalidArgument(f"container {cid}: the request has no OCI spec")
        spec = args.spec
        check_spec(cid, spec)
        if args.devices:
            if self._devices is None:
                raise InvalidArgument(f"container {cid}: this agent has no device handlers")
            devices = self._devices
            undo.callback(devices.release, cid)
            spec = await devices.apply(args.devices, spec, cid)
        pid_ns: str | None = None
        if args.sandbox_pidns and sandbox.pid_ns_owner is not None:
            owner = sandbox.get_container(sandbox.pid_ns_owner)
            if owner.init_pid is None or owner.status is ContainerStatus.STOPPED:
                raise FailedPrecondition(
                    f"container {cid}: the sandbox pid namespace (container {owner.id}) is gone"
                )
            pid_ns = f"/proc/{owner.init_pid}/ns/pid"
        bundle_dir = self._bundles.path(cid)
        prepared = prepare_spec(
            spec,
            container_id=cid,
            rootfs=bundle_dir / "rootfs",
            ipc_ns=sandbox.ipc_ns,
            uts_ns=sandbox.uts_ns,
            pid_ns=pid_ns,
            hooks=sandbox.hooks,
        )
        mount_points: list[str] = []
        if args.storages:
            mount_points = await self._storage.add_storages(args.storages, cid)
            undo.push_async_callback(self._storage.release, cid)
        assert spec.root is not None
        await asyncio.to_thread(self._bundles.create, cid, spec.root.path, prepared)
        undo.push_async_callback(asyncio.to_thread, self._bundles.remove, cid)

        assert prepared.process is not None
        io = (
            ProcessIO.pty(name=f"container {cid}", size=console_size(prepared.process))
            if prepared.process.terminal
            else ProcessIO.pipes(name=f"container {cid}", pipe_size=self._settings.pipe_size)
        )
        undo.callback(io.close)
        started = time.monotonic()
        try:
            runtime, launched = await self._engine.create(
                container_id=cid, bundle=bundle_dir, spec=prepared, stdio=io.child
            )
        finally:
            io.close_child_ends()
        undo.push_async_callback(runtime.destroy)
        entry = ContainerEntry(
            container_id=cid,
            bundle=bundle_dir,
            runtime=runtime,
            storages=tuple(mount_points),
            spec=prepared,
        )
        init = ProcessEntry(
            container_id=cid,
            exec_id=cid,
            pid=launched.pid,
            io=io,
            is_init=True,
            stdio_grace=self._settings.stdio_grace,
        )
        entry.add_process(init)
        init.add_exit_callback(lambda _p: entry.mark_stopped())
        attach_exit(init, launched)
        runtime.watch_oom(lambda: sandbox.oom.put(cid))
        if sandbox.pid_ns_owner is None:
            sandbox.pid_ns_owner = cid
        self._timings[cid] = (time.monotonic() - started) * 1000
        return entry

    async def start(self, container_id: str) -> None:
        entry = self._sandbox.get_container(container_id)
        async with entry.lock:
            if entry.status is not ContainerStatus.CREATED:
                raise FailedPrecondition(
                    f"container {container_id}: cannot start: it is {entry.status.value}"
                )
            await runtime_of(entry).start()
            if entry.status is ContainerStatus.CREATED:
                entry.move_to(ContainerStatus.RUNNING)
        log.info("container started", extra={"container_id": container_id})

    # -- remove ----------------------------------------------------------------------------------

    async def remove(self, container_id: str, timeout: float = 0) -> None:  # noqa: ASYNC109
        """Kill what still runs, destroy the container, release its storages. ``timeout`` > 0
        bounds the wait (then DEADLINE_EXCEEDED; the clean-up goes on in the background)."""
        entry = self._sandbox.get_container(container_id)
        task = self._background.run(self._remove(entry))
        if timeout <= 0:
            await asyncio.shield(task)
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            raise DeadlineExceeded(
                f"container {container_id}: remove did not finish within {timeout:g}s (ETIME)"
            ) from None

    async def _remove(self, entry: ContainerEntry) -> None:
        async with entry.lock:
            if self._sandbox.get_container(entry.id) is not entry:
                return  # removed meanwhile
            runtime = runtime_of(entry)
            errors: list[str] = []
            started = time.monotonic()
            # The bundle and the engine's delete share nothing (the rootfs is detached lazily)
            # unless poststop hooks run: they get the bundle path and may read config.json.
            # Without them the bundle goes in a thread while the engine deletes.
            bundle: asyncio.Future[None] | None = None
            if not has_poststop(entry):
                bundle = asyncio.ensure_future(asyncio.to_thread(self._bundles.remove, entry.id))
                bundle.add_done_callback(_retrieve)
            try:
                await runtime.destroy()
            except AgentError as err:
                errors.append(str(err))
            engine_done = time.monotonic()
            engine_ms = round((engine_done - started) * 1000, 2)
            # Exits are reported by the reaper; give them a moment so waiters get real statuses.
            pending = [p.wait() for p in entry.processes() if not p.exited]
            if pending:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.kill_timeout):
                        await asyncio.gather(*pending)
            entry.mark_stopped()
            for process in entry.processes():
                if not process.exited:
                    process.set_exited(255)
                process.close()
            exited = time.monotonic()
            try:
                await (bundle or asyncio.to_thread(self._bundles.remove, entry.id))
            except AgentError as err:
                errors.append(str(err))
            bundle_done = time.monotonic()
            try:
                await self._storage.release(entry.id)
            except AgentError as err:
                errors.append(str(err))
            if self._devices is not None:
                self._devices.release(entry.id)
            self._sandbox.remove_container(entry.id)
            log.info(
                "container removed",
                extra={
                    "container_id": entry.id,
                    "engine_ms": engine_ms,
                    "exits_ms": round((exited - engine_done) * 1000, 2),
                    "bundle_ms": round((bundle_done - exited) * 1000, 2),
                    "total_ms": round((time.monotonic() - started) * 1000, 2),
                },
            )
            if errors:
                raise Internal(f"container {entry.id}: remove: " + "; ".join(errors))

    async def remove_all(self) -> list[str]:
        """DestroySandbox: remove every container; returns the errors (nothing is skipped)."""
        errors: list[str] = []
        for entry in self._sandbox.containers():
            try:
                await self.remove(entry.id)
            except AgentError as err:
                errors.append(str(err))
        return errors

    # -- update / stats / pause / resume ---------------------------------------------------------

    async def update(self, container_id: str, resources: LinuxResources | None) -> None:
        entry = self._sandbox.get_container(container_id)
        if resources is None:
            raise InvalidArgument(f"container {container_id}: update without resources")
        try:
            check_resources(resources)
        except SpecError as err:
            raise InvalidArgument(f"container {container_id}: update: {err}") from err
        if entry.status is ContainerStatus.STOPPED:
            raise FailedPrecondition(f"container {container_id}: cannot update: it is stopped")
        await runtime_of(entry).update(resources)

    async def refresh_cpusets(self) -> None:
        """After OnlineCPUMem: every container's cpuset gets the CPUs that came online (the
        Kata agent does this for each container); every container is tried, then the errors
        are reported together."""
        errors: list[str] = []
        for entry in self._sandbox.containers():
            try:
                await runtime_of(entry).refresh_cpuset()
            except AgentError as err:
                errors.append(str(err))
        if errors:
            raise Internal("; ".join(errors))

    async def stats(self, container_id: str) -> tuple[CgroupStats, list[InterfaceStats]]:
        """Cgroup statistics and the (guest-wide) interface counters.
        No lock: stats must never hold up signal/wait/remove (Kata issue #13452)."""
        entry = self._sandbox.get_container(container_id)
        cgroup = await runtime_of(entry).stats()
        return cgroup, read_net_dev()

    async def pause(self, container_id: str) -> None:
        entry = self._sandbox.get_container(container_id)
        async with entry.lock:
            if entry.status not in (ContainerStatus.RUNNING, ContainerStatus.CREATED):
                raise FailedPrecondition(
                    f"container {container_id}: cannot pause: it is {entry.status.value}"
                )
            await runtime_of(entry).pause()
            entry.move_to(ContainerStatus.PAUSED)

    async def resume(self, container_id: str) -> None:
        entry = self._sandbox.get_container(container_id)
        async with entry.lock:
            if entry.status is not ContainerStatus.PAUSED:
                raise FailedPrecondition(
                    f"container {container_id}: cannot resume: it is {entry.status.value}, "
                    "not paused"
                )
            await runtime_of(entry).resume()
            entry.move_to(entry.resume_status())

    def rewrite_env(self, container_id: str, env: Sequence[str]) -> tuple[str, ...]:
        """ExecProcess: host PCI addresses in ``PCIDEVICE_*`` variables → guest addresses."""
        if self._devices is None:
            return tuple(env)
        return self._devices.rewrite_env(env, container_id)

    async def close(self) -> None:
        await self._background.close()


class Background:
    """Multi-step changes that run to completion even if their caller goes away (a deadline, a
    client disconnect): as in Kata, whose handlers are never cancelled, a create, exec or remove
    either fails cleanly or is recorded; it is never left half-done and untracked. The caller
    awaits the task through ``asyncio.shield``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def run(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_abandoned)
        return task

    async def close(self) -> None:
        """Wait for what is still running (agent shutdown)."""
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task


def _log_abandoned(task: asyncio.Task[Any]) -> None:
    """Retrieve a background step's failure (its caller may be gone) so it is logged once."""
    if task.cancelled():
        return
    err = task.exception()
    if err is not None and not isinstance(err, AgentError):
        log.error("background lifecycle step failed", exc_info=err)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a side task's outcome as seen (its awaiter reports it, unless it was abandoned)."""
    if not fut.cancelled():
        fut.exception()


def has_poststop(entry: ContainerEntry) -> bool:
    hooks = entry.spec.hooks if entry.spec is not None else None
    return bool(hooks and hooks.poststop)


def check_spec(container_id: str, spec: Spec) -> None:
    """The spec as sent must be valid (errors name the field: ``linux.namespaces[3].type``)."""
    try:
        warnings = check(spec)
    except SpecError as err:
        raise InvalidArgument(f"container {container_id}: invalid OCI spec: {err}") from err
    for warning in warnings:
        log.warning("OCI spec", extra={"container_id": container_id, "problem": str(warning)})


def console_size(process: Process) -> tuple[int, int] | None:
    """``process.consoleSize`` as (rows, columns)."""
    box = process.console_size
    return None if box is None else (box.height, box.width)


def runtime_of(entry: ContainerEntry) -> ContainerRuntime:
    return entry.runtime


def attach_exit(process: ProcessEntry, launched: Launched) -> None:
    """Report the engine's exit future to the process entry when it resolves."""

    def done(fut: asyncio.Future[int]) -> None:
        if fut.cancelled():
            return
        err = fut.exception()
        process.set_exited(255 if err is not None else fut.result())

    launched.exit.add_done_callback(done)
