"""Sandbox use cases: CreateSandbox, DestroySandbox, GetOOMEvent, UpdateEphemeralMounts,
(reference doc §1.2). UpdateEphemeralMounts and RemoveStaleVirtiofsShareMounts are served by the
storage area (`agent.services.hardware`).

CreateSandbox: hostname check → kernel modules (``modprobe -v``) → the pinned IPC/UTS namespaces
(hostname set in the UTS one) → sandbox storages → guest hooks → the guest resolv.conf; any failure
undoes the steps before it. DestroySandbox removes every container, closes the OOM queue, releases
every storage, unpins the namespaces, removes the ``<run_dir>`` state and then sets
`shutdown_requested`: start-up (`agent.boot.phase1`) stops the server and, as PID 1 only, powers
the guest off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.config import AgentConfig
from agent.errors import AgentError, AlreadyExists, Internal, InvalidArgument
from agent.network import dns
from agent.sandbox import GuestHooks, Sandbox, SandboxState
from agent.sandbox import namespaces as sandbox_ns
from agent.sandbox.bundle import Bundles, remove_tree
from agent.sandbox.oci_runtime import OciEngine, start_spawner
from agent.services.containers import (
    ContainerService,
    DeviceRefs,
    LifecycleSettings,
    StorageRefs,
)
from agent.services.processes import ProcessService
from agent.services.stdio import StdioService
from agent.spawn import Spawner
from agent.storage import Storage, mountinfo
from oci.syscalls.api import Syscalls
from oci.syscalls.consts import MNT_DETACH, MS_BIND
from oci.syscalls.linux import LinuxSyscalls

log = logging.getLogger(__name__)

MODPROBE_TIMEOUT = 60.0
SHUTDOWN_REMOVE_TIMEOUT = 10.0
# The engine's state, <run_dir>/.engine/<cid> (no container id can start with ".").
ENGINE_STATE_DIR = ".engine"


class SandboxStorage(StorageRefs, Protocol):
    async def release_all(self) -> None: ...


@dataclass(frozen=True, slots=True)
class KernelModule:
    name: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateSandbox:
    hostname: str = ""
    dns: tuple[str, ...] = ()
    storages: tuple[Storage, ...] = ()
    sandbox_pidns: bool = False
    sandbox_id: str = ""
    guest_hook_path: str = ""
    kernel_modules: tuple[KernelModule, ...] = ()


class SandboxService:
    def __init__(
        self,
        *,
        sandbox: Sandbox,
        containers: ContainerService,
        storage: SandboxStorage,
        runner: sandbox_ns.Runner,
        syscalls: Syscalls,
        settings: LifecycleSettings,
    ) -> None:
        self._sandbox = sandbox
        self._containers = containers
        self._storage = storage
        self._runner = runner
        self._sys = syscalls
        self._settings = settings
        self._namespaces: sandbox_ns.SandboxNamespaces | None = None
        self._resolv_bound: Path | None = None
        self.shutdown_requested = asyncio.Event()
        self._creating = False

    @property
    def sandbox(self) -> Sandbox:
        return self._sandbox

    # -- CreateSandbox ---------------------------------------------------------------------------

    async def create(self, args: CreateSandbox) -> None:
        sandbox = self._sandbox
        sandbox.begin_create()
        if self._creating:
            raise AlreadyExists("a CreateSandbox is already in progress")
        self._creating = True
        try:
            await self._create(args)
        finally:
            self._creating = False

    async def _create(self, args: CreateSandbox) -> None:
        sandbox = self._sandbox
        hostname = dns.check_hostname(args.hostname)
        async with contextlib.AsyncExitStack() as undo:
            await asyncio.to_thread(self._make_dirs)
            for module in args.kernel_modules:
                await self._modprobe(module)
            pinned = await sandbox_ns.create(self._settings.sandbox_ns_dir, hostname, self._runner)
            self._namespaces = pinned
            undo.callback(self._release_namespaces)
            if args.storages:
                mount_points = await self._storage.add_storages(args.storages, None)
                undo.push_async_callback(self._storage.release, None)
                sandbox.storages = tuple(mount_points)
            if args.guest_hook_path:
                sandbox.hooks = await asyncio.to_thread(
                    scan_guest_hooks, Path(args.guest_hook_path)
                )
            if args.dns:
                await asyncio.to_thread(self._setup_dns, list(args.dns))
                undo.callback(self._release_dns)
            sandbox.ipc_ns, sandbox.uts_ns = pinned.ipc, pinned.uts
            sandbox.mark_ready(args.sandbox_id, hostname)
            undo.pop_all()
        log.info("sandbox created", extra={"sandbox_id": args.sandbox_id, "hostname": hostname})

    def _make_dirs(self) -> None:
        (self._settings.run_dir / "sandbox").mkdir(parents=True, exist_ok=True)

    async def _modprobe(self, module: KernelModule) -> None:
        if not module.name:
            raise InvalidArgument("kernel module: empty name")
        done = await self._runner.run(
            ["modprobe", "-v", module.name, *module.parameters], timeout=MODPROBE_TIMEOUT
        )
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise Internal(
                f"load kernel module {module.name}: modprobe exited with status "
                f"{done.returncode}" + (f": {err}" if err else "")
            )

    def _setup_dns(self, lines: list[str]) -> None:
        target = self._settings.guest_resolv_conf
        if target is None:
            dns.setup_guest_dns(lines, str(self._settings.run_dir))
            return

        def bind(source: str, dest: str) -> None:
            try:
                self._sys.mount(source, dest, None, MS_BIND, None)
            except OSError as err:
                raise Internal(
                    f"bind mount {source} on {dest}: {os.strerror(err.errno or 0)}"
                ) from err
            self._resolv_bound = Path(dest)

        dns.setup_guest_dns(lines, str(self._settings.run_dir), target=str(target), bind=bind)

    def _release_dns(self) -> list[str]:
        target, self._resolv_bound = self._resolv_bound, None
        if target is None:
            return []
        try:
            self._sys.umount2(str(target), MNT_DETACH)
        except OSError as err:
            return [f"unmount {target}: {os.strerror(err.errno or 0)}"]
        return []

    def _release_namespaces(self) -> list[str]:
        pinned, self._namespaces = self._namespaces, None
        if pinned is None:
            return []
        return sandbox_ns.release(pinned, self._sys)

    # -- DestroySandbox --------------------------------------------------------------------------

    async def destroy(self) -> None:
        """Tear everything down, then request the agent's shutdown (also after errors)."""
        sandbox = self._sandbox
        if sandbox.state is SandboxState.DESTROYED:
            self.shutdown_requested.set()
            return
        errors: list[str] = []
        try:
            errors += await self._containers.remove_all()
            sandbox.mark_destroyed()
            try:
                await self._storage.release_all()
            except AgentError as err:
                errors.append(str(err))
            errors += await asyncio.to_thread(self._release_host_state)
        finally:
            sandbox.mark_destroyed()
            self.shutdown_requested.set()
        log.info("sandbox destroyed", extra={"sandbox_id": sandbox.id, "errors": len(errors)})
        if errors:
            raise Internal("destroy sandbox: " + "; ".join(errors))

    def _release_host_state(self) -> list[str]:
        errors = self._release_dns() + self._release_namespaces()
        run_dir = self._settings.run_dir
        try:
            children = list(run_dir.iterdir())
        except FileNotFoundError:
            return errors
        for child in children:
            if mountinfo.mounts_below(child):
                # e.g. a share the image mounted itself: not ours to remove, never deleted through
                log.info("left in place: something is mounted below it", extra={"path": str(child)})
                continue
            try:
                remove_tree(child)
            except (AgentError, OSError) as err:
                errors.append(str(err))
        return errors

    # -- OOM -------------------------------------------------------------------------------------

    async def get_oom_event(self) -> str:
        return await self._sandbox.oom.get()


def scan_guest_hooks(path: Path) -> GuestHooks:
    """Executable regular files under ``<path>/{prestart,poststart,poststop}``, sorted by name.
    Problems are logged, never fatal (as in Kata)."""

    def scan(kind: str) -> tuple[str, ...]:
        found: list[str] = []
        directory = path / kind
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            log.info("no guest hooks", extra={"path": str(directory), "error": err.strerror})
            return ()
        for entry in entries:
            try:
                st = entry.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                found.append(entry.path)
            else:
                log.warning("guest hook is not an executable file", extra={"path": entry.path})
        return tuple(found)

    return GuestHooks(
        prestart=scan("prestart"), poststart=scan("poststart"), poststop=scan("poststop")
    )


@dataclass(eq=False)
class Lifecycle:
    """The lifecycle area's services, built together (they share one `Sandbox`)."""

    sandbox: SandboxService
    containers: ContainerService
    processes: ProcessService
    stdio: StdioService
    engine: OciEngine

    async def close(self) -> None:
        """Agent shutdown: a sandbox still there is destroyed as DestroySandbox would (its
        containers, storages, pinned namespaces and run_dir state; bounded), then the engine
        stops. A guest powers off anyway; an agent run as a plain process must not leave them
        behind."""
        if self.sandbox.sandbox.state is SandboxState.READY:
            log.info("shutdown: destroying the sandbox")
            try:
                async with asyncio.timeout(SHUTDOWN_REMOVE_TIMEOUT):
                    await self.sandbox.destroy()
            except (TimeoutError, AgentError) as err:
                log.warning("shutdown: destroy sandbox failed", extra={"error": str(err)})
        elif len(self.sandbox.sandbox):
            log.info("shutdown: removing the remaining containers")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_REMOVE_TIMEOUT):
                    errors = await self.containers.remove_all()
                    for error in errors:
                        log.warning("shutdown: remove failed", extra={"error": error})
        await self.processes.close()
        await self.containers.close()
        await self.engine.close()


def lifecycle_settings(config: AgentConfig) -> LifecycleSettings:
    """The lifecycle's slice of the configuration. The guest's /etc/resolv.conf is only ever
    bind-mounted over by the agent of a real guest: as PID 1, or with the default run_dir (tests
    point run_dir at temporary directories, and must never touch the host's resolv.conf)."""
    paths = config.paths
    real_guest = os.getpid() == 1 or paths.run_dir == Path("/run/kata-containers")
    return LifecycleSettings(
        run_dir=paths.run_dir,
        sandbox_ns_dir=paths.sandbox_ns_dir,
        pipe_size=config.container_pipe_size,
        guest_resolv_conf=Path(dns.GUEST_RESOLV_CONF) if real_guest else None,
    )


def build_lifecycle(
    config: AgentConfig,
    *,
    storage: SandboxStorage,
    devices: DeviceRefs | None,
    spawner: Spawner,
) -> Lifecycle:
    """Wire the lifecycle services (call on the loop, after the reaper is installed: this starts
    the engine's spawner process)."""
    settings = lifecycle_settings(config)
    syscalls = LinuxSyscalls()
    engine = start_spawner(spawner, state_root=settings.run_dir / ENGINE_STATE_DIR)
    sandbox = Sandbox()
    containers = ContainerService(
        sandbox=sandbox,
        engine=engine,
        storage=storage,
        bundles=Bundles(settings.run_dir, syscalls),
        settings=settings,
        devices=devices,
    )
    return Lifecycle(
        sandbox=SandboxService(
            sandbox=sandbox,
            containers=containers,
            storage=storage,
            runner=spawner,
            syscalls=syscalls,
            settings=settings,
        ),
        containers=containers,
        processes=ProcessService(
            sandbox=sandbox, settings=settings, rewrite_env=containers.rewrite_env
        ),
        stdio=StdioService(sandbox=sandbox),
        engine=engine,
    )
