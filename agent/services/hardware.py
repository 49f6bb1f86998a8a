"""Hardware and volume use cases: uevents, storages, devices, CPU/memory hot-plug, swap, volumes.

Built once by `agent.app` (`HardwareService.build`). The lifecycle reaches the storage manager
(`.storage`) and the device manager (`.devices`) through it, and gives it a callback that re-applies
the containers' cpusets after OnlineCPUMem.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.blocking import fs_pool
from agent.devices import pci
from agent.devices.handlers import DeviceManager
from agent.devices.lookup import DeviceLookup
from agent.devices.uevent import UeventListener
from agent.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from agent.spawn import Runner
from agent.storage import StorageManager
from agent.storage.env import Mounted, MountSyscalls, StorageEnv, errname
from agent.storage.model import Storage
from agent.storage.paths import StorageRoots

log = logging.getLogger(__name__)

# How long OnlineCPUMem waits for hot-plugged CPUs to appear (Kata's 100 x 50 ms): the VMM plugs
# them just before the call, and the guest kernel adds them asynchronously.
ONLINE_RETRIES = 100
ONLINE_RETRY_DELAY = 0.05


@dataclass(frozen=True, slots=True)
class VolumeUsage:
    total: int
    used: int
    available: int


@dataclass(frozen=True, slots=True)
class VolumeStats:
    bytes: VolumeUsage
    inodes: VolumeUsage


CpusetUpdater = Callable[[], Awaitable[None]]


def _inodes(files: int, free: int) -> VolumeUsage:
    """Inode counts; filesystems without an inode limit (hugetlbfs) report -1: zeros then."""
    if files < 0 or free < 0:
        return VolumeUsage(total=0, used=0, available=0)
    return VolumeUsage(total=files, used=max(files - free, 0), available=free)


def cpu_count(cpulist: str) -> int:
    """How many CPUs a kernel CPU list names (``0-3,6`` -> 5; empty -> 0)."""
    count = 0
    for item in cpulist.strip().split(","):
        if not item:
            continue
        first, _, last = item.partition("-")
        count += int(last or first) - int(first) + 1
    return count


class HardwareService:
    def __init__(
        self,
        *,
        uevents: UeventListener,
        lookup: DeviceLookup,
        storage: StorageManager,
        devices: DeviceManager,
        run: Runner,
        sysfs: Path = Path("/sys"),
        proc: Path = Path("/proc"),
        command_timeout: float = 120.0,
    ) -> None:
        self.uevents = uevents
        self.lookup = lookup
        self.storage = storage
        self.devices = devices
        self._run = run
        self._sysfs = sysfs
        self._proc = proc
        self._timeout = command_timeout
        self._cpuset_updater: CpusetUpdater | None = None

    @classmethod
    def build(
        cls,
        *,
        run_dir: Path,
        hotplug_timeout: float,
        syscalls: MountSyscalls,
        run: Runner,
        sysfs: Path = Path("/sys"),
        proc: Path = Path("/proc"),
        dev: Path = Path("/dev"),
        uevents: UeventListener | None = None,
        lookup: DeviceLookup | None = None,
    ) -> HardwareService:
        """``uevents``/``lookup``: already built (start-up, ``agent.boot.phase2``, starts the
        listener and builds this service on the first RPC that needs it); new ones otherwise."""
        if uevents is None:
            uevents = UeventListener(hotplug_timeout=hotplug_timeout, sysfs=sysfs)
        if lookup is None:
            lookup = DeviceLookup(uevents, sysfs=sysfs, dev=dev)
        env = StorageEnv(
            roots=StorageRoots(run_dir),
            sys=syscalls,
            run=run,
            devices=lookup,
            sysfs=sysfs,
            proc=proc,
        )
        return cls(
            uevents=uevents,
            lookup=lookup,
            storage=StorageManager(env),
            devices=DeviceManager(lookup, sysfs=sysfs),
            run=run,
            sysfs=sysfs,
            proc=proc,
        )

    async def start(self) -> None:
        """Start the uevent listener (with the agent, before the RPC server accepts calls)."""
        await self.uevents.start()

    async def stop(self) -> None:
        self.uevents.stop()

    def set_cpuset_updater(self, fn: CpusetUpdater) -> None:
        """``fn`` re-applies every container's cpuset (the lifecycle sets it when it is built;
        before that there are no containers)."""
        self._cpuset_updater = fn

    # --- CPU and memory hot-plug -------------------------------------------------------------

    def _online_some(self, base: Path, pattern: str, limit: int | None) -> int:
        """Write 1 to `online` of offline entries (at most `limit`); returns how many."""
        rx = re.compile(pattern)
        count = 0
        try:
            names = sorted(
                (p.name for p in base.iterdir() if rx.fullmatch(p.name)),
                key=lambda n: int(re.sub(r"\D", "", n) or 0),
            )
        except OSError as err:
            raise Internal(f"list {base}: {errname(err)}") from err
        for name in names:
            if limit is not None and count >= limit:
                break
            online = base / name / "online"
            try:
                if online.read_text().strip() == "0":
                    online.write_text("1")
                    count += 1
            except FileNotFoundError:
                continue  # e.g. cpu0 cannot be offlined and has no online file
            except OSError as err:
                log.warning("online failed", extra={"file": str(online), "error": errname(err)})
        return count

    async def online_cpu_mem(self, nb_cpus: int, cpu_only: bool) -> None:
        """OnlineCPUMem, as the Kata agent: ``nb_cpus`` > 0 is the number of CPUs that must be
        online afterwards (the Go runtime sends the sandbox's new total); unless ``cpu_only``,
        every offline memory block is onlined too. Then every container's cpuset is re-applied
        (cgroup v1 does not hand new CPUs to existing cpusets), even when the CPUs were already
        online (some VMMs online them themselves)."""
        if nb_cpus > 0:
            await self._online_cpus(nb_cpus)
        if not cpu_only:
            mem_dir = self._sysfs / "devices" / "system" / "memory"
            n = await asyncio.to_thread(self._online_some, mem_dir, r"memory[0-9]+", None)
            log.info("memory blocks onlined", extra={"count": n})
        if nb_cpus > 0 and self._cpuset_updater is not None:
            await self._cpuset_updater()

    async def _online_cpus(self, total: int) -> None:
        """Online CPUs until ``total`` are online. More than the guest can ever have (its
        ``possible`` CPUs) fails at once; fewer may still be arriving (hot-plugged just before
        the call), so they are waited for, as long as Kata does."""
        cpu_dir = self._sysfs / "devices" / "system" / "cpu"
        possible = self._cpu_list("possible")
        if possible is not None and total > cpu_count(possible):
            raise InvalidArgument(
                f"online {total} CPUs: the guest can have at most {cpu_count(possible)} "
                f"(possible CPUs {possible})"
            )
        online = self._online_count()
        if online >= total:
            return
        onlined = 0
        for _ in range(ONLINE_RETRIES):
            onlined += await asyncio.to_thread(
                self._online_some, cpu_dir, r"cpu[0-9]+", total - online
            )
            online = self._online_count()
            if online >= total:
                log.info("CPUs onlined", extra={"count": onlined, "online": online})
                return
            await asyncio.sleep(ONLINE_RETRY_DELAY)
        raise Internal(
            f"online {total} CPUs: still {online} online after "
            f"{ONLINE_RETRIES * ONLINE_RETRY_DELAY:g}s (present CPUs {self._cpu_list('present')})"
        )

    def _cpu_list(self, name: str) -> str | None:
        """/sys/devices/system/cpu/<name> (``online``, ``possible``, ``present``), if readable."""
        try:
            return (self._sysfs / "devices" / "system" / "cpu" / name).read_text().strip()
        except OSError:
            return None

    def _online_count(self) -> int:
        online = self._cpu_list("online")
        if online is None:
            raise Internal(f"online CPUs: cannot read {self._sysfs / 'devices/system/cpu/online'}")
        return cpu_count(online)

    async def mem_hotplug_by_probe(self, addresses: Sequence[int]) -> None:
        probe = self._sysfs / "devices" / "system" / "memory" / "probe"
        for addr in addresses:
            try:
                await asyncio.to_thread(probe.write_text, f"0x{addr:X}")
            except OSError as err:
                raise Internal(
                    f"memory hot-plug probe 0x{addr:X} ({probe}): {errname(err)}"
                ) from err

    # --- mem-agent ---------------------------------------------------------------------------

    async def mem_agent_configure(self) -> None:
        """MemAgentMemcgSet / MemAgentCompactSet reconfigure the Kata agent's optional memory
        reclaim daemon (``agent.mem_agent_enable``). This agent has none, so it answers as the
        Kata agent does while its daemon is disabled."""
        raise Internal("mem-agent is disabled")

    # --- swap --------------------------------------------------------------------------------

    async def _swapon(self, path: str) -> None:
        res = await self._run(["swapon", path], timeout=self._timeout)
        if res.returncode != 0:
            msg = res.stderr.decode(errors="replace").strip()
            raise Internal(f"swapon {path} exited with {res.returncode}: {msg}")

    async def add_swap(self, slots: Sequence[int]) -> None:
        path = pci.path_from_slots(list(slots))
        dev = await self.lookup.block_by_pci_path(str(path))
        await self._swapon(str(dev))

    async def add_swap_path(self, path: str) -> None:
        if not path or not os.path.isabs(path):
            raise InvalidArgument(f"swap path {path!r} is not an absolute path")
        if not await asyncio.to_thread(os.path.exists, path):
            raise NotFound(f"swap path {path!r} does not exist")
        await self._swapon(path)

    # --- volumes -----------------------------------------------------------------------------

    async def volume_stats(self, path: str) -> VolumeStats:
        """statfs of a volume the host mounted through a storage (on the filesystem pool: a
        stalled share must not stall other requests)."""
        key, _storage, mounted = self.storage.volume(path)

        def statfs() -> os.statvfs_result:
            fd = self.storage.open_volume(key, mounted)
            try:
                return os.fstatvfs(fd)
            finally:
                os.close(fd)

        try:
            st = await fs_pool().run(statfs)
        except OSError as err:
            raise Internal(f"statfs {path!r}: {errname(err)}") from err
        frsize = st.f_frsize or st.f_bsize
        return VolumeStats(
            bytes=VolumeUsage(
                total=st.f_blocks * frsize,
                used=(st.f_blocks - st.f_bfree) * frsize,
                available=st.f_bavail * frsize,
            ),
            inodes=_inodes(st.f_files, st.f_ffree),
        )

    async def resize_volume(self, path: str, size: int) -> None:
        """Grow the filesystem of a block-device volume (mounted through a storage) to its
        (already grown) device, online: resize2fs for ext2/3/4, xfs_growfs for xfs."""
        key, storage, mounted = self.storage.volume(path)
        device = mounted.device
        if device is None:
            raise FailedPrecondition(
                f"resize volume {path!r}: {storage.driver} storages are not block devices"
            )
        device_size = await fs_pool().run(self._check_device, key, mounted, device)
        if size > device_size:
            raise InvalidArgument(
                f"resize volume {path!r}: size: {size} bytes is more than the device "
                f"{device} has ({device_size})"
            )
        fstype = storage.fstype or "ext4"
        if fstype in ("ext2", "ext3", "ext4"):
            argv = ["resize2fs", str(device)]
            if size > 0:
                argv.append(f"{size // 1024}K")
        elif fstype == "xfs":
            argv = ["xfs_growfs", str(key)]
        else:
            raise FailedPrecondition(f"resize volume {path!r}: cannot grow a {fstype} filesystem")
        res = await self._run(argv, timeout=self._timeout)
        if res.returncode != 0:
            msg = res.stderr.decode(errors="replace").strip().splitlines()
            raise Internal(
                f"resize volume {path!r}: {argv[0]} exited with {res.returncode}: "
                f"{msg[-1] if msg else ''}"
            )
        log.info("volume resized", extra={"volume": str(key), "device": str(device)})

    def _check_device(self, key: Path, mounted: Mounted, device: Path) -> int:
        """The volume's mount is still that of ``device``; returns the device's size."""
        fd = self.storage.open_volume(key, mounted)
        try:
            on_dev = os.fstat(fd).st_dev
        finally:
            os.close(fd)
        try:
            dev_fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            raise Internal(f"resize volume {str(key)!r}: open {device}: {errname(err)}") from err
        try:
            st = os.fstat(dev_fd)
            if not stat.S_ISBLK(st.st_mode) or st.st_rdev != on_dev:
                raise FailedPrecondition(
                    f"resize volume {str(key)!r}: {device} is no longer what is mounted there"
                )
            return os.lseek(dev_fd, 0, os.SEEK_END)
        finally:
            os.close(dev_fd)

    async def update_ephemeral_mounts(self, storages: Sequence[Storage]) -> None:
        await self.storage.update_ephemeral_mounts(storages)

    async def remove_stale_virtiofs_share_mounts(self) -> None:
        await self.storage.stat_shared_mounts()
