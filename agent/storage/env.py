"""What the storage drivers need from the rest of the agent, passed in (never imported globally).

`MountSyscalls` is the mount seam (the real one is `oci.syscalls`; unit tests pass a recorder),
`Runner` runs helper binaries through `agent.spawn.run` (mkfs.ext4, resize2fs, ...), and
`BlockDevices` is the device layer (`agent.devices`) that waits for hot-plugged disks.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.errors import Internal
from agent.spawn import Runner
from agent.storage.paths import MountPoint, StorageRoots


class MountSyscalls(Protocol):
    """The subset of `oci.syscalls.Syscalls` the drivers use (LinuxSyscalls / RecordingSyscalls)."""

    def mount(
        self,
        source: str | None,
        target: str,
        fstype: str | None,
        flags: int,
        data: str | None = None,
    ) -> None: ...

    def umount2(self, target: str, flags: int = 0) -> None: ...


class BlockDevices(Protocol):
    """Finds (waiting for its uevent if needed) the /dev node of a hot-plugged device."""

    async def block_by_pci_path(self, pci_path: str) -> Path: ...

    async def block_by_name(self, devname: str) -> Path: ...

    async def scsi_block(self, scsi_addr: str) -> Path: ...

    async def pmem(self, devname: str) -> Path: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageEnv:
    roots: StorageRoots
    sys: MountSyscalls
    run: Runner
    devices: BlockDevices
    sysfs: Path = Path("/sys")
    proc: Path = Path("/proc")
    command_timeout: float = 120.0
    watch_interval: float = 2.0


def errname(err: OSError) -> str:
    name = errno.errorcode.get(err.errno or 0, "")
    return f"{name}: {err.strerror}" if name else str(err.strerror or err)


ReleaseHook = Callable[[], Awaitable[None]]


@dataclass(eq=False)
class Mounted:
    """What a driver did for one storage, so the manager can undo it at refcount zero."""

    path: Path
    unmount: bool = True
    remove_dir: bool = True
    on_release: list[ReleaseHook] = field(default_factory=list)
    # the id of the mount made (unmount acts on it only if it is still there); None: unknown
    mount_id: int | None = None
    device: Path | None = None  # the block device of a block-device volume (ResizeVolume)
    # the mount point directory, held open: unmount finds the mount through it (closed then)
    mount_point: MountPoint | None = None


def oserror(what: str, step: str, err: OSError) -> Internal:
    return Internal(f"{what}: {step}: {errname(err)}")
