"""cgroup v1 (legacy and hybrid hosts): one directory per controller hierarchy,
`<root>/<controller>/<cgroup path>`; combined hierarchies (`cpu,cpuacct`) share one directory.

Controllers that are not mounted are skipped when nothing is asked of them; asking for a
resource whose controller is absent raises `CgroupUnsupported` naming it. `unified` resources
need cgroup v2 and are refused here.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ._base import as_dir, list_pids, signal_all, wait_empty
from .errors import CgroupBusy, CgroupError, CgroupInvalid, CgroupUnsupported
from .fs import mkdir_p, read_flat_keyed, read_int, read_lines, read_text, rmdir_tree, write
from .oom import OomWatcher, V1OomWatcher
from .paths import DEFAULT_ROOT, v1_controllers
from .stats import (
    BlkioStats,
    BlkioStatsEntry,
    CgroupStats,
    HugetlbStats,
    MemoryData,
    MemoryStats,
    PidsStats,
    cpu_stats_v1,
    parse_blkio_v1,
)

if TYPE_CHECKING:
    from oci.spec import LinuxResources

log = logging.getLogger(__name__)


class V1Manager:
    """A container's cgroup on a v1/hybrid host."""

    version = 1

    def __init__(
        self,
        path: PurePosixPath,
        *,
        root: Path = DEFAULT_ROOT,
        controllers: dict[str, Path] | None = None,
    ) -> None:
        self.path = path
        self.root = root
        mounts = controllers if controllers is not None else v1_controllers(root)
        self.dirs: dict[str, Path] = {c: as_dir(m, path) for c, m in mounts.items()}

    # --- structure -----------------------------------------------------------------------------

    def _unique_dirs(self) -> list[Path]:
        # in order, each once (a dict, not list membership: Path.__eq__ is slow)
        return list(dict.fromkeys(self.dirs.values()))

    def _dir(self, controller: str, what: str) -> Path:
        d = self.dirs.get(controller)
        if d is None:
            raise CgroupUnsupported(
                f"{what}: the {controller} cgroup controller is not mounted under {self.root}"
            )
        return d

    def exists(self) -> bool:
        return any(d.is_dir() for d in self._unique_dirs())

    def create(self) -> None:
        """mkdir the cgroup in every hierarchy; on failure remove what was created."""
        created: list[Path] = []
        try:
            for d in self._unique_dirs():
                created.extend(mkdir_p(d))
                if "cpuset" in self.dirs and d == self.dirs["cpuset"]:
                    self._inherit_cpuset_chain(d)
        except BaseException:
            for d in reversed(created):
                try:
                    os.rmdir(d)
                except OSError:
                    log.warning("cgroup create rollback: cannot remove %s", d)
            raise

    @staticmethod
    def _inherit_cpuset_chain(leaf: Path) -> None:
        """Fill empty cpus/mems from the hierarchy root down to ``leaf``.

        A new v1 cpuset cgroup starts with empty cpus/mems and no task can join it until they
        are set (ENOSPC). Every level is checked, not only the ones this call created: another
        container may have just created a shared parent and not yet filled it in.
        """
        chain = [leaf]
        while (chain[-1].parent / "cpuset.cpus").exists():
            chain.append(chain[-1].parent)
        for d in reversed(chain[:-1]):  # chain[-1] is the hierarchy root: always populated
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not read_text(d / name).strip():
                    write(d / name, read_text(d.parent / name).strip() or "\n")

    def refresh_cpuset(self, cpus: str | None) -> None:
        """After CPUs came online: a v1 cpuset keeps the CPUs it had (the kernel only widens the
        hierarchy root), so every level from the top down to this cgroup gets the root's CPUs,
        then this cgroup its own list (``cpus``, the spec's ``cpu.cpus``) if it has one."""
        leaf = self.dirs.get("cpuset")
        if leaf is None or not leaf.is_dir():
            return
        chain = [leaf]
        while (chain[-1].parent / "cpuset.cpus").exists():
            chain.append(chain[-1].parent)
        if len(chain) == 1:
            return  # the hierarchy root itself: the kernel keeps it
        online = read_text(chain[-1] / "cpuset.cpus").strip()
        for d in reversed(chain[1:-1]):  # parents first: a child must stay within its parent
            write(d / "cpuset.cpus", online)
        write(leaf / "cpuset.cpus", cpus or online)

    def add_pid(self, pid: int) -> None:
        for d in self._unique_dirs():
            write(d / "cgroup.procs", pid)

    def self_join_files(self) -> tuple[str, ...]:
        """Files a single-threaded process writes "0" into to move itself into this cgroup.

        Moving a whole process (``cgroup.procs``) takes the kernel's global threadgroup lock,
        which waits for an RCU grace period (docs/performance.md). A thread
        moving itself through v1's ``tasks`` skips that lock; for a single-threaded process
        (the engine's freshly forked stage-1) the effect is the same."""
        return tuple(str(d / "tasks") for d in self._unique_dirs())

    # --- resources -----------------------------------------------------------------------------

    def apply(self, r: LinuxResources) -> None:
        """Write every resource set in `r` (also used for updates)."""
        if r.unified:
            raise CgroupUnsupported(
                "linux.resources.unified needs cgroup v2; this host uses cgroup v1"
            )
        if r.cpu is not None:
            self._apply_cpu(r)
        if r.memory is not None:
            self._apply_memory(r)
        if r.pids is not None and r.pids.limit not in (None, 0):
            d = self._dir("pids", "pids.limit")
            write(d / "pids.max", "max" if r.pids.limit < 0 else r.pids.limit)
        if r.block_io is not None:
            self._apply_blkio(r)
        for h in r.hugepage_limits:
            d = self._dir("hugetlb", f"hugepage limit {h.page_size}")
            write(d / f"hugetlb.{h.page_size}.limit_in_bytes", h.limit)
        if r.devices:
            d = self._dir("devices", "device rules")
            for rule in r.devices:
                major = "*" if rule.major is None or rule.major < 0 else rule.major
                minor = "*" if rule.minor is None or rule.minor < 0 else rule.minor
                kind = rule.type or "a"
                access = rule.access or "rwm"
                line = "a" if kind == "a" else f"{kind} {major}:{minor} {access}"
                write(d / ("devices.allow" if rule.allow else "devices.deny"), line)
        if r.network is not None:
            if r.network.class_id is not None:
                d = self._dir("net_cls", "network.classID")
                write(d / "net_cls.classid", r.network.class_id)
            for prio in r.network.priorities:
                d = self._dir("net_prio", "network.priorities")
                write(d / "net_prio.ifpriomap", f"{prio.name} {prio.priority}")
        for dev, limits in r.rdma.items():
            d = self._dir("rdma", "rdma")
            parts = [dev]
            if limits.hca_handles is not None:
                parts.append(f"hca_handle={limits.hca_handles}")
            if limits.hca_objects is not None:
                parts.append(f"hca_object={limits.hca_objects}")
            write(d / "rdma.max", " ".join(parts))

    update = apply

    def _apply_cpu(self, r: LinuxResources) -> None:
        cpu = r.cpu
        assert cpu is not None
        if cpu.shares:
            d = self._dir("cpu", "cpu.shares")
            write(d / "cpu.shares", cpu.shares)
            got = read_int(d / "cpu.shares")
            if got != cpu.shares:
                raise CgroupInvalid(f"cpu.shares: the kernel clamped {cpu.shares} to {got} in {d}")
        if cpu.period or cpu.quota:
            d = self._dir("cpu", "cpu quota/period")
            # The kernel checks quota against the current period, so order matters: try the
            # period first and retry after the quota if the kernel refuses.
            steps: list[tuple[str, int]] = []
            if cpu.period:
                steps.append(("cpu.cfs_period_us", cpu.period))
            if cpu.quota:
                steps.append(("cpu.cfs_quota_us", cpu.quota))
            try:
                for name, value in steps:
                    write(d / name, value)
            except CgroupInvalid:
                for name, value in reversed(steps):
                    write(d / name, value)
        if cpu.burst is not None:
            write(self._dir("cpu", "cpu.burst") / "cpu.cfs_burst_us", cpu.burst)
        if cpu.realtime_period:
            write(self._dir("cpu", "cpu.realtimePeriod") / "cpu.rt_period_us", cpu.realtime_period)
        if cpu.realtime_runtime:
            write(
                self._dir("cpu", "cpu.realtimeRuntime") / "cpu.rt_runtime_us",
                cpu.realtime_runtime,
            )
        if cpu.idle is not None:
            write(self._dir("cpu", "cpu.idle") / "cpu.idle", cpu.idle)
        if cpu.cpus:
            write(self._dir("cpuset", "cpu.cpus") / "cpuset.cpus", cpu.cpus)
        if cpu.mems:
            write(self._dir("cpuset", "cpu.mems") / "cpuset.mems", cpu.mems)

    def _apply_memory(self, r: LinuxResources) -> None:
        mem = r.memory
        assert mem is not None
        d = self._dir("memory", "memory resources")
        limit = mem.limit
        swap = mem.swap
        if mem.check_before_update and limit is not None and limit > 0:
            usage = read_int(d / "memory.usage_in_bytes")
            if usage > limit:
                raise CgroupInvalid(
                    f"memory.limit {limit} is below the current usage {usage} of {d}"
                )
        has_memsw = (d / "memory.memsw.limit_in_bytes").exists()
        if swap is not None and swap != 0 and not has_memsw:
            raise CgroupUnsupported(
                f"memory.swap: swap accounting is off (no memory.memsw.limit_in_bytes in {d})"
            )
        if limit is not None and limit != 0:
            pairs: list[tuple[str, int]] = [("memory.limit_in_bytes", limit)]
            if swap is not None and swap != 0:
                pairs.append(("memory.memsw.limit_in_bytes", swap))
            elif limit == -1 and has_memsw:
                # an unlimited memory limit must not stay under a smaller memsw limit
                pairs.append(("memory.memsw.limit_in_bytes", -1))
            # memsw must stay >= limit at every step: raising → memsw first; lowering → limit
            current = read_int(d / "memory.limit_in_bytes")
            if limit == -1 or limit > current:
                pairs.reverse()
            for name, value in pairs:
                write(d / name, value)
        elif swap is not None and swap != 0:
            write(d / "memory.memsw.limit_in_bytes", swap)
        if mem.reservation is not None and mem.reservation != 0:
            write(d / "memory.soft_limit_in_bytes", mem.reservation)
        if mem.kernel is not None and mem.kernel != 0:
            self._best_effort(d / "memory.kmem.limit_in_bytes", mem.kernel, "memory.kernel")
        if mem.kernel_tcp is not None and mem.kernel_tcp != 0:
            write(d / "memory.kmem.tcp.limit_in_bytes", mem.kernel_tcp)
        if mem.swappiness is not None:
            write(d / "memory.swappiness", mem.swappiness)
        if mem.disable_oom_killer is not None:
            write(d / "memory.oom_control", 1 if mem.disable_oom_killer else 0)
        if mem.use_hierarchy is not None:
            self._best_effort(
                d / "memory.use_hierarchy", int(mem.use_hierarchy), "memory.useHierarchy"
            )

    @staticmethod
    def _best_effort(path: Path, value: int, what: str) -> None:
        """Deprecated knobs (kmem limit, use_hierarchy) that newer kernels refuse or ignore."""
        try:
            write(path, value)
        except CgroupError as e:
            log.warning("%s ignored: the kernel refuses it (%s)", what, e)

    def _apply_blkio(self, r: LinuxResources) -> None:
        b = r.block_io
        assert b is not None
        d = self._dir("blkio", "blockIO")

        def weight_file(base: str) -> Path:
            for name in (f"blkio.{base}", f"blkio.bfq.{base}"):
                if (d / name).exists():
                    return d / name
            raise CgroupUnsupported(
                f"blockIO {base}: neither blkio.{base} nor blkio.bfq.{base} exists in {d} "
                "(no CFQ/BFQ I/O scheduler)"
            )

        if b.weight:
            write(weight_file("weight"), b.weight)
        if b.leaf_weight:
            write(weight_file("leaf_weight"), b.leaf_weight)
        for wd in b.weight_device:
            if wd.weight:
                write(weight_file("weight_device"), f"{wd.major}:{wd.minor} {wd.weight}")
            if wd.leaf_weight:
                write(weight_file("leaf_weight_device"), f"{wd.major}:{wd.minor} {wd.leaf_weight}")
        for name, devs in (
            ("blkio.throttle.read_bps_device", b.throttle_read_bps_device),
            ("blkio.throttle.write_bps_device", b.throttle_write_bps_device),
            ("blkio.throttle.read_iops_device", b.throttle_read_iops_device),
            ("blkio.throttle.write_iops_device", b.throttle_write_iops_device),
        ):
            for td in devs:
                write(d / name, f"{td.major}:{td.minor} {td.rate}")

    # --- freezer -------------------------------------------------------------------------------

    def can_freeze(self) -> bool:
        return "freezer" in self.dirs

    def freezer_file(self) -> str:
        return str(self.dirs["freezer"] / "freezer.state") if "freezer" in self.dirs else ""

    def freezer_state(self) -> str:
        """ "THAWED", "FREEZING" or "FROZEN"."""
        return read_text(self._dir("freezer", "freezer state") / "freezer.state").strip()

    def freeze(self, *, timeout: float = 10.0) -> None:
        """Freeze every process and wait until the kernel reports FROZEN.

        Blocks up to `timeout` (call it through asyncio.to_thread from an event loop). On
        timeout the cgroup is thawed again and `CgroupBusy` raised.
        """
        d = self._dir("freezer", "freeze")
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while True:
            write(d / "freezer.state", "FROZEN")
            state = read_text(d / "freezer.state").strip()
            if state == "FROZEN":
                return
            if time.monotonic() >= deadline:
                write(d / "freezer.state", "THAWED")
                raise CgroupBusy(f"freeze {d}: still {state} after {timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def thaw(self) -> None:
        write(self._dir("freezer", "thaw") / "freezer.state", "THAWED")

    # --- processes -----------------------------------------------------------------------------

    def _main_dir(self) -> Path:
        for ctrl in ("freezer", "pids", "memory", "cpu", "devices"):
            if ctrl in self.dirs:
                return self.dirs[ctrl]
        dirs = self._unique_dirs()
        if not dirs:
            raise CgroupUnsupported(f"no cgroup v1 hierarchy is mounted under {self.root}")
        return dirs[0]

    def pids(self) -> list[int]:
        return list_pids(self._main_dir())

    def kill_all(self, sig: int = signal.SIGKILL, *, timeout: float = 10.0) -> None:
        """Freeze, signal every process, thaw; with SIGKILL also wait until all are gone."""
        top = self._main_dir()
        if not top.exists():
            return
        frozen = False
        if self.can_freeze():
            try:
                self.freeze(timeout=timeout)
                frozen = True
            except CgroupBusy as e:  # signal them anyway, repeatedly (below)
                log.warning("kill-all of %s without freezing: %s", top, e)
        try:
            signal_all(list_pids(top), sig)
        finally:
            if frozen:
                self.thaw()
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + timeout
            while not frozen and list_pids(top) and time.monotonic() < deadline:
                # no freezer: processes may fork between listing and killing; repeat
                signal_all(list_pids(top), sig)
                time.sleep(0.005)
            wait_empty(top, max(0.0, deadline - time.monotonic()) if not frozen else timeout)

    # --- stats ---------------------------------------------------------------------------------

    def stats(self) -> CgroupStats:
        cpu = cpu_stats_v1(
            usage=self._read_opt("cpuacct", "cpuacct.usage"),
            percpu=self._read_opt("cpuacct", "cpuacct.usage_percpu"),
            cpuacct_stat=self._read_opt("cpuacct", "cpuacct.stat"),
            cpu_stat=self._read_opt("cpu", "cpu.stat"),
        )
        return CgroupStats(
            cpu_stats=cpu,
            memory_stats=self._memory_stats(),
            pids_stats=self._pids_stats(),
            blkio_stats=self._blkio_stats(),
            hugetlb_stats=self._hugetlb_stats(),
        )

    def _read_opt(self, ctrl: str, name: str) -> str:
        d = self.dirs.get(ctrl)
        if d is None or not (d / name).exists():
            return ""
        return read_text(d / name)

    def _memory_data(self, d: Path, prefix: str) -> MemoryData:
        if not (d / f"{prefix}.usage_in_bytes").exists():
            return MemoryData()
        return MemoryData(
            usage=read_int(d / f"{prefix}.usage_in_bytes"),
            max_usage=read_int(d / f"{prefix}.max_usage_in_bytes"),
            failcnt=read_int(d / f"{prefix}.failcnt"),
            limit=read_int(d / f"{prefix}.limit_in_bytes"),
        )

    def _memory_stats(self) -> MemoryStats:
        d = self.dirs.get("memory")
        if d is None:
            return MemoryStats()
        stat = read_flat_keyed(d / "memory.stat")
        use_hierarchy = (d / "memory.use_hierarchy").exists() and read_int(
            d / "memory.use_hierarchy"
        ) == 1
        return MemoryStats(
            cache=stat.get("total_cache", stat.get("cache", 0)),
            usage=self._memory_data(d, "memory"),
            swap_usage=self._memory_data(d, "memory.memsw"),
            kernel_usage=self._memory_data(d, "memory.kmem"),
            use_hierarchy=use_hierarchy,
            stats=stat,
        )

    def _pids_stats(self) -> PidsStats:
        d = self.dirs.get("pids")
        if d is None:
            return PidsStats()
        return PidsStats(current=read_int(d / "pids.current"), limit=read_int(d / "pids.max"))

    def _blkio_stats(self) -> BlkioStats:
        d = self.dirs.get("blkio")
        if d is None:
            return BlkioStats()

        def entries(*names: str) -> tuple[BlkioStatsEntry, ...]:
            for name in names:
                if (d / name).exists():
                    return parse_blkio_v1(read_text(d / name))
            return ()

        svc_bytes = entries(
            "blkio.io_service_bytes_recursive",
            "blkio.bfq.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        )
        serviced = entries(
            "blkio.io_serviced_recursive",
            "blkio.bfq.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
        )
        return BlkioStats(
            io_service_bytes_recursive=svc_bytes,
            io_serviced_recursive=serviced,
            io_queued_recursive=entries("blkio.io_queued_recursive"),
            io_service_time_recursive=entries("blkio.io_service_time_recursive"),
            io_wait_time_recursive=entries("blkio.io_wait_time_recursive"),
            io_merged_recursive=entries("blkio.io_merged_recursive"),
            io_time_recursive=entries("blkio.time_recursive"),
            sectors_recursive=entries("blkio.sectors_recursive"),
        )

    def _hugetlb_stats(self) -> dict[str, HugetlbStats]:
        d = self.dirs.get("hugetlb")
        if d is None or not d.exists():
            return {}
        out: dict[str, HugetlbStats] = {}
        for f in sorted(d.glob("hugetlb.*.usage_in_bytes")):
            size = f.name.split(".")[1]
            out[size] = HugetlbStats(
                usage=read_int(f),
                max_usage=read_int(d / f"hugetlb.{size}.max_usage_in_bytes"),
                failcnt=read_int(d / f"hugetlb.{size}.failcnt"),
            )
        return out

    # --- events and removal ---------------------------------------------------------------------

    def oom_watcher(self) -> OomWatcher:
        return V1OomWatcher(self._dir("memory", "OOM notification"))

    def destroy(self, *, timeout: float = 5.0) -> None:
        """Remove the cgroup (and child cgroups) from every hierarchy, retrying while busy.

        Raises `CgroupBusy` naming the processes still inside if it cannot.
        """
        errors: list[CgroupError] = []
        for d in self._unique_dirs():
            try:
                rmdir_tree(d, timeout=timeout)
            except CgroupError as e:
                errors.append(e)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            first = errors[0]
            raise type(first)("; ".join(str(e) for e in errors), errno=first.errno)

    def procs_in(self, controller: str) -> list[int]:
        """pids directly in this cgroup of one hierarchy (for tests and diagnostics)."""
        d = self._dir(controller, "list pids")
        return [int(p) for p in read_lines(d / "cgroup.procs")]
