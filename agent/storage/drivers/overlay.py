"""`overlayfs`: an overlay described by its options; `overlay-rw` adds a per-container upper/work.

`io.katacontainers.fs-opt.overlay-rw` puts upperdir/workdir under <run_dir>/<container id>/;
driver option `io.katacontainers.volume.overlayfs.create_directory=<dir>` creates <dir> first
(confined like a mount point).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil

from agent.errors import InvalidArgument
from agent.storage import mountopts
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage
from agent.storage.paths import ensure_dir

OVERLAY_RW = "io.katacontainers.fs-opt.overlay-rw"
CREATE_DIRECTORY = "io.katacontainers.volume.overlayfs.create_directory"


class Overlay:
    name = "overlayfs"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        options = mountopts.split(storage.options)
        fstype = storage.fstype or "overlay"
        created = []
        for dopt in storage.driver_options:
            key, sep, val = dopt.partition("=")
            if key == CREATE_DIRECTORY:
                if not sep or not val:
                    raise InvalidArgument(f"{what}: driver option {dopt!r} names no directory")
                created.append(ensure_dir(env.roots, val, what=what))
        upper_root = None
        if OVERLAY_RW in options:
            if not container_id:
                raise InvalidArgument(f"{what}: {OVERLAY_RW} needs a container id")
            cdir = env.roots.container_dir(container_id)
            upper = ensure_dir(env.roots, str(cdir / "upper"), what=what)
            work = ensure_dir(env.roots, str(cdir / "work"), what=what)
            upper_root = (upper, work)
            fstype = "overlay"
            options = [*options, f"upperdir={upper}", f"workdir={work}"]
        if mountopts.value(options, "lowerdir") is None:
            raise InvalidArgument(f"{what}: overlay options name no lowerdir")
        target = ensure_dir(env.roots, storage.mount_point, what=what)
        try:
            await common.mount(
                env,
                storage.source or "overlay",
                target,
                fstype,
                mountopts.parse(options),
                what=what,
            )
        except BaseException:
            if upper_root is not None:
                for d in upper_root:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(d)
            raise
        mounted = Mounted(target)
        if upper_root is not None:
            dirs = upper_root

            async def drop_upper() -> None:
                for d in dirs:
                    await asyncio.to_thread(shutil.rmtree, d, True)

            mounted.on_release.append(drop_upper)
        return mounted
