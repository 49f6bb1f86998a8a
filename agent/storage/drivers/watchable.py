"""`watchable-bind`: configmaps/secrets over a share without inotify (reference doc §3.2).

The source (a directory on the shared filesystem) is mirrored into a tmpfs at the mount point and
re-synchronised every `env.watch_interval` seconds (2 s), so containers see updates through
inotify on the tmpfs. A source with more than 16 entries or more than 1 MiB, or a single file, is
bind-mounted instead (and a mirror that grows beyond the limits is switched to a bind mount).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError, Internal, NotFound
from agent.storage.drivers import common
from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage
from agent.storage.mountopts import MountOptions
from agent.storage.paths import confine, ensure_dir
from oci.syscalls.consts import MS_BIND, MS_REC

log = logging.getLogger(__name__)

MAX_ENTRIES = 16
MAX_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class _Node:
    kind: str  # "d", "f", "l"
    size: int
    mtime_ns: int
    mode: int
    link: str


def scan(root: Path) -> dict[str, _Node]:
    out: dict[str, _Node] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = _Node("l", 0, 0, 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = _Node("d", 0, 0, stat.S_IMODE(st.st_mode), "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = _Node("f", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), "")
    return out


def too_big(nodes: dict[str, _Node]) -> bool:
    return len(nodes) > MAX_ENTRIES or sum(n.size for n in nodes.values()) > MAX_BYTES


def sync_tree(src: Path, dst: Path, src_nodes: dict[str, _Node]) -> int:
    """Make `dst` a copy of `src`; returns the number of changed entries."""
    dst_nodes = scan(dst)
    changes = 0
    for rel in sorted(dst_nodes, reverse=True):
        old = src_nodes.get(rel)
        cur = dst_nodes[rel]
        if old is None or old.kind != cur.kind or (old.kind == "l" and old.link != cur.link):
            p = dst / rel
            if cur.kind == "d":
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            changes += 1
    for rel in sorted(src_nodes):
        s = src_nodes[rel]
        d = dst_nodes.get(rel)
        p = dst / rel
        if s.kind == "d":
            if not p.is_dir() or p.is_symlink():
                p.mkdir(mode=s.mode, exist_ok=True)
                changes += 1
        elif s.kind == "l":
            if not p.is_symlink():
                os.symlink(s.link, p)
                changes += 1
        elif d is None or d.kind != "f" or d.size != s.size or d.mtime_ns != s.mtime_ns:
            tmp = p.with_name(f".{p.name}.kata-tmp")
            shutil.copy2(src / rel, tmp)
            os.replace(tmp, p)
            changes += 1
    return changes


class _Mirror:
    def __init__(self, env: StorageEnv, src: Path, dst: Path, what: str) -> None:
        self.env = env
        self.src = src
        self.dst = dst
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
        nodes = await asyncio.to_thread(scan, self.src)
        if too_big(nodes):
            await self.switch_to_bind()
            return
        changed = await asyncio.to_thread(sync_tree, self.src, self.dst, nodes)
        if changed:
            log.debug("watchable refreshed", extra={"storage": self.what, "changes": changed})

    async def switch_to_bind(self) -> None:
        common.unmount(self.env, self.dst, what=self.what)
        await bind(self.env, self.src, self.dst, what=self.what)
        self.bound = True
        log.info("watchable source too big, switched to a bind mount", extra={"storage": self.what})

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


async def bind(env: StorageEnv, src: Path, dst: Path, *, what: str) -> None:
    opts = MountOptions(flags=MS_BIND | MS_REC)
    await common.mount(env, str(src), dst, "bind", opts, what=what, slow=True)


class WatchableBind:
    name = "watchable-bind"

    async def mount(self, env: StorageEnv, storage: Storage, container_id: str | None) -> Mounted:
        what = storage.describe()
        src = confine(env.roots, storage.source, what=f"{what}: source")
        if not src.exists():
            raise NotFound(f"{what}: source {storage.source!r} does not exist")
        if src.is_dir():
            nodes = await asyncio.to_thread(scan, src)
            small = not too_big(nodes)
        else:
            nodes, small = {}, False
        if not small:
            if src.is_dir():
                target = ensure_dir(env.roots, storage.mount_point, what=what)
            else:
                target = confine(env.roots, storage.mount_point, what=what)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch(exist_ok=True)
            await bind(env, src, target, what=what)
            return Mounted(target, remove_dir=src.is_dir())
        target = ensure_dir(env.roots, storage.mount_point, what=what)
        await common.mount(
            env, "tmpfs", target, "tmpfs", MountOptions(data=("mode=0755",)), what=what
        )
        try:
            await asyncio.to_thread(sync_tree, src, target, nodes)
        except OSError as err:
            common.unmount(env, target, what=what)
            raise Internal(f"{what}: copy {src} to the tmpfs mirror: {err}") from err
        mirror = _Mirror(env, src, target, what)
        mirror.task = asyncio.get_running_loop().create_task(
            mirror.run(), name=f"watchable {target}"
        )
        return Mounted(target, on_release=[mirror.stop])
