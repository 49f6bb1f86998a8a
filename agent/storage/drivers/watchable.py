"""`watchable-bind`: configmaps/secrets over a share without inotify (reference doc §3.2).

The source (a directory on the shared filesystem) is mirrored into a tmpfs at the mount point and
re-synchronised every `env.watch_interval` seconds (2 s), so containers see updates through
inotify on the tmpfs. A source with more than 16 entries or more than 1 MiB, or a single file, is
bind-mounted instead (and a mirror that grows beyond the limits is switched to a bind mount).

The source can be written by the host and the mirror by the container it is mounted into, so
the copy works on file descriptors only: the source directory and the tmpfs root are held open
for the mirror's life, every entry is opened relative to its directory's fd without following a
symlink (`oci.safepath`), a file is read only after its type was checked (a FIFO or device is
skipped, never opened), and the scan stops at the size limits instead of walking a huge tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import stat
from dataclasses import dataclass

from agent.blocking import fs_pool
from agent.errors import AgentError, Internal, NotFound, PermissionDenied
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage
from agent.storage.mountopts import MountOptions
from agent.storage.paths import MountPoint, ensure_dir, ensure_file
from oci import safepath
from oci.syscalls.consts import MS_BIND, MS_REC

log = logging.getLogger(__name__)

MAX_ENTRIES = 16
MAX_BYTES = 1 << 20
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str  # "d", "f", "l"
    size: int
    mtime_ns: int
    mode: int
    link: str


class TooBig(Exception):
    """The tree has more than MAX_ENTRIES entries or MAX_BYTES bytes."""


def scan(root_fd: int, *, limit: bool = True) -> dict[str, _Node]:
    """The tree below the directory ``root_fd``, entry by entry relative to directory fds;
    TooBig as soon as it exceeds the limits (with ``limit``)."""
    out: dict[str, _Node] = {}
    total = 0

    def walk(fd: int, prefix: str) -> None:
        nonlocal total
        with os.scandir(fd) as entries:
            items = [(e.name, e.stat(follow_symlinks=False)) for e in entries]
        for name, st in items:
            rel = f"{prefix}{name}"
            if stat.S_ISLNK(st.st_mode):
                out[rel] = _Node("l", 0, 0, 0, os.readlink(name, dir_fd=fd))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = _Node("d", 0, 0, stat.S_IMODE(st.st_mode), "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = _Node("f", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), "")
                total += st.st_size
            else:
                continue  # FIFOs, devices, sockets are not mirrored
            if limit and (len(out) > MAX_ENTRIES or total > MAX_BYTES):
                raise TooBig
            if out[rel].kind == "d":
                try:
                    sub = os.open(name, _DIR, dir_fd=fd)
                except OSError:
                    continue  # swapped meanwhile: the next refresh sees what it became
                try:
                    walk(sub, f"{rel}/")
                finally:
                    os.close(sub)

    walk(root_fd, "")
    return out


def too_big(root_fd: int) -> bool:
    try:
        scan(root_fd)
    except TooBig:
        return True
    return False


def _parent(root_fd: int, rel: str) -> tuple[int, str]:
    """(fd of rel's directory below root_fd, no symlink on the way; rel's last name)."""
    head, _, name = rel.rpartition("/")
    fd = safepath.resolve(root_fd, head, os.O_PATH | os.O_DIRECTORY, how=safepath.NO_SYMLINKS)
    return fd, name


def _remove(dst_fd: int, rel: str, node: _Node) -> None:
    try:
        parent, name = _parent(dst_fd, rel)
    except OSError:
        return  # its directory went first
    try:
        if node.kind == "d":
            shutil.rmtree(name, dir_fd=parent, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent)
    finally:
        os.close(parent)


def _copy_file(src_fd: int, dst_fd: int, rel: str, node: _Node) -> None:
    try:
        src = safepath.open_file(src_fd, rel, os.O_RDONLY, how=safepath.NO_SYMLINKS)
    except (FileNotFoundError, safepath.WrongType):
        return  # removed or replaced meanwhile: the next refresh sees it
    try:
        st = os.fstat(src)
        data = os.read(src, min(st.st_size, MAX_BYTES) + 1)
        while len(data) <= st.st_size and len(data) <= MAX_BYTES:
            more = os.read(src, MAX_BYTES + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) > MAX_BYTES:
            raise TooBig
    finally:
        os.close(src)
    parent, name = _parent(dst_fd, rel)
    tmp = f".{name}.kata-tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=parent)
        out = safepath.open_at(parent, tmp, os.O_WRONLY, node.mode, create=True)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(out, view) :]
            os.fchmod(out, node.mode)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(out)
        os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)


def sync_tree(src_fd: int, dst_fd: int, src_nodes: dict[str, _Node]) -> int:
    """Make the tree of ``dst_fd`` a copy of ``src_fd``'s; returns the number of changed entries."""
    dst_nodes = scan(dst_fd, limit=False)
    changes = 0
    for rel in sorted(dst_nodes, reverse=True):
        old = src_nodes.get(rel)
        cur = dst_nodes[rel]
        if old is None or old.kind != cur.kind or (old.kind == "l" and old.link != cur.link):
            _remove(dst_fd, rel, cur)
            del dst_nodes[rel]
            changes += 1
    for rel in sorted(src_nodes):
        s = src_nodes[rel]
        d = dst_nodes.get(rel)
        if (
            d is not None
            and d.kind == s.kind
            and (s.kind != "f" or (d.size == s.size and d.mtime_ns == s.mtime_ns))
        ):
            continue
        parent, name = _parent(dst_fd, rel)
        try:
            if s.kind == "d":
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, s.mode, dir_fd=parent)
            elif s.kind == "l":
                os.symlink(s.link, name, dir_fd=parent)
        finally:
            os.close(parent)
        if s.kind == "f":
            _copy_file(src_fd, dst_fd, rel, s)
        changes += 1
    return changes


class _Mirror:
    def __init__(
        self,
        env: StorageEnv,
        src_fd: int,
        target: MountPoint,
        mounted: Mounted,
        what: str,
    ) -> None:
        self.env = env
        self.src_fd = src_fd  # the source directory, held for the mirror's life
        self.target = target  # the mount point (its fd: the directory below the tmpfs)
        self.mounted = mounted
        self.what = what
        self.bound = False
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while not self.bound:
            await asyncio.sleep(self.env.watch_interval)
            try:
                await self.refresh()
            except (OSError, AgentError) as err:
                log.warning(
                    "watchable refresh failed", extra={"storage": self.what, "error": str(err)}
                )

    async def refresh(self) -> None:
        if await fs_pool().run(self._sync):
            await self.switch_to_bind()

    def _sync(self) -> bool:
        """One refresh on the filesystem pool; True: the source is too big for a mirror."""
        try:
            nodes = scan(self.src_fd)
        except TooBig:
            return True
        dst_fd, _ = self.target.mounted(os.O_RDONLY | os.O_DIRECTORY)
        try:
            changed = sync_tree(self.src_fd, dst_fd, nodes)
        except TooBig:
            return True
        finally:
            os.close(dst_fd)
        if changed:
            log.debug("watchable refreshed", extra={"storage": self.what, "changes": changed})
        return False

    async def switch_to_bind(self) -> None:
        common.unmount(
            self.env,
            self.target.path,
            what=self.what,
            mount_id=self.mounted.mount_id,
            mount_point=self.target,
        )
        self.mounted.mount_id = await bind(self.env, self.src_fd, self.target, what=self.what)
        self.bound = True
        log.info("watchable source too big, switched to a bind mount", extra={"storage": self.what})

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        os.close(self.src_fd)
        self.target.close()


async def bind(env: StorageEnv, src_fd: int, target: MountPoint, *, what: str) -> int | None:
    """Bind-mount the directory or file open as ``src_fd`` (not a path: it cannot be swapped)."""
    opts = MountOptions(flags=MS_BIND | MS_REC)
    source = safepath.proc_path(src_fd)
    return await common.mount(env, source, target, "bind", opts, what=what, slow=True)


def _open_source(env: StorageEnv, storage: Storage, what: str) -> int:
    rel = env.roots.relative(storage.source, what=f"{what}: source")
    root = env.roots.open()
    try:
        return safepath.resolve(root, rel)
    except FileNotFoundError:
        raise NotFound(f"{what}: source {storage.source!r} does not exist") from None
    except OSError as err:
        code = errno.errorcode.get(err.errno or 0, "?")
        raise PermissionDenied(
            f"{what}: source {storage.source!r} leads outside {env.roots.run_dir} ({code})"
        ) from err
    finally:
        os.close(root)


class WatchableBind:
    name = "watchable-bind"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        src = _open_source(env, storage, what)
        try:
            return await self._mount(env, storage, src, what)
        finally:
            os.close(src)

    async def _mount(self, env: StorageEnv, storage: Storage, src: int, what: str) -> Mounted:
        is_dir = stat.S_ISDIR(os.fstat(src).st_mode)
        small = False
        dir_fd = -1
        if is_dir:
            dir_fd = os.open(safepath.proc_path(src), os.O_RDONLY | os.O_DIRECTORY)
            try:
                await fs_pool().run(scan, dir_fd)
                small = True
            except TooBig:
                small = False
            finally:
                if not small:
                    os.close(dir_fd)
        if not small:
            with (
                ensure_dir(env.roots, storage.mount_point, what=what)
                if is_dir
                else ensure_file(env.roots, storage.mount_point, what=what)
            ) as target:
                mount_id = await bind(env, src, target, what=what)
                return Mounted(
                    target.path, remove_dir=is_dir, mount_id=mount_id, mount_point=target.keep()
                )
        target = ensure_dir(env.roots, storage.mount_point, what=what)
        try:
            mount_id = await common.mount(
                env, "tmpfs", target, "tmpfs", MountOptions(data=("mode=0755",)), what=what
            )
        except BaseException:
            target.close()
            os.close(dir_fd)
            raise
        mounted = Mounted(target.path, mount_id=mount_id, mount_point=target.keep())
        mirror = _Mirror(env, dir_fd, target, mounted, what)
        try:
            if await fs_pool().run(mirror._sync):
                await mirror.switch_to_bind()
        except (OSError, AgentError) as err:
            common.unmount(env, target.path, what=what, mount_id=mount_id, mount_point=target)
            await mirror.stop()
            if mounted.mount_point is not None:
                mounted.mount_point.close()
            raise Internal(f"{what}: copy {storage.source} to the tmpfs mirror: {err}") from err
        mirror.task = asyncio.get_running_loop().create_task(
            mirror.run(), name=f"watchable {target.path}"
        )
        mounted.on_release.append(mirror.stop)
        return mounted
