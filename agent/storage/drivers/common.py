"""Shared steps of the drivers: the generic mount, undoing it, and fsGroup ownership."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from pathlib import Path

from agent.errors import Internal, InvalidArgument
from agent.storage.env import StorageEnv, errname
from agent.storage.model import FsGroup, FsGroupPolicy
from agent.storage.mountopts import MountOptions
from oci.syscalls.consts import MNT_DETACH

log = logging.getLogger(__name__)


def _mount_now(
    env: StorageEnv, source: str, target: Path, fstype: str, opts: MountOptions, what: str
) -> None:
    try:
        env.sys.mount(source, str(target), fstype or None, opts.flags, opts.data_str or None)
    except OSError as err:
        raise Internal(
            f"{what}: mount {source!r} on {str(target)!r} (type {fstype or 'none'}, "
            f"options {opts.data_str!r}): {errname(err)}"
        ) from err
    for prop in opts.propagation:
        try:
            env.sys.mount(None, str(target), None, prop, None)
        except OSError as err:
            with contextlib.suppress(OSError):
                env.sys.umount2(str(target), MNT_DETACH)
            raise Internal(f"{what}: set propagation on {str(target)!r}: {errname(err)}") from err


async def mount(
    env: StorageEnv,
    source: str,
    target: Path,
    fstype: str,
    opts: MountOptions,
    *,
    what: str,
    slow: bool = False,
) -> None:
    """mount(2) plus propagation; a failed step leaves nothing mounted. `slow` → worker thread."""
    if slow:
        await asyncio.to_thread(_mount_now, env, source, target, fstype, opts, what)
    else:
        _mount_now(env, source, target, fstype, opts, what)
    log.info("mounted", extra={"source": source, "target": str(target), "fstype": fstype})


def unmount(env: StorageEnv, target: Path, *, what: str) -> None:
    """Unmount `target`; a busy mount is detached lazily; an absent one is fine."""
    try:
        env.sys.umount2(str(target), 0)
    except OSError as err:
        if err.errno == errno.EINVAL:  # not a mount point (any more)
            return
        if err.errno == errno.EBUSY:
            try:
                env.sys.umount2(str(target), MNT_DETACH)
            except OSError as err2:
                raise Internal(f"{what}: unmount {str(target)!r}: {errname(err2)}") from err2
            return
        raise Internal(f"{what}: unmount {str(target)!r}: {errname(err)}") from err


def remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _group_mode(mode: int, is_dir: bool) -> int:
    new = mode | stat.S_IRGRP | stat.S_IWGRP
    if is_dir:
        new |= stat.S_IXGRP | stat.S_ISGID
    elif mode & stat.S_IXUSR:
        new |= stat.S_IXGRP
    return new


def _needs_change(root: Path, gid: int) -> bool:
    st = root.lstat()
    wanted = _group_mode(st.st_mode, stat.S_ISDIR(st.st_mode))
    return st.st_gid != gid or stat.S_IMODE(st.st_mode) != stat.S_IMODE(wanted)


def _apply_one(path: Path, gid: int) -> None:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        os.lchown(path, -1, gid)
        return
    if st.st_gid != gid:
        os.lchown(path, -1, gid)
    new = _group_mode(st.st_mode, stat.S_ISDIR(st.st_mode))
    if stat.S_IMODE(new) != stat.S_IMODE(st.st_mode):
        os.chmod(path, stat.S_IMODE(new))


def _apply_fs_group(root: Path, group: FsGroup) -> None:
    if group.policy is FsGroupPolicy.ON_ROOT_MISMATCH and not _needs_change(root, group.group_id):
        return
    _apply_one(root, group.group_id)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            _apply_one(Path(dirpath) / name, group.group_id)


async def apply_fs_group(root: Path, group: FsGroup, *, what: str) -> None:
    """Kubernetes fsGroup: chgrp -R to the gid, group rw (+x/setgid on dirs), on a worker thread."""
    try:
        await asyncio.to_thread(_apply_fs_group, root, group)
    except OSError as err:
        raise Internal(
            f"{what}: set fsGroup {group.group_id} on {err.filename or str(root)!r}: {errname(err)}"
        ) from err


def set_fsgid(path: Path, gid_text: str, *, what: str) -> None:
    """The `fsgid=` option of ephemeral/local volumes: chgrp the root and set g+s (rwx)."""
    try:
        gid = int(gid_text)
    except ValueError:
        raise InvalidArgument(f"{what}: invalid fsgid {gid_text!r}") from None
    try:
        os.chown(path, -1, gid)
        mode = stat.S_IMODE(path.stat().st_mode)
        os.chmod(path, mode | stat.S_ISGID | stat.S_IRWXG)
    except OSError as err:
        raise Internal(f"{what}: set fsgid {gid} on {str(path)!r}: {errname(err)}") from err
