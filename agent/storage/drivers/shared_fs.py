"""Host-shared filesystems: virtio-fs (optionally with a DAX window) and virtio-9p.

The share is usually Kata's `kataShared` tag mounted at <run_dir>/shared/containers/ by
CreateSandbox. Mounting a share can stall on the host side (virtiofsd, 9p server), so the mount
runs on a worker thread.
"""

from __future__ import annotations

from agent.storage import mountinfo, mountopts
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage
from agent.storage.paths import MountPoint, ensure_dir

KATA_SHARED = "kataShared"
NINEP_DEFAULT_MSIZE = "8192"


class VirtioFs:
    name = "virtio-fs"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        with ensure_dir(env.roots, storage.mount_point, what=what) as target:
            if storage.source == KATA_SHARED and mountinfo.is_mounted(target.path, env.proc):
                # pre-mounted by the guest image: use it, never unmount it
                return Mounted(target.path, unmount=False, remove_dir=False)
            opts = mountopts.parse(storage.options)
            mount_id = await common.mount(
                env,
                storage.source,
                target,
                storage.fstype or "virtiofs",
                opts,
                what=what,
                slow=True,
            )
            return Mounted(target.path, mount_id=mount_id, mount_point=target.keep())


class NineP:
    name = "9p"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        with ensure_dir(env.roots, storage.mount_point, what=what) as target:
            if storage.source == KATA_SHARED and mountinfo.is_mounted(target.path, env.proc):
                return Mounted(target.path, unmount=False, remove_dir=False)
            return await self._mount(env, storage, target, what)

    async def _mount(
        self, env: StorageEnv, storage: Storage, target: MountPoint, what: str
    ) -> Mounted:
        options = list(mountopts.split(storage.options))
        if mountopts.value(options, "trans") is None:
            options.append("trans=virtio")
        if mountopts.value(options, "version") is None:
            options.append("version=9p2000.L")
        if mountopts.value(options, "msize") is None:
            options.append(f"msize={NINEP_DEFAULT_MSIZE}")
        opts = mountopts.parse(options)
        mount_id = await common.mount(
            env, storage.source, target, storage.fstype or "9p", opts, what=what, slow=True
        )
        return Mounted(target.path, mount_id=mount_id, mount_point=target.keep())
