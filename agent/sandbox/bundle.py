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
from oci.spec import Spec
from oci.syscalls import Syscalls
from oci.syscalls.consts import MNT_DETACH, MS_BIND, MS_REC

log = logging.getLogger(__name__)


class Bundles:
    def __init__(self, run_dir: Path, syscalls: Syscalls) -> None:
        self.run_dir = run_dir
        self._sys = syscalls

    def path(self, container_id: str) -> Path:
        return self.run_dir / container_id

    def create(self, container_id: str, root_path: str, spec: Spec) -> Path:
        """Make the bundle: bind-mount ``root_path`` at ``rootfs``, write ``config.json``."""
        bundle = self.path(container_id)
        if not os.path.isdir(root_path):
            raise InvalidArgument(
                f"container {container_id}: root.path {root_path} is not a directory"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            bundle.mkdir(mode=0o711)
        except FileExistsError:
            raise AlreadyExists(
                f"container {container_id}: bundle {bundle} exists (a container with this id "
                "was not cleaned up)"
            ) from None
        rootfs = bundle / "rootfs"
        try:
            rootfs.mkdir()
            try:
                self._sys.mount(root_path, str(rootfs), None, MS_BIND | MS_REC, None)
            except OSError as err:
                raise Internal(
                    f"container {container_id}: bind mount {root_path} on {rootfs}: "
                    f"{errno.errorcode.get(err.errno or 0, '?')}: {os.strerror(err.errno or 0)}"
                ) from err
            (bundle / "config.json").write_text(spec.to_json())
        except BaseException:
            self.remove(container_id)
            raise
        return bundle

    def remove(self, container_id: str) -> None:
        """Unmount ``rootfs`` (lazily) and delete the bundle; a missing bundle is fine."""
        bundle = self.path(container_id)
        rootfs = bundle / "rootfs"
        for _ in range(8):  # stacked mounts: unmount until it is a plain directory again
            if not _is_mount_point(rootfs):
                break
            try:
                self._sys.umount2(str(rootfs), MNT_DETACH)
            except OSError as err:
                if err.errno in (errno.EINVAL, errno.ENOENT):
                    break
                raise Internal(
                    f"container {container_id}: unmount {rootfs}: {os.strerror(err.errno or 0)}"
                ) from err
        remove_tree(bundle)


def _is_mount_point(path: Path) -> bool:
    return mountinfo.is_mounted(path)


def remove_tree(top: Path) -> None:
    """``rm -rf top`` that never descends into another filesystem (a leftover mount): such a
    directory is left in place and reported, never emptied."""
    try:
        top_st = top.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(top_st.st_mode):
        top.unlink()
        return
    left = mountinfo.mounts_below(top)
    if left:
        raise Internal(f"remove {top}: {left[0].mount_point} is still mounted")
    _remove_dir(str(top), top_st.st_dev)


def _remove_dir(path: str, dev: int) -> None:
    with os.scandir(path) as entries:
        children = list(entries)
    for entry in children:
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev:
                raise Internal(f"remove {path}: {entry.path} is still a mount point")
            _remove_dir(entry.path, dev)
        else:
            os.unlink(entry.path)
    try:
        os.rmdir(path)
    except OSError as err:
        raise Internal(f"remove {path}: {os.strerror(err.errno or 0)}") from err
