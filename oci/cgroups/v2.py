"""cgroup v2 (unified hierarchy, what Kata guests use): one directory `<root>/<cgroup path>`.

Creation enables, in every ancestor's `cgroup.subtree_control`, each controller that ancestor
offers (`cgroup.controllers`), so the leaf gets the interface files it needs.

Resources are translated the way runc's fs2 driver does: cpu.shares → cpu.weight (linear),
quota/period → cpu.max, memory.swap (memory+swap) → memory.swap.max (swap only), blkio weights
→ io.weight / io.bfq.weight, throttles → io.max; `unified` keys are written last and win.
Fields v2 has no interface for (memory.swappiness, kernel/kernelTCP, disableOOMKiller, realtime,
leaf weights, net_cls/net_prio) are logged and skipped, like runc.

Device rules: cgroup v2 enforces them only through an eBPF program attached to the cgroup
(BPF_PROG_TYPE_CGROUP_DEVICE). Building and loading one needs the bpf(2) syscall plus an eBPF
assembler that is out of reach without extra dependencies, so **device rules are not enforced on
cgroup v2**: `apply` logs them once at info level and otherwise ignores them. What protects the
host is that the container's /dev contains only the nodes the engine creates (default devices +
`linux.devices`) and that CAP_MKNOD is dropped unless granted.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ._base import (
    as_dir,
    blkio_weight_to_io_weight,
    list_pids,
    shares_to_weight,
    signal_all,
    wait_empty,
)
from .errors import CgroupBusy, CgroupError, CgroupInvalid, CgroupNotFound, CgroupUnsupported
from .fs import mkdir_p, parse_flat_keyed, read_flat_keyed, read_int, read_text, rmdir_tree, write
from .oom import FileChangeWatcher, OomWatcher, V2OomWatcher
from .paths import DEFAULT_ROOT
from .stats import (
    CgroupStats,
    CpuStats,
    HugetlbStats,
    MemoryData,
    MemoryStats,
    PidsStats,
    cpu_stats_v2,
    parse_io_stat_v2,
)

if TYPE_CHECKING:
    from oci.spec import LinuxResources

log = logging.getLogger(__name__)


def swap_to_v2(swap: int, limit: int | None) -> str:
    """OCI memory.swap is memory+swap; v2's memory.swap.max is swap alone (runc's rule)."""
    if swap == -1:
        return "max"
    if limit is None or limit == -1 or limit == 0:
        raise CgroupInvalid(
            f"memory.swap {swap} needs a memory limit on cgroup v2 (memory.swap.max is "
            "memory+swap minus the limit)"
        )
    if swap < limit:
        raise CgroupInvalid(f"memory.swap {swap} is lower than the memory limit {limit}")
    return str(swap - limit)


class V2Manager:
    """A container's cgroup on a unified (cgroup v2) hierarchy."""

    version = 2

    def __init__(self, path: PurePosixPath, *, root: Path = DEFAULT_ROOT) -> None:
        self.path = path
        self.root = root
        self.dir = as_dir(root, path)

    def exists(self) -> bool:
        return self.dir.is_dir()

    def create(self) -> None:
        created = mkdir_p(self.dir)
        try:
            self._enable_controllers()
        except BaseException:
            for d in reversed(created):
                try:
                    os.rmdir(d)
                except OSError:
                    log.warning("cgroup create rollback: cannot remove %s", d)
            raise

    def _enable_controllers(self) -> None:
        parts = self.path.parts[1:]
        d = self.root
        for name in parts:
            available = read_text(d / "cgroup.controllers").split()
            enabled = set(read_text(d / "cgroup.subtree_control").split())
            for ctrl in available:
                if ctrl in enabled:
                    continue
                try:
                    write(d / "cgroup.subtree_control", f"+{ctrl}")
                except CgroupError as e:
                    # e.g. EBUSY: `d` holds processes itself (no internal processes rule)
                    log.warning("cannot enable the %s controller below %s: %s", ctrl, d, e)
            d = d / name

    def add_pid(self, pid: int) -> None:
        write(self.dir / "cgroup.procs", pid)

    def self_join_files(self) -> tuple[str, ...]:
        """None on v2: every write to ``cgroup.procs`` takes the threadgroup lock (see v1);
        the caller uses ``add_pid``."""
        return ()

    # --- resources -----------------------------------------------------------------------------

    def refresh_cpuset(self, cpus: str | None) -> None:
        """After CPUs came online. v2 recomputes every effective cpuset itself; only a list of
        the cgroup's own (``cpus``, the spec's ``cpu.cpus``) is written again, as Kata does."""
        if cpus and self.dir.is_dir():
            self._write("cpuset.cpus", cpus, "cpu.cpus")

    def _write(self, name: str, value: str | int, what: str) -> None:
        path = self.dir / name
        if not path.exists() and self.dir.exists():
            raise CgroupUnsupported(
                f"{what}: {path} does not exist (controller not enabled for this cgroup)"
            )
        write(path, value)

    def apply(self, r: LinuxResources) -> None:
        """Write every resource set in `r` (also used for updates)."""
        ignored: list[str] = []
        if r.cpu is not None:
            cpu = r.cpu
            if cpu.shares:
                self._write("cpu.weight", shares_to_weight(cpu.shares), "cpu.shares")
            if cpu.quota or cpu.period:
                quota = cpu.quota
                period = cpu.period
                if quota is None or period is None:
                    cur_quota, _, cur_period = (
                        read_text(self.dir / "cpu.max").strip().partition(" ")
                    )
                    quota_s = cur_quota if quota is None else ("max" if quota < 0 else str(quota))
                    period_s = cur_period if period is None else str(period)
                else:
                    quota_s = "max" if quota < 0 else str(quota)
                    period_s = str(period)
                self._write("cpu.max", f"{quota_s} {period_s}", "cpu quota/period")
            if cpu.burst is not None:
                self._write("cpu.max.burst", cpu.burst, "cpu.burst")
            if cpu.idle is not None:
                self._write("cpu.idle", cpu.idle, "cpu.idle")
            if cpu.realtime_period or cpu.realtime_runtime:
                raise CgroupUnsupported("cpu realtime period/runtime is not supported on cgroup v2")
            if cpu.cpus:
                self._write("cpuset.cpus", cpu.cpus, "cpu.cpus")
            if cpu.mems:
                self._write("cpuset.mems", cpu.mems, "cpu.mems")
        if r.memory is not None:
            mem = r.memory
            if mem.check_before_update and mem.limit is not None and mem.limit > 0:
                usage = read_int(self.dir / "memory.current")
                if usage > mem.limit:
                    raise CgroupInvalid(
                        f"memory.limit {mem.limit} is below the current usage {usage} of {self.dir}"
                    )
            if mem.swap is not None and mem.swap != 0:
                self._write("memory.swap.max", swap_to_v2(mem.swap, mem.limit), "memory.swap")
            if mem.limit is not None and mem.limit != 0:
                self._write("memory.max", "max" if mem.limit < 0 else mem.limit, "memory.limit")
            if mem.reservation is not None and mem.reservation != 0:
                self._write(
                    "memory.low",
                    "max" if mem.reservation < 0 else mem.reservation,
                    "memory.reservation",
                )
            if mem.swappiness is not None:
                ignored.append("memory.swappiness")
            if mem.kernel or mem.kernel_tcp:
                ignored.append("memory.kernel/kernelTCP")
            if mem.disable_oom_killer:
                ignored.append("memory.disableOOMKiller")
        if r.pids is not None and r.pids.limit not in (None, 0):
            self._write("pids.max", "max" if r.pids.limit < 0 else r.pids.limit, "pids.limit")
        if r.block_io is not None:
            self._apply_io(r, ignored)
        for h in r.hugepage_limits:
            self._write(f"hugetlb.{h.page_size}.max", h.limit, f"hugepage limit {h.page_size}")
        for dev, limits in r.rdma.items():
            parts = [dev]
            if limits.hca_handles is not None:
                parts.append(f"hca_handle={limits.hca_handles}")
            if limits.hca_objects is not None:
                parts.append(f"hca_object={limits.hca_objects}")
            self._write("rdma.max", " ".join(parts), "rdma")
        if r.network is not None and (r.network.class_id is not None or r.network.priorities):
            ignored.append("network (net_cls/net_prio)")
        if r.devices and any(not d.allow for d in r.devices):
            log.info(
                "device cgroup rules are not enforced on cgroup v2 (no eBPF device filter): %s",
                self.dir,
            )
        for key, value in r.unified.items():
            if "/" in key or key.startswith("."):
                raise CgroupInvalid(f"unified: invalid interface file name {key!r}")
            path = self.dir / key
            if not path.exists():
                raise CgroupNotFound(
                    f"unified.{key}: {path} does not exist (unknown file or controller not enabled)"
                )
            write(path, value)
        if ignored:
            log.warning(
                "cgroup v2 has no interface for %s; ignored for %s", ", ".join(ignored), self.dir
            )

    update = apply

    def _apply_io(self, r: LinuxResources, ignored: list[str]) -> None:
        b = r.block_io
        assert b is not None

        def weight_file() -> tuple[str, bool]:
            if (self.dir / "io.bfq.weight").exists():
                return "io.bfq.weight", True
            return "io.weight", False

        if b.weight:
            name, bfq = weight_file()
            value = b.weight if bfq else blkio_weight_to_io_weight(b.weight)
            self._write(name, value if bfq else f"default {value}", "blockIO.weight")
        for wd in b.weight_device:
            if wd.weight:
                name, bfq = weight_file()
                value = wd.weight if bfq else blkio_weight_to_io_weight(wd.weight)
                self._write(name, f"{wd.major}:{wd.minor} {value}", "blockIO.weightDevice")
        if b.leaf_weight or any(wd.leaf_weight for wd in b.weight_device):
            ignored.append("blockIO leaf weights")
        for key, devs in (
            ("rbps", b.throttle_read_bps_device),
            ("wbps", b.throttle_write_bps_device),
            ("riops", b.throttle_read_iops_device),
            ("wiops", b.throttle_write_iops_device),
        ):
            for td in devs:
                rate = "max" if td.rate == 0 else str(td.rate)
                self._write("io.max", f"{td.major}:{td.minor} {key}={rate}", "blockIO throttle")

    # --- freezer -------------------------------------------------------------------------------

    def can_freeze(self) -> bool:
        return (self.dir / "cgroup.freeze").exists()

    def freezer_file(self) -> str:
        return str(self.dir / "cgroup.events")

    def freezer_state(self) -> str:
        """ "FROZEN" or "THAWED" (v2 reports the settled state in cgroup.events)."""
        events = parse_flat_keyed(read_text(self.dir / "cgroup.events"))
        return "FROZEN" if events.get("frozen") == 1 else "THAWED"

    def freeze(self, *, timeout: float = 10.0) -> None:
        """Freeze and wait for `frozen 1` in cgroup.events (blocks up to `timeout`; call it via
        asyncio.to_thread from an event loop). On timeout the cgroup is thawed again."""
        self._set_frozen(True, timeout)

    def thaw(self, *, timeout: float = 10.0) -> None:
        self._set_frozen(False, timeout)

    def _set_frozen(self, frozen: bool, timeout: float) -> None:
        watcher = FileChangeWatcher(self.dir / "cgroup.events")
        try:
            write(self.dir / "cgroup.freeze", 1 if frozen else 0)
            deadline = time.monotonic() + timeout
            while True:
                text = watcher.read_text()
                if text is None:
                    raise CgroupNotFound(f"freeze {self.dir}: the cgroup was removed")
                if (parse_flat_keyed(text).get("frozen") == 1) == frozen:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    if frozen:
                        write(self.dir / "cgroup.freeze", 0)
                    raise CgroupBusy(
                        f"{'freeze' if frozen else 'thaw'} {self.dir}: not settled after "
                        f"{timeout:g}s"
                    )
                watcher.wait(min(left, 0.1))
        finally:
            watcher.close()

    # --- processes -----------------------------------------------------------------------------

    def pids(self) -> list[int]:
        return list_pids(self.dir)

    def kill_all(self, sig: int = signal.SIGKILL, *, timeout: float = 10.0) -> None:
        """Signal every process. SIGKILL uses cgroup.kill when the kernel has it (5.14+), else
        freeze → kill each → thaw; with SIGKILL it then waits until the cgroup is empty."""
        if not self.dir.exists():
            return
        if sig == signal.SIGKILL and (self.dir / "cgroup.kill").exists():
            write(self.dir / "cgroup.kill", 1)
        else:
            frozen = False
            if self.can_freeze():
                try:
                    self.freeze(timeout=timeout)
                    frozen = True
                except CgroupBusy as e:
                    log.warning("kill-all of %s without freezing: %s", self.dir, e)
            try:
                signal_all(list_pids(self.dir), sig)
            finally:
                if frozen:
                    self.thaw(timeout=timeout)
        if sig == signal.SIGKILL:
            wait_empty(self.dir, timeout)

    # --- stats ---------------------------------------------------------------------------------

    def _opt(self, name: str) -> str:
        path = self.dir / name
        return read_text(path) if path.exists() else ""

    def stats(self) -> CgroupStats:
        cpu = cpu_stats_v2(self._opt("cpu.stat")) if self._opt("cpu.stat") else CpuStats()
        return CgroupStats(
            cpu_stats=cpu,
            memory_stats=self._memory_stats(),
            pids_stats=self._pids_stats(),
            blkio_stats=parse_io_stat_v2(self._opt("io.stat")),
            hugetlb_stats=self._hugetlb_stats(),
        )

    def _int_opt(self, name: str) -> int:
        path = self.dir / name
        return read_int(path) if path.exists() else 0

    def _memory_stats(self) -> MemoryStats:
        if not (self.dir / "memory.current").exists():
            return MemoryStats()
        stat = read_flat_keyed(self.dir / "memory.stat")
        events = parse_flat_keyed(self._opt("memory.events"))
        usage = MemoryData(
            usage=read_int(self.dir / "memory.current"),
            max_usage=self._int_opt("memory.peak"),
            failcnt=events.get("max", 0),
            limit=self._int_opt("memory.max"),
        )
        swap_events = parse_flat_keyed(self._opt("memory.swap.events"))
        swap = MemoryData(
            usage=self._int_opt("memory.swap.current") + usage.usage,
            max_usage=self._int_opt("memory.swap.peak"),
            failcnt=swap_events.get("max", 0),
            limit=self._int_opt("memory.swap.max"),
        )
        return MemoryStats(
            cache=stat.get("file", 0),
            usage=usage,
            swap_usage=swap,
            kernel_usage=MemoryData(usage=stat.get("kernel", stat.get("kernel_stack", 0))),
            use_hierarchy=True,
            stats=stat,
        )

    def _pids_stats(self) -> PidsStats:
        if not (self.dir / "pids.current").exists():
            return PidsStats()
        return PidsStats(
            current=read_int(self.dir / "pids.current"), limit=read_int(self.dir / "pids.max")
        )

    def _hugetlb_stats(self) -> dict[str, HugetlbStats]:
        out: dict[str, HugetlbStats] = {}
        for f in sorted(self.dir.glob("hugetlb.*.current")):
            size = f.name.split(".")[1]
            if f.name != f"hugetlb.{size}.current":
                continue
            events = parse_flat_keyed(self._opt(f"hugetlb.{size}.events"))
            out[size] = HugetlbStats(
                usage=read_int(f),
                max_usage=self._int_opt(f"hugetlb.{size}.peak"),
                failcnt=events.get("max", 0),
            )
        return out

    # --- events and removal ---------------------------------------------------------------------

    def oom_watcher(self) -> OomWatcher:
        if not (self.dir / "memory.events").exists():
            raise CgroupUnsupported(
                f"OOM notification: {self.dir / 'memory.events'} does not exist (memory "
                "controller not enabled)"
            )
        return V2OomWatcher(self.dir)

    def destroy(self, *, timeout: float = 5.0) -> None:
        rmdir_tree(self.dir, timeout=timeout)


__all__ = ["V2Manager", "swap_to_v2"]
