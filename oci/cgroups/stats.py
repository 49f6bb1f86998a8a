"""Typed cgroup statistics and the pure parsers that build them from interface-file text.

Field names follow the agent protocol's `CgroupStats` (kata's `agent.proto`), so the RPC layer
converts them field by field; nothing here depends on protobuf. Units: CPU times in nanoseconds,
memory in bytes. A value the kernel does not expose is 0 (a missing map or list is empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .fs import parse_flat_keyed

USER_HZ = 100
"""Clock ticks per second in cpuacct.stat (fixed by the kernel ABI)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuUsage:
    total_usage: int = 0
    percpu_usage: tuple[int, ...] = ()
    usage_in_kernelmode: int = 0
    usage_in_usermode: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlingData:
    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuStats:
    cpu_usage: CpuUsage = field(default_factory=CpuUsage)
    throttling_data: ThrottlingData = field(default_factory=ThrottlingData)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryData:
    usage: int = 0
    max_usage: int = 0
    failcnt: int = 0
    limit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryStats:
    cache: int = 0
    usage: MemoryData = field(default_factory=MemoryData)
    swap_usage: MemoryData = field(default_factory=MemoryData)
    kernel_usage: MemoryData = field(default_factory=MemoryData)
    use_hierarchy: bool = False
    stats: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PidsStats:
    current: int = 0
    limit: int = 0
    """0 means unlimited ("max")."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BlkioStatsEntry:
    major: int
    minor: int
    op: str
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BlkioStats:
    io_service_bytes_recursive: tuple[BlkioStatsEntry, ...] = ()
    io_serviced_recursive: tuple[BlkioStatsEntry, ...] = ()
    io_queued_recursive: tuple[BlkioStatsEntry, ...] = ()
    io_service_time_recursive: tuple[BlkioStatsEntry, ...] = ()
    io_wait_time_recursive: tuple[BlkioStatsEntry, ...] = ()
    io_merged_recursive: tuple[BlkioStatsEntry, ...] = ()
    io_time_recursive: tuple[BlkioStatsEntry, ...] = ()
    sectors_recursive: tuple[BlkioStatsEntry, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HugetlbStats:
    usage: int = 0
    max_usage: int = 0
    failcnt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CgroupStats:
    cpu_stats: CpuStats = field(default_factory=CpuStats)
    memory_stats: MemoryStats = field(default_factory=MemoryStats)
    pids_stats: PidsStats = field(default_factory=PidsStats)
    blkio_stats: BlkioStats = field(default_factory=BlkioStats)
    hugetlb_stats: Mapping[str, HugetlbStats] = field(default_factory=dict)
    """Keyed by page size as the kernel names it ("2MB", "1GB")."""


# --- pure parsers ------------------------------------------------------------------------------


def parse_percpu(text: str) -> tuple[int, ...]:
    """cpuacct.usage_percpu: space-separated nanoseconds per CPU."""
    return tuple(int(v) for v in text.split())


def cpu_stats_v1(*, usage: str, percpu: str, cpuacct_stat: str, cpu_stat: str) -> CpuStats:
    ticks = parse_flat_keyed(cpuacct_stat)
    ns_per_tick = 1_000_000_000 // USER_HZ
    throttle = parse_flat_keyed(cpu_stat)
    return CpuStats(
        cpu_usage=CpuUsage(
            total_usage=int(usage.strip() or 0),
            percpu_usage=parse_percpu(percpu),
            usage_in_kernelmode=ticks.get("system", 0) * ns_per_tick,
            usage_in_usermode=ticks.get("user", 0) * ns_per_tick,
        ),
        throttling_data=ThrottlingData(
            periods=throttle.get("nr_periods", 0),
            throttled_periods=throttle.get("nr_throttled", 0),
            throttled_time=throttle.get("throttled_time", 0),
        ),
    )


def cpu_stats_v2(cpu_stat: str) -> CpuStats:
    """cpu.stat of cgroup v2 (microseconds); v2 has no per-CPU usage."""
    s = parse_flat_keyed(cpu_stat)
    return CpuStats(
        cpu_usage=CpuUsage(
            total_usage=s.get("usage_usec", 0) * 1000,
            usage_in_kernelmode=s.get("system_usec", 0) * 1000,
            usage_in_usermode=s.get("user_usec", 0) * 1000,
        ),
        throttling_data=ThrottlingData(
            periods=s.get("nr_periods", 0),
            throttled_periods=s.get("nr_throttled", 0),
            throttled_time=s.get("throttled_usec", 0) * 1000,
        ),
    )


_V1_BLKIO_OPS = {"Read", "Write", "Sync", "Async", "Discard", "Total"}


def parse_blkio_v1(text: str) -> tuple[BlkioStatsEntry, ...]:
    """blkio.*_recursive: "8:0 Read 4096" lines (a trailing "Total N" line is skipped)."""
    out: list[BlkioStatsEntry] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, _, minor = parts[0].partition(":")
            op = parts[1]
        elif len(parts) == 2 and ":" in parts[0]:  # blkio.sectors, blkio.time: no op column
            major, _, minor = parts[0].partition(":")
            op = ""
            parts = [parts[0], "", parts[1]]
        else:
            continue
        try:
            out.append(
                BlkioStatsEntry(major=int(major), minor=int(minor), op=op, value=int(parts[2]))
            )
        except ValueError:
            continue
    return tuple(out)


def parse_io_stat_v2(text: str) -> BlkioStats:
    """io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device."""
    bytes_: list[BlkioStatsEntry] = []
    ios: list[BlkioStatsEntry] = []
    for line in text.splitlines():
        dev, *kvs = line.split()
        if ":" not in dev:
            continue
        major, _, minor = dev.partition(":")
        values: dict[str, int] = {}
        for kv in kvs:
            k, _, v = kv.partition("=")
            try:
                values[k] = int(v)
            except ValueError:
                continue
        ma, mi = int(major), int(minor)
        for key, op, target in (
            ("rbytes", "Read", bytes_),
            ("wbytes", "Write", bytes_),
            ("dbytes", "Discard", bytes_),
            ("rios", "Read", ios),
            ("wios", "Write", ios),
            ("dios", "Discard", ios),
        ):
            if key in values:
                target.append(BlkioStatsEntry(major=ma, minor=mi, op=op, value=values[key]))
    return BlkioStats(io_service_bytes_recursive=tuple(bytes_), io_serviced_recursive=tuple(ios))


def page_size_name(size_kb: int) -> str:
    """2048 → "2MB", 1048576 → "1GB", 64 → "64KB" (the kernel's hugetlb file naming)."""
    units = ("KB", "MB", "GB", "TB", "PB")
    i = 0
    while size_kb >= 1024 and size_kb % 1024 == 0 and i < len(units) - 1:
        size_kb //= 1024
        i += 1
    return f"{size_kb}{units[i]}"
