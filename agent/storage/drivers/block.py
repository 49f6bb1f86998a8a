"""Block-device storages: `blk` (virtio-blk by PCI path, or a /dev path), `mmioblk`, `scsi`,
`nvdimm`. The device layer finds the /dev node (waiting for its uevent); then a generic mount.

`blk` driver option `create_filesystem` (ext4 only) formats the device first with
`mkfs.ext4 -F -O ^has_journal -m 0 -i 163840 -I 128`, as Kata does for ephemeral disks.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agent.errors import AgentError, Internal, InvalidArgument, NotFound
from agent.storage import mountopts
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv, errname
from agent.storage.model import Storage
from agent.storage.paths import ensure_dir

CREATE_FILESYSTEM = "create_filesystem"
MKFS_EXT4 = ("mkfs.ext4", "-F", "-O", "^has_journal", "-m", "0", "-i", "163840", "-I", "128")
MKE2FS_FALLBACK = ("mke2fs", "-F", "-m", "0", "-i", "163840", "-I", "128")


def _exists(path: Path) -> bool:
    return os.path.exists(path)


def check_block_device(path: Path, *, what: str) -> Path:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFound(f"{what}: device {str(path)!r} does not exist") from None
    except OSError as err:
        raise Internal(f"{what}: stat {str(path)!r}: {errname(err)}") from err
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidArgument(f"{what}: {str(path)!r} is not a block device")
    return path


async def make_filesystem(env: StorageEnv, storage: Storage, device: Path, *, what: str) -> None:
    """mkfs.ext4 as Kata runs it; where e2fsprogs is missing (a minimal guest image), busybox's
    mke2fs with the same ratios: an ext2 filesystem, i.e. ext4 without a journal, which the ext4
    driver mounts."""
    fstype = storage.fstype or "ext4"
    if fstype != "ext4":
        raise InvalidArgument(f"{what}: {CREATE_FILESYSTEM} supports ext4 only, not {fstype!r}")
    for argv in ([*MKFS_EXT4, str(device)], [*MKE2FS_FALLBACK, str(device)]):
        try:
            res = await env.run(argv, timeout=env.command_timeout)
        except AgentError as spawn_err:  # not installed, or did not finish in time
            if getattr(spawn_err, "errno", None) == errno.ENOENT and argv[0] == MKFS_EXT4[0]:
                continue
            raise type(spawn_err)(f"{what}: {CREATE_FILESYSTEM}: {spawn_err}") from spawn_err
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            raise Internal(
                f"{what}: {argv[0]} {device} exited with {res.returncode}: "
                f"{err[-1] if err else 'no error output'}"
            )
        return


async def mount_block(env: StorageEnv, storage: Storage, device: Path) -> Mounted:
    what = storage.describe()
    check_block_device(device, what=what)
    if CREATE_FILESYSTEM in storage.driver_options:
        await make_filesystem(env, storage, device, what=what)
    fstype = storage.fstype or "ext4"
    opts = mountopts.parse(storage.options)
    with ensure_dir(env.roots, storage.mount_point, what=what) as target:
        try:
            # a journal replay or a slow disk can take a while: off the loop
            mount_id = await common.mount(
                env, str(device), target, fstype, opts, what=what, slow=True
            )
        except BaseException:
            common.remove_empty_dir(env.roots, target.path)
            raise
        return Mounted(target.path, mount_id=mount_id, device=device, mount_point=target.keep())


class Blk:
    name = "blk"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        if storage.source.startswith("/dev"):
            device = Path(storage.source)
        else:
            device = await env.devices.block_by_pci_path(storage.source)
        return await mount_block(env, storage, device)


class MmioBlk:
    name = "mmioblk"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        if not storage.source.startswith("/dev/"):
            raise InvalidArgument(
                f"{storage.describe()}: mmioblk source must be a /dev/<name> path"
            )
        device = Path(storage.source)
        if not _exists(device):
            device = await env.devices.block_by_name(device.name)
        return await mount_block(env, storage, device)


class Scsi:
    name = "scsi"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        device = await env.devices.scsi_block(storage.source)
        return await mount_block(env, storage, device)


class Nvdimm:
    name = "nvdimm"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        if not storage.source.startswith("/dev/pmem"):
            raise InvalidArgument(f"{storage.describe()}: nvdimm source must be /dev/pmemN")
        device = Path(storage.source)
        if not _exists(device):
            device = await env.devices.pmem(device.name)
        return await mount_block(env, storage, device)
