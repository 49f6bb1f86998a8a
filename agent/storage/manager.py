"""The storage registry: driver name → driver, and the ref-counted mounts of the sandbox.

Mounts are keyed by their (confined) mount point. A second container asking for a mount point that
is already mounted only takes a reference. `release(container_id)` drops that container's
references and unmounts at zero, unless the storage was `shared` (kept until `release_all`, at
sandbox end). `add_storages` is all-or-nothing: on failure the storages it already took in that
call are released again, so nothing stays half-mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.blocking import fs_pool
from agent.errors import AgentError, FailedPrecondition, Internal, InvalidArgument, NotFound
from agent.storage import mountinfo, mountopts
from agent.storage.drivers import common
from agent.storage.drivers.base import Driver
from agent.storage.drivers.block import Blk, MmioBlk, Nvdimm, Scsi
from agent.storage.drivers.ephemeral import Ephemeral
from agent.storage.drivers.local import Local
from agent.storage.drivers.overlay import Overlay
from agent.storage.drivers.shared_fs import NineP, VirtioFs
from agent.storage.drivers.watchable import WatchableBind
from agent.storage.env import Mounted, StorageEnv
from agent.storage.model import Storage
from agent.storage.paths import PATH_MAX, confine
from oci import safepath

log = logging.getLogger(__name__)

SANDBOX = ""  # owner key of the storages CreateSandbox mounts


def default_drivers() -> dict[str, Driver]:
    drivers: list[Driver] = [
        VirtioFs(),
        NineP(),
        Local(),
        Ephemeral(),
        Overlay(),
        Blk(),
        MmioBlk(),
        Scsi(),
        Nvdimm(),
        WatchableBind(),
    ]
    return {d.name: d for d in drivers}


@dataclass(eq=False)
class _Entry:
    storage: Storage
    mounted: Mounted
    owners: list[str] = field(default_factory=list)  # one item per reference

    @property
    def refs(self) -> int:
        return len(self.owners)


class StorageManager:
    def __init__(self, env: StorageEnv, drivers: Mapping[str, Driver] | None = None) -> None:
        self._env = env
        self._drivers: dict[str, Driver] = dict(
            drivers if drivers is not None else default_drivers()
        )
        self._entries: dict[Path, _Entry] = {}
        self._locks: dict[Path, asyncio.Lock] = {}

    @property
    def env(self) -> StorageEnv:
        return self._env

    def driver_names(self) -> list[str]:
        return sorted(self._drivers)

    def refcount(self, mount_point: str | Path) -> int:
        e = self._entries.get(Path(os.path.normpath(mount_point)))
        if e is None:
            e = self._entries.get(confine(self._env.roots, str(mount_point), what="storage"))
        return e.refs if e else 0

    def mount_points(self, container_id: str | None = None) -> list[str]:
        owner = SANDBOX if container_id is None else container_id
        return [str(k) for k, e in self._entries.items() if owner in e.owners]

    def _lock(self, key: Path) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _driver(self, storage: Storage) -> Driver:
        driver = self._drivers.get(storage.driver)
        if driver is None:
            raise InvalidArgument(f"Failed to find the storage handler {storage.driver}")
        return driver

    async def add_storages(
        self, storages: Sequence[Storage], container_id: str | None
    ) -> list[str]:
        """Mount (or reference) each storage in order; returns their mount points."""
        owner = SANDBOX if container_id is None else container_id
        taken: list[Path] = []
        try:
            for storage in storages:
                driver = self._driver(storage)
                key = confine(self._env.roots, storage.mount_point, what=storage.describe())
                async with self._lock(key):
                    entry = self._entries.get(key)
                    if entry is None:
                        existed = await fs_pool().run(os.path.lexists, key)
                        started = time.monotonic()
                        try:
                            mounted = await driver.mount(self._env, storage, container_id)
                        except BaseException:
                            if not existed:
                                common.remove_empty_dir(self._env.roots, key)
                            raise
                        try:
                            if storage.fs_group is not None and not _readonly(storage):
                                await common.apply_fs_group(
                                    mounted, storage.fs_group, what=storage.describe()
                                )
                        except BaseException:
                            await self._undo(mounted, storage)
                            raise
                        entry = self._entries[key] = _Entry(storage, mounted)
                        log.info(
                            "storage mounted",
                            extra={
                                "storage": storage.describe(),
                                "seconds": round(time.monotonic() - started, 4),
                            },
                        )
                    entry.owners.append(owner)
                    taken.append(key)
        except BaseException:
            for key in reversed(taken):
                with contextlib.suppress(AgentError):
                    await self._drop(key, owner, force=True)
            raise
        return [str(k) for k in taken]

    async def release(self, container_id: str | None) -> None:
        """Drop every reference `container_id` holds; unmount what reaches zero (unless shared)."""
        owner = SANDBOX if container_id is None else container_id
        errors: list[str] = []
        for key in [k for k, e in self._entries.items() if owner in e.owners]:
            while key in self._entries and owner in self._entries[key].owners:
                try:
                    await self._drop(key, owner, force=False)
                except AgentError as err:
                    errors.append(str(err))
                    break
        if errors:
            raise errors_to_error(errors)

    async def release_all(self) -> None:
        """Sandbox end: unmount everything, shared storages included, in reverse mount order."""
        errors: list[str] = []
        for key in reversed(list(self._entries)):
            try:
                async with self._lock(key):
                    entry = self._entries.get(key)
                    if entry is not None:
                        await self._undo(entry.mounted, entry.storage)
                        del self._entries[key]
            except AgentError as err:
                errors.append(str(err))
        self._locks.clear()
        if errors:
            raise errors_to_error(errors)

    async def _drop(self, key: Path, owner: str, *, force: bool) -> None:
        async with self._lock(key):
            entry = self._entries.get(key)
            if entry is None or owner not in entry.owners:
                return
            entry.owners.remove(owner)
            if entry.owners or (entry.storage.shared and not force):
                return
            await self._undo(entry.mounted, entry.storage)
            del self._entries[key]  # kept on failure: release_all tries again

    async def _undo(self, mounted: Mounted, storage: Storage) -> None:
        what = storage.describe()
        while mounted.on_release:  # each hook once, even when a later step fails and is retried
            await mounted.on_release.pop()()
        if mounted.unmount:
            common.unmount(
                self._env,
                mounted.path,
                what=what,
                mount_id=mounted.mount_id,
                mount_point=mounted.mount_point,
            )
        if mounted.mount_point is not None:
            mounted.mount_point.close()
        if mounted.remove_dir:
            common.remove_empty_dir(self._env.roots, mounted.path)
        log.info("storage released", extra={"storage": what})

    async def update_ephemeral_mounts(self, storages: Iterable[Storage]) -> None:
        ephemeral = self._drivers.get("ephemeral")
        for storage in storages:
            if storage.driver != "ephemeral" or not isinstance(ephemeral, Ephemeral):
                raise InvalidArgument(
                    f"{storage.describe()}: only ephemeral storages can be updated"
                )
            await ephemeral.remount(self._env, storage)

    async def stat_shared_mounts(self) -> None:
        """RemoveStaleVirtiofsShareMounts: stat every mount below the shared containers dir."""
        prefix = self._env.roots.containers_dir

        def touch() -> None:
            for e in mountinfo.mounts_below(prefix, self._env.proc):
                with contextlib.suppress(OSError):
                    os.stat(e.mount_point)

        await fs_pool().run(touch)  # a stat of a stalled share blocks: not on the shared pool

    def volume(self, path: str) -> tuple[Path, Storage, Mounted]:
        """The storage mounted at ``path`` (GetVolumeStats, ResizeVolume): only a mount point the
        host asked for through a storage is a volume; anything else is INVALID_ARGUMENT."""
        if not path:
            raise InvalidArgument("volume_guest_path: empty")
        if "\0" in path or len(path) > PATH_MAX or not os.path.isabs(path):
            raise InvalidArgument(
                f"volume_guest_path: {path[:200]!r} is not an absolute path of at most "
                f"{PATH_MAX} bytes"
            )
        key = Path(os.path.normpath(path))
        entry = self._entries.get(key)
        if entry is None:
            with contextlib.suppress(AgentError):
                key = confine(self._env.roots, path, what="volume")
                entry = self._entries.get(key)
        if entry is None:
            raise InvalidArgument(
                f"volume_guest_path: {path!r} is not a volume mounted through a storage"
            )
        return key, entry.storage, entry.mounted

    def open_volume(self, key: Path, mounted: Mounted) -> int:
        """An ``O_PATH`` fd of the volume's mount point, found below run_dir without following a
        symlink out, and only while the storage's own mount is still the one there."""
        roots = self._env.roots
        root = roots.open()
        try:
            fd = safepath.resolve(root, os.path.relpath(key, safepath.real_path(root)))
        except OSError as err:
            raise FailedPrecondition(
                f"volume {str(key)!r} cannot be opened: {os.strerror(err.errno or 0)}"
            ) from err
        finally:
            os.close(root)
        if mounted.mount_id is not None and safepath.mount_id(fd) != mounted.mount_id:
            os.close(fd)
            raise FailedPrecondition(f"volume {str(key)!r} is no longer mounted there")
        return fd

    def find(self, mount_point: str) -> Storage:
        key = confine(self._env.roots, mount_point, what="storage")
        e = self._entries.get(key)
        if e is None:
            raise NotFound(f"no storage is mounted at {mount_point!r}")
        return e.storage


def _readonly(storage: Storage) -> bool:
    return mountopts.parse(storage.options).readonly


def errors_to_error(errors: list[str]) -> AgentError:
    return Internal("; ".join(errors))
