"""`overlayfs`: an overlay described by its options; `overlay-rw` adds a per-container upper/work.

`io.katacontainers.fs-opt.overlay-rw` puts upperdir/workdir under <run_dir>/<container id>/;
driver option `io.katacontainers.volume.overlayfs.create_directory=<dir>` creates <dir> first
(confined like a mount point).

Every directory an option names (`lowerdir`, `upperdir`, `workdir`, and the `lowerdir+` /
`datadir+` forms) must lie below run_dir, the sandbox's storage areas: each is resolved there with
`oci.safepath` and handed to the kernel as the `/proc/self/fd/N` of the directory found, so a
symlink swapped in between the check and the mount cannot point the overlay elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil

from agent.blocking import fs_pool
from agent.errors import InvalidArgument, PermissionDenied
from agent.storage import mountopts
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage
from agent.storage.paths import StorageRoots, ensure_dir
from oci import safepath

OVERLAY_RW = "io.katacontainers.fs-opt.overlay-rw"
CREATE_DIRECTORY = "io.katacontainers.volume.overlayfs.create_directory"
DIR_OPTIONS = ("lowerdir", "upperdir", "workdir", "lowerdir+", "datadir+")


def split_dirs(value: str) -> list[str]:
    """An overlay directory list: ':'-separated, with '\\:' and '\\\\' escaping."""
    out: list[str] = []
    cur: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\\":
            cur.append(next(chars, ""))
        elif ch == ":":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def pin_dirs(
    roots: StorageRoots, options: list[str], what: str, stack: contextlib.ExitStack
) -> list[str]:
    """The options with every overlay directory checked below run_dir and replaced by the
    `/proc/self/fd/N` of the directory found (the fds stay open until `stack` closes)."""
    out: list[str] = []
    root = roots.open()
    stack.callback(os.close, root)
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or key not in DIR_OPTIONS:
            out.append(opt)
            continue
        pinned = []
        for d in split_dirs(value):
            rel = roots.relative(d, what=f"{what}: {key}")
            try:
                fd = safepath.resolve(root, rel, os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                raise InvalidArgument(f"{what}: {key} {d!r} does not exist") from None
            except OSError as err:
                raise PermissionDenied(
                    f"{what}: {key} {d!r} is not a directory below {roots.run_dir}: "
                    f"{os.strerror(err.errno or 0)}"
                ) from err
            stack.callback(os.close, fd)
            pinned.append(safepath.proc_path(fd))
        out.append(f"{key}={':'.join(pinned)}")
    return out


class Overlay:
    name = "overlayfs"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        options = mountopts.split(storage.options)
        fstype = storage.fstype or "overlay"
        for dopt in storage.driver_options:
            key, sep, val = dopt.partition("=")
            if key == CREATE_DIRECTORY:
                if not sep or not val:
                    raise InvalidArgument(f"{what}: driver option {dopt!r} names no directory")
                ensure_dir(env.roots, val, what=what).close()
        upper_root = None
        if OVERLAY_RW in options:
            if not container_id:
                raise InvalidArgument(f"{what}: {OVERLAY_RW} needs a container id")
            cdir = env.roots.container_dir(container_id)
            with (
                ensure_dir(env.roots, str(cdir / "upper"), what=what) as upper,
                ensure_dir(env.roots, str(cdir / "work"), what=what) as work,
            ):
                upper_root = (upper.path, work.path)
            fstype = "overlay"
            options = [*options, f"upperdir={upper_root[0]}", f"workdir={upper_root[1]}"]
        if mountopts.value(options, "lowerdir") is None:
            raise InvalidArgument(f"{what}: overlay options name no lowerdir")
        try:
            with contextlib.ExitStack() as stack:
                pinned = pin_dirs(env.roots, options, what, stack)
                target = stack.enter_context(ensure_dir(env.roots, storage.mount_point, what=what))
                mount_id = await common.mount(
                    env,
                    storage.source or "overlay",
                    target,
                    fstype,
                    mountopts.parse(pinned),
                    what=what,
                )
                kept = target.keep()
        except BaseException:
            if upper_root is not None:
                for d in upper_root:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(d)
            raise
        mounted = Mounted(target.path, mount_id=mount_id, mount_point=kept)
        if upper_root is not None:
            dirs = upper_root

            async def drop_upper() -> None:
                for d in dirs:
                    await fs_pool().run(shutil.rmtree, d, True)

            mounted.on_release.append(drop_upper)
        return mounted
