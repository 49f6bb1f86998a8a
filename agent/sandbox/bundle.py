"""Kata's bundle layout under ``<run_dir>``: ``<run_dir>/<cid>/{config.json,rootfs}``.

``rootfs`` is a bind mount of the spec's original ``root.path``; ``config.json`` is the spec the
engine runs (with ``root.path`` pointing at that bind mount). Removal lazily unmounts ``rootfs``
and deletes the directory without ever crossing into another mount.

Mounts go through the `oci.syscalls` seam (injected, so unit tests record them). Paths are only
ever below ``run_dir``; container ids are validated before they get here.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

from agent.errors import AlreadyExists, Internal, InvalidArgument
from agent.storage import mountinfo
from oci import safepath
from oci.spec import Spec
from oci.syscalls.api import Syscalls
from oci.syscalls.consts import MNT_DETACH, MS_BIND, MS_REC

log = logging.getLogger(__name__)


class Bundles:
    def __init__(self, run_dir: Path, syscalls: Syscalls) -> None:
        self.run_dir = run_dir
        self._sys = syscalls

    def path(self, container_id: str) -> Path:
        """The bundle directory, as mountinfo spells it (symlinks in run_dir resolved)."""
        return Path(os.path.realpath(self.run_dir)) / container_id

    def create(self, container_id: str, root_path: str, spec: Spec) -> Path:
        """Make the bundle: bind-mount ``root_path`` at ``rootfs``, write ``config.json``.

        Everything happens on fds: the bundle and its ``rootfs`` directory are made and opened
        below run_dir without following a symlink, the source is opened once and bind-mounted
        through its fd, and ``config.json`` is created (``O_EXCL``) relative to the bundle's."""
        bundle = self.path(container_id)
        try:
            src = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            raise InvalidArgument(
                f"container {container_id}: root.path {root_path} is not a directory"
            ) from None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            root = safepath.open_root(self.run_dir)
            try:
                os.mkdir(container_id, 0o711, dir_fd=root)
            except FileExistsError:
                raise AlreadyExists(
                    f"container {container_id}: bundle {bundle} exists (a container with this "
                    "id was not cleaned up)"
                ) from None
            finally:
                os.close(root)
            try:
                self._fill(container_id, bundle, src, root_path, spec)
            except BaseException:
                self.remove(container_id)
                raise
        finally:
            os.close(src)
        return bundle

    def _fill(self, container_id: str, bundle: Path, src: int, root_path: str, spec: Spec) -> None:
        flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        bundle_fd = os.open(bundle, flags)
        try:
            os.mkdir("rootfs", dir_fd=bundle_fd)
            rootfs_fd = os.open("rootfs", flags, dir_fd=bundle_fd)
            try:
                self._sys.mount(
                    safepath.proc_path(src),
                    safepath.proc_path(rootfs_fd),
                    None,
                    MS_BIND | MS_REC,
                    None,
                )
            except OSError as err:
                raise Internal(
                    f"container {container_id}: bind mount {root_path} on {bundle}/rootfs: "
                    f"{errno.errorcode.get(err.errno or 0, '?')}: {os.strerror(err.errno or 0)}"
                ) from err
            finally:
                os.close(rootfs_fd)
            fd = safepath.open_at(bundle_fd, "config.json", os.O_WRONLY, 0o644, create=True)
            with os.fdopen(fd, "w") as f:
                f.write(spec.to_json())
        finally:
            os.close(bundle_fd)

    def remove(self, container_id: str) -> None:
        """Unmount ``rootfs`` (lazily, with whatever is below it) and delete the bundle; a
        missing bundle is fine. Anything else mounted in the bundle stops the removal: nothing
        is ever deleted through a mount. One mountinfo read."""
        bundle = self.path(container_id)
        rootfs = str(bundle / "rootfs")
        below = [e.mount_point for e in mountinfo.mounts_below(bundle)]
        for _ in range(below.count(rootfs)):  # stacked mounts: one detach each
            try:
                self._sys.umount2(rootfs, MNT_DETACH)
            except OSError as err:
                if err.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise Internal(
                    f"container {container_id}: unmount {rootfs}: {os.strerror(err.errno or 0)}"
                ) from err
        others = [m for m in below if m != rootfs and not m.startswith(rootfs + "/")]
        if others:
            raise Internal(f"container {container_id}: remove {bundle}: {others[0]} is mounted")
        remove_tree(bundle, check_mounts=False)


def remove_tree(top: Path, *, check_mounts: bool = True) -> None:
    """``rm -rf top`` that never deletes through a mount: with ``check_mounts`` a mount below
    ``top`` stops it first (from mountinfo, which also sees same-filesystem bind mounts), and a
    directory on another filesystem is never descended into."""
    try:
        top_st = top.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top_st.st_mode):
        top.unlink()
        return
    if check_mounts:
        left = mountinfo.mounts_below(top)
        if left:
            raise Internal(f"remove {top}: {left[0].mount_point} is still mounted")
    _remove_dir(str(top), top_st.st_dev)


def _mount_id(path: str) -> int:
    """The id of the mount ``path`` is on (``mnt_id`` in /proc/self/fdinfo): unlike ``st_dev``
    it also tells a bind mount of the same filesystem apart, whatever path spelling is used."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    finally:
        os.close(fd)
    raise Internal(f"no mnt_id for {path} in /proc/self/fdinfo")


def _remove_dir(path: str, dev: int, mnt: int | None = None) -> None:
    if mnt is None:
        mnt = _mount_id(path)
    with os.scandir(path) as entries:
        children = list(entries)
    for entry in children:
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev or _mount_id(entry.path) != mnt:
                raise Internal(f"remove {path}: {entry.path} is a mount point")
            _remove_dir(entry.path, dev, mnt)
        else:
            os.unlink(entry.path)
    try:
        os.rmdir(path)
    except OSError as err:
        raise Internal(f"remove {path}: {os.strerror(err.errno or 0)}") from err
