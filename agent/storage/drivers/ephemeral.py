"""`ephemeral`: memory-backed volumes created in the guest (emptyDir medium=Memory, /dev/shm).

tmpfs: unlike the Rust agent, which drops every option but `fsgid=`, we honour them (`size=`,
`mode=`, `nr_inodes=`, ...), so the sandbox /dev/shm gets the size the pod asked for.
hugetlbfs: `pagesize=` and `size=` select the page pool; size/pagesize pages are added to
/sys/kernel/mm/hugepages/hugepages-<kB>kB/nr_hugepages and must be fully allocated before the
mount (they are given back when the volume is released).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from agent.errors import InvalidArgument, ResourceExhausted
from agent.storage import mountopts
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv, oserror
from agent.storage.model import Storage
from agent.storage.paths import ensure_dir

log = logging.getLogger(__name__)


def hugepages_file(sysfs: Path, pagesize: int) -> Path:
    return (
        sysfs / "kernel" / "mm" / "hugepages" / f"hugepages-{pagesize // 1024}kB" / "nr_hugepages"
    )


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def reserve_hugepages(sysfs: Path, pagesize: int, count: int, *, what: str) -> None:
    """Grow the pool by `count` pages; all of them or none (the pool is restored on shortfall)."""
    nr = hugepages_file(sysfs, pagesize)
    if not nr.exists():
        raise InvalidArgument(f"{what}: huge page size {pagesize} is not supported ({nr} missing)")
    try:
        before = _read_int(nr)
        nr.write_text(str(before + count))
        after = _read_int(nr)
    except OSError as err:
        raise oserror(what, f"reserve {count} huge pages in {nr}", err) from err
    if after < before + count:
        with contextlib.suppress(OSError):
            nr.write_text(str(before))
        raise ResourceExhausted(
            f"{what}: could allocate only {after - before} of {count} huge pages of "
            f"{pagesize} bytes ({nr})"
        )


def release_hugepages(sysfs: Path, pagesize: int, count: int) -> None:
    nr = hugepages_file(sysfs, pagesize)
    try:
        cur = _read_int(nr)
        nr.write_text(str(max(0, cur - count)))
    except OSError as err:
        log.warning("could not give back huge pages", extra={"file": str(nr), "error": str(err)})


class Ephemeral:
    name = "ephemeral"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        if storage.fstype == "hugetlbfs":
            return await self._hugetlbfs(env, storage, what)
        fstype = storage.fstype or "tmpfs"
        if fstype != "tmpfs":
            raise InvalidArgument(f"{what}: ephemeral fstype {fstype!r} (tmpfs or hugetlbfs)")
        options = mountopts.without(storage.options, "fsgid")
        opts = mountopts.parse(options)
        with ensure_dir(env.roots, storage.mount_point, what=what) as target:
            mount_id = await common.mount(
                env, storage.source or "tmpfs", target, "tmpfs", opts, what=what
            )
            gid = mountopts.value(storage.options, "fsgid")
            if gid is not None:
                try:
                    fd, _ = target.mounted(os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        common.set_fsgid(fd, target.path, gid, what=what)
                    finally:
                        os.close(fd)
                except BaseException:
                    common.unmount(
                        env, target.path, what=what, mount_id=mount_id, mount_point=target
                    )
                    raise
            return Mounted(target.path, mount_id=mount_id, mount_point=target.keep())

    async def _hugetlbfs(self, env: StorageEnv, storage: Storage, what: str) -> Mounted:
        ps_text = mountopts.value(storage.options, "pagesize")
        size_text = mountopts.value(storage.options, "size")
        if ps_text is None or size_text is None:
            raise InvalidArgument(f"{what}: hugetlbfs needs pagesize= and size= options")
        pagesize = mountopts.parse_size(ps_text, what=f"{what}: pagesize")
        size = mountopts.parse_size(size_text, what=f"{what}: size")
        if pagesize <= 0 or size % pagesize:
            raise InvalidArgument(
                f"{what}: size {size} is not a multiple of the huge page size {pagesize}"
            )
        count = size // pagesize
        target = ensure_dir(env.roots, storage.mount_point, what=what)
        try:
            reserve_hugepages(env.sysfs, pagesize, count, what=what)
        except BaseException:
            target.close()
            raise
        options = [*mountopts.without(storage.options, "pagesize", "size", "fsgid")]
        options += [f"pagesize={pagesize}", f"size={size}"]
        try:
            with target:
                mount_id = await common.mount(
                    env,
                    storage.source or "nodev",
                    target,
                    "hugetlbfs",
                    mountopts.parse(options),
                    what=what,
                )
                kept = target.keep()
        except BaseException:
            release_hugepages(env.sysfs, pagesize, count)
            raise
        sysfs = env.sysfs

        async def give_back() -> None:
            release_hugepages(sysfs, pagesize, count)

        return Mounted(target.path, on_release=[give_back], mount_id=mount_id, mount_point=kept)

    async def remount(self, env: StorageEnv, storage: Storage) -> None:
        """UpdateEphemeralMounts: re-mount a tmpfs with new options (e.g. a new size=)."""
        what = storage.describe()
        options = mountopts.without(storage.options, "fsgid")
        if not options:
            return
        with ensure_dir(env.roots, storage.mount_point, what=what) as target:
            common.remount(env, target, "tmpfs", mountopts.parse(options), what=what)
