"""The remote hypervisor's use cases: a VM per Kata sandbox, created, started and stopped.

Each sandbox lives in ``STATE_DIR/<id>/`` (QEMU's sockets and logs, the agent socket the runtime
dials) and shares ``SHARED_ROOT/<id>/mounts`` with its guest, where the Go runtime puts container
root filesystems. The Kata shim bind-mounts them inside a mount namespace of its own, so the
process that serves the share (virtiofsd, or QEMU for 9p) runs in the mount namespace of the
process that called CreateVM: its pid comes from the connection's SO_PEERCRED, and the namespace
is opened (and so pinned) at CreateVM, then entered by ``nsenter`` in the child. The service's own
namespaces never change.

States: CreateVM -> created; StartVM -> starting -> running (or back to created when the boot
failed, with nothing left running); StopVM -> removed (a second StopVM says it was stopped).
StopVM during a StartVM cancels the boot. ``close`` (service shutdown) stops every VM.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import json
import logging
import os
import select
import shutil
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
)
from hv.config import ServiceConfig, VmSize, check_sandbox_id, vm_size
from hv.guest import Guest, start_guest
from hv.vm import AgentTimeout, GuestImage, VmConfig, VmError, running_pid

log = logging.getLogger(__name__)

STATE_FILE = "vm.json"
_FORGET_AFTER = 1024  # stopped ids remembered (a second StopVM is told, not "unknown")


class State(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"


@dataclass(eq=False)
class Sandbox:
    id: str
    rundir: Path
    shared_dir: Path
    size: VmSize
    network_namespace: str
    caller_pid: int
    caller_pidfd: int | None  # the CreateVM caller (the Kata shim), until StopVM
    mount_ns_fd: int | None = None  # its mount namespace while the VM runs, when not ours
    state: State = State.CREATED
    guest: Guest | None = None
    boot: asyncio.Task[Guest] | None = None
    stopping: bool = False
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def agent_sock(self) -> Path:
        return self.rundir / "agent.sock"


class HypervisorService:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._sandboxes: dict[str, Sandbox] = {}
        self._stopped: collections.OrderedDict[str, None] = collections.OrderedDict()

    # -- the RPCs ----------------------------------------------------------------------------

    def create_vm(
        self,
        sandbox_id: str,
        annotations: Mapping[str, str],
        network_namespace: str,
        caller_pid: int | None,
    ) -> Path:
        """Prepare the sandbox's VM (nothing runs yet); the agent socket path the runtime dials."""
        check_sandbox_id(sandbox_id)
        if sandbox_id in self._sandboxes:
            raise AlreadyExists(f"sandbox {sandbox_id}: a VM exists already")
        size = vm_size(annotations, self.config.default_size)
        rundir = self.config.state_dir / sandbox_id
        longest = rundir / "console.sock"
        if len(os.fsencode(longest)) > 107:
            raise FailedPrecondition(
                f"sandbox {sandbox_id}: {longest} is too long for a unix socket path "
                f"(at most 107 bytes): use a shorter --state-dir"
            )
        pid, pidfd = _open_caller(caller_pid)
        try:
            if rundir.is_dir():
                shutil.rmtree(rundir)  # left by a crashed run of the service
            rundir.mkdir(mode=0o700, parents=True)
        except OSError as err:
            os.close(pidfd)
            raise FailedPrecondition(
                f"sandbox {sandbox_id}: cannot create {rundir}: {err.strerror}"
            ) from err
        sandbox = Sandbox(
            id=sandbox_id,
            rundir=rundir,
            shared_dir=self.config.shared_root / sandbox_id / "mounts",
            size=size,
            network_namespace=network_namespace,
            caller_pid=pid,
            caller_pidfd=pidfd,
            annotations=dict(annotations),
        )
        self._sandboxes[sandbox_id] = sandbox
        self._stopped.pop(sandbox_id, None)
        log.info(
            "VM created",
            extra={
                "sandbox": sandbox_id,
                "vcpus": size.cpus,
                "memory_mb": size.memory_mb,
                "caller_pid": caller_pid,
                "netns": network_namespace or None,
            },
        )
        return sandbox.agent_sock

    async def start_vm(self, sandbox_id: str) -> None:
        """Boot the guest; returns once its agent answers through the agent socket."""
        sandbox = self._get(sandbox_id)
        if sandbox.state is State.STARTING:
            raise FailedPrecondition(f"sandbox {sandbox_id}: the VM is starting already")
        if sandbox.state is State.RUNNING:
            raise FailedPrecondition(f"sandbox {sandbox_id}: the VM is running already")
        sandbox.state = State.STARTING
        sandbox.boot = asyncio.ensure_future(self._boot(sandbox))
        try:
            sandbox.guest = await sandbox.boot
        except AgentTimeout as err:
            raise DeadlineExceeded(f"sandbox {sandbox_id}: {err}") from err
        except VmError as err:
            raise Internal(f"sandbox {sandbox_id}: {err}") from err
        except asyncio.CancelledError:
            if sandbox.stopping:
                raise FailedPrecondition(
                    f"sandbox {sandbox_id}: stopped while the VM was starting (StopVM, or "
                    "kata-agent-hv is stopping)"
                ) from None
            raise
        finally:
            sandbox.boot = None
            if sandbox.guest is None:
                sandbox.state = State.CREATED
        sandbox.state = State.RUNNING
        _write_state(sandbox)
        log.info(
            "VM started",
            extra={
                "sandbox": sandbox_id,
                "boot_seconds": round(sandbox.guest.boot_seconds, 2),
                "caller_mount_ns": sandbox.mount_ns_fd is not None,
                "qemu_pid": sandbox.guest.vm.qemu.pid if sandbox.guest.vm.qemu else None,
            },
        )

    async def stop_vm(self, sandbox_id: str) -> None:
        """Power the guest off: QEMU and virtiofsd are stopped, the sandbox's files removed."""
        sandbox = self._get(sandbox_id)
        await self._stop(sandbox)
        log.info("VM stopped", extra={"sandbox": sandbox_id})

    async def close(self) -> None:
        """Stop every VM (service shutdown)."""
        sandboxes = list(self._sandboxes.values())
        results = await asyncio.gather(*(self._stop(s) for s in sandboxes), return_exceptions=True)
        for sandbox, result in zip(sandboxes, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "stopping the VM failed", extra={"sandbox": sandbox.id, "error": str(result)}
                )

    def clean_stale_state(self) -> None:
        """Stop QEMU/virtiofsd processes a previous run of the service left (it was killed) and
        remove their directories."""
        state_dir = self.config.state_dir
        if not state_dir.is_dir():
            return
        for rundir in sorted(state_dir.iterdir()):
            if not rundir.is_dir() or rundir.name in self._sandboxes:
                continue
            try:
                info = json.loads((rundir / STATE_FILE).read_text())
            except (OSError, ValueError):
                info = {}
            for key in ("qemu_pid", "virtiofsd_pid"):
                pid = running_pid(info.get(key) if isinstance(info, dict) else None)
                if pid is not None:
                    log.warning("stopping a stale process", extra={"pid": pid, "dir": str(rundir)})
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            shutil.rmtree(rundir, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------

    def _get(self, sandbox_id: str) -> Sandbox:
        sandbox = self._sandboxes.get(sandbox_id)
        if sandbox is not None:
            return sandbox
        if sandbox_id in self._stopped:
            raise NotFound(f"sandbox {sandbox_id}: its VM was stopped already")
        raise NotFound(f"sandbox {sandbox_id[:80]!r}: no VM (CreateVM was not called for it)")

    def _vm_config(self, sandbox: Sandbox) -> VmConfig:
        image = GuestImage.load(self.config.build)
        if sandbox.mount_ns_fd is None:
            sandbox.mount_ns_fd = _caller_mount_ns(sandbox)
        ns = sandbox.mount_ns_fd
        return VmConfig(
            kernel=image.kernel,
            initrd=image.initrd,
            disk=image.disk if image.initrd is None else None,
            rundir=sandbox.rundir,
            share=sandbox.shared_dir,
            memory_mb=sandbox.size.memory_mb,
            cpus=sandbox.size.cpus,
            share_mode=self.config.share_mode,
            debug_console=self.config.debug_console,
            extra_append=self.config.append,
            boot_timeout=self.config.boot_timeout,
            mount_ns=None if ns is None else f"/proc/self/fd/{ns}",
            pass_fds=() if ns is None else (ns,),
        )

    async def _boot(self, sandbox: Sandbox) -> Guest:
        config = self._vm_config(sandbox)
        return await start_guest(
            config,
            agent_sock=sandbox.agent_sock,
            log_rpc=self.config.log_rpc,
            name=sandbox.id,
        )

    async def _stop(self, sandbox: Sandbox) -> None:
        sandbox.stopping = True
        try:
            boot = sandbox.boot
            if boot is not None and not boot.done():
                boot.cancel()  # start_guest stops what it started
                with contextlib.suppress(BaseException):
                    await boot
            if sandbox.guest is not None:
                await sandbox.guest.stop()
                sandbox.guest = None
        finally:
            if self._sandboxes.get(sandbox.id) is sandbox:
                del self._sandboxes[sandbox.id]
                self._stopped[sandbox.id] = None
                while len(self._stopped) > _FORGET_AFTER:
                    self._stopped.popitem(last=False)
            for fd in (sandbox.mount_ns_fd, sandbox.caller_pidfd):
                if fd is not None:
                    os.close(fd)
            sandbox.mount_ns_fd = sandbox.caller_pidfd = None
            if not self.config.keep_logs:
                shutil.rmtree(sandbox.rundir, ignore_errors=True)


def _open_caller(pid: int | None) -> tuple[int, int]:
    """(pid, pidfd) of the CreateVM caller."""
    if pid is None or pid <= 0:
        raise FailedPrecondition(
            "the caller's process is not visible to kata-agent-hv (no SO_PEERCRED pid): "
            "run it in the host's pid namespace, where the Kata shim runs"
        )
    try:
        return pid, os.pidfd_open(pid)
    except OSError as err:
        raise FailedPrecondition(f"the caller (pid {pid}) is gone: {err.strerror}") from err


def _caller_mount_ns(sandbox: Sandbox) -> int | None:
    """An fd of the CreateVM caller's mount namespace now, or None when it is the service's."""
    pid, pidfd = sandbox.caller_pid, sandbox.caller_pidfd
    gone = FailedPrecondition(
        f"sandbox {sandbox.id}: the process that called CreateVM (pid {pid}) has exited: "
        "its mount namespace, where the runtime puts the containers' root filesystems, is gone"
    )
    if pidfd is None:
        raise gone
    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise gone from err
    try:
        if select.select([pidfd], [], [], 0)[0]:
            raise gone  # exited before the open: the pid may name another process now
        theirs, ours = os.fstat(fd), os.stat("/proc/self/ns/mnt")
    except BaseException:
        os.close(fd)
        raise
    if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
        os.close(fd)
        return None
    return fd


def _write_state(sandbox: Sandbox) -> None:
    """Pids and paths of the running VM, for a later run of the service to clean up after a
    crash, and for people looking at the state directory."""
    assert sandbox.guest is not None
    info = sandbox.guest.describe()
    info.update(sandbox=sandbox.id, vcpus=sandbox.size.cpus, memory_mb=sandbox.size.memory_mb)
    (sandbox.rundir / STATE_FILE).write_text(json.dumps(info, indent=1) + "\n")
