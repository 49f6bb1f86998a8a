"""Shared steps of the drivers: the generic mount, undoing it, and fsGroup ownership."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from pathlib import Path

from agent.blocking import fs_pool
from agent.errors import AgentError, Internal, InvalidArgument
from agent.storage.env import Mounted, StorageEnv, errname
from agent.storage.model import FsGroup, FsGroupPolicy
from agent.storage.mountopts import MountOptions
from agent.storage.paths import MountPoint, StorageRoots, reach_mount
from oci import safepath
from oci.syscalls.consts import MNT_DETACH, MS_REMOUNT, UMOUNT_NOFOLLOW

log = logging.getLogger(__name__)


def _mount_now(
    env: StorageEnv, source: str, target: MountPoint, fstype: str, opts: MountOptions, what: str
) -> int | None:
    try:
        env.sys.mount(source, target.target, fstype or None, opts.flags, opts.data_str or None)
    except OSError as err:
        raise Internal(
            f"{what}: mount {source!r} on {str(target)!r} (type {fstype or 'none'}, "
            f"options {opts.data_str!r}): {errname(err)}"
        ) from err
    fd, mount_id = target.mounted()
    try:
        for prop in opts.propagation:
            env.sys.mount(None, safepath.proc_path(fd), None, prop, None)
    except OSError as err:
        with contextlib.suppress(OSError):
            env.sys.umount2(safepath.proc_path(fd), MNT_DETACH)
        raise Internal(f"{what}: set propagation on {str(target)!r}: {errname(err)}") from err
    finally:
        os.close(fd)
    return mount_id


async def mount(
    env: StorageEnv,
    source: str,
    target: MountPoint,
    fstype: str,
    opts: MountOptions,
    *,
    what: str,
    slow: bool = False,
) -> int | None:
    """mount(2) on exactly ``target``'s directory, plus propagation; a failed step leaves nothing
    mounted. Returns the new mount's id (None under a fake). `slow` → the filesystem pool."""
    if slow:
        mount_id = await fs_pool().run(_mount_now, env, source, target, fstype, opts, what)
    else:
        mount_id = _mount_now(env, source, target, fstype, opts, what)
    log.info("mounted", extra={"source": source, "target": str(target), "fstype": fstype})
    return mount_id


def unmount(
    env: StorageEnv,
    target: Path,
    *,
    what: str,
    mount_id: int | None = None,
    mount_point: MountPoint | None = None,
) -> None:
    """Unmount `target`; a busy mount is detached lazily; an absent one is fine. With
    `mount_id`, only that mount: found through the mount point directory held open
    (`mount_point`), else below run_dir, never through a symlink that leads out."""
    if mount_id is not None and mount_point is not None:
        fd, on_top = mount_point.mounted()
        try:
            if on_top is None:
                return  # nothing is mounted there any more
            if on_top == mount_id:
                env.sys.umount2(safepath.proc_path(fd), MNT_DETACH)
                return
        except OSError as err:
            raise Internal(f"{what}: unmount {str(target)!r}: {errname(err)}") from err
        finally:
            os.close(fd)
    if mount_id is not None:
        _unmount_by_id(env, target, what, mount_id)
        return
    try:
        env.sys.umount2(str(target), UMOUNT_NOFOLLOW)
    except OSError as err:
        if err.errno == errno.EINVAL:  # not a mount point (any more)
            return
        if err.errno == errno.EBUSY:
            try:
                env.sys.umount2(str(target), MNT_DETACH | UMOUNT_NOFOLLOW)
            except OSError as err2:
                raise Internal(f"{what}: unmount {str(target)!r}: {errname(err2)}") from err2
            return
        raise Internal(f"{what}: unmount {str(target)!r}: {errname(err)}") from err


def _unmount_by_id(env: StorageEnv, target: Path, what: str, mount_id: int) -> None:
    """Detach mount ``mount_id`` through an fd of it (found below run_dir wherever a rename
    moved it): never a path that a symlink swapped in could redirect."""
    try:
        fd = reach_mount(env.roots, mount_id)
    except AgentError as err:
        raise Internal(f"{what}: unmount {str(target)!r}: {err}") from err
    if fd is None:
        return  # unmounted already
    try:
        # the fd holds the mount: detach it (it goes when the fd is closed, right after)
        env.sys.umount2(safepath.proc_path(fd), MNT_DETACH)
    except OSError as err:
        raise Internal(f"{what}: unmount {str(target)!r}: {errname(err)}") from err
    finally:
        os.close(fd)


def remove_empty_dir(roots: StorageRoots, path: Path) -> None:
    """rmdir ``path`` if it is an empty directory below run_dir (its parent found there without
    following a symlink out)."""
    with contextlib.suppress(OSError, AgentError):
        rel = roots.relative(str(path), what="remove")
        parent_rel, _, name = rel.rpartition("/")
        root = roots.open()
        try:
            parent = safepath.resolve(root, parent_rel, os.O_PATH | os.O_DIRECTORY)
        finally:
            os.close(root)
        try:
            os.rmdir(name, dir_fd=parent)
        finally:
            os.close(parent)


def _group_mode(mode: int, is_dir: bool) -> int:
    new = mode | stat.S_IRGRP | stat.S_IWGRP
    if is_dir:
        new |= stat.S_IXGRP | stat.S_ISGID
    elif mode & stat.S_IXUSR:
        new |= stat.S_IXGRP
    return new


def _wanted(st: os.stat_result) -> int:
    return stat.S_IMODE(_group_mode(st.st_mode, stat.S_ISDIR(st.st_mode)))


def _apply_one(parent: int, name: str, fd: int, st: os.stat_result, gid: int) -> None:
    """chgrp and group bits of the entry open as ``fd`` (``O_PATH``): through its fd's /proc
    path, which is that inode (a swap cannot redirect it); a symlink itself, never its
    target."""
    if stat.S_ISLNK(st.st_mode):
        os.chown(name, -1, gid, dir_fd=parent, follow_symlinks=False)
        return
    if st.st_gid != gid:
        os.chown(safepath.proc_path(fd), -1, gid)
    if _wanted(st) != stat.S_IMODE(st.st_mode):
        os.chmod(safepath.proc_path(fd), _wanted(st))


def _walk_fs_group(dir_fd: int, gid: int) -> None:
    with os.scandir(dir_fd) as entries:
        names = [e.name for e in entries]
    for name in names:
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            continue  # removed meanwhile
        try:
            st = os.fstat(fd)
            _apply_one(dir_fd, name, fd, st, gid)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(safepath.proc_path(fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    _walk_fs_group(sub, gid)
                finally:
                    os.close(sub)
        finally:
            os.close(fd)


def _apply_fs_group(root: int, group: FsGroup) -> None:
    st = os.fstat(root)
    if (
        group.policy is FsGroupPolicy.ON_ROOT_MISMATCH
        and st.st_gid == group.group_id
        and stat.S_IMODE(st.st_mode) == _wanted(st)
    ):
        return
    if st.st_gid != group.group_id:
        os.fchown(root, -1, group.group_id)
    if _wanted(st) != stat.S_IMODE(st.st_mode):
        os.fchmod(root, _wanted(st))
    _walk_fs_group(root, group.group_id)


async def apply_fs_group(mounted: Mounted, group: FsGroup, *, what: str) -> None:
    """Kubernetes fsGroup: chgrp -R to the gid, group rw (+x/setgid on dirs), on the filesystem
    pool, entry by entry relative to directory fds (the volume may be written concurrently)."""

    def apply() -> None:
        if mounted.mount_point is not None:
            fd, _ = mounted.mount_point.mounted(os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(mounted.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            _apply_fs_group(fd, group)
        finally:
            os.close(fd)

    try:
        await fs_pool().run(apply)
    except OSError as err:
        raise Internal(
            f"{what}: set fsGroup {group.group_id} on {err.filename or str(mounted.path)!r}: "
            f"{errname(err)}"
        ) from err


def set_fsgid(fd: int, path: Path, gid_text: str, *, what: str) -> None:
    """The `fsgid=` option of ephemeral/local volumes: chgrp the root (the directory open as
    `fd`) and set g+s (rwx)."""
    try:
        gid = int(gid_text)
    except ValueError:
        raise InvalidArgument(f"{what}: invalid fsgid {gid_text!r}") from None
    if not 0 <= gid <= 0xFFFFFFFE:
        raise InvalidArgument(f"{what}: fsgid {gid} is out of range")
    try:
        os.fchown(fd, -1, gid)
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.fchmod(fd, mode | stat.S_ISGID | stat.S_IRWXG)
    except OSError as err:
        raise Internal(f"{what}: set fsgid {gid} on {str(path)!r}: {errname(err)}") from err


def remount(
    env: StorageEnv, target: MountPoint, fstype: str, opts: MountOptions, *, what: str
) -> None:
    """Change the options of the mount on `target` (MS_REMOUNT acts on the mount, found again
    below run_dir)."""
    fd, _ = target.mounted()
    try:
        env.sys.mount(
            fstype,
            safepath.proc_path(fd),
            fstype,
            opts.flags | MS_REMOUNT,
            opts.data_str or None,
        )
    except OSError as err:
        raise Internal(
            f"{what}: remount {str(target)!r} with {opts.data_str!r}: {errname(err)}"
        ) from err
    finally:
        os.close(fd)
