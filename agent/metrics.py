"""GetMetrics: Prometheus text exposition with Kata's metric names (src/agent/src/metrics.rs).

Agent process metrics (from ``/proc/self``): ``kata_agent_scrape_count``, ``kata_agent_threads``,
``kata_agent_total_time``, ``kata_agent_total_vm``, ``kata_agent_total_rss``,
``kata_agent_proc_status{item}``, ``kata_agent_io_stat{item}``, ``kata_agent_proc_stat{item}``.

Guest metrics (from ``/proc``): ``kata_guest_load{item}``, ``kata_guest_tasks{item}``,
``kata_guest_cpu_time{cpu,item}``, ``kata_guest_vm_stat{item}``,
``kata_guest_netdev_stat{interface,item}``, ``kata_guest_diskstat{disk,item}``,
``kata_guest_meminfo{item}``, ``kata_guest_filesystem_bytes{mount,device,item}``,
``kata_guest_filesystem_inodes{mount,device,item}`` (real, writable filesystems only).

A source that cannot be read is skipped (logged at debug), so a partial /proc never fails the call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

REAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "overlay"})
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC_STAT_FIELDS = [
    "pid",
    "comm",
    "state",
    "ppid",
    "pgrp",
    "session",
    "tty_nr",
    "tpgid",
    "flags",
    "minflt",
    "cminflt",
    "majflt",
    "cmajflt",
    "utime",
    "stime",
    "cutime",
    "cstime",
    "priority",
    "nice",
    "num_threads",
    "itrealvalue",
    "starttime",
    "vsize",
    "rss",
]
_CPU_FIELDS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)
_NETDEV_FIELDS = [
    "recv_bytes",
    "recv_packets",
    "recv_errs",
    "recv_drop",
    "recv_fifo",
    "recv_frame",
    "recv_compressed",
    "recv_multicast",
    "sent_bytes",
    "sent_packets",
    "sent_errs",
    "sent_drop",
    "sent_fifo",
    "sent_colls",
    "sent_carrier",
    "sent_compressed",
]
_DISK_FIELDS = [
    "reads",
    "merged",
    "sectors_read",
    "time_reading",
    "writes",
    "writes_merged",
    "sectors_written",
    "time_writing",
    "in_progress",
    "time_in_progress",
    "weighted_time_in_progress",
    "discards",
    "discards_merged",
    "sectors_discarded",
    "time_discarding",
    "flushes",
    "time_flushing",
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]],
    ) -> None:
        rows = list(samples)
        if not rows:
            return
        if name not in self._declared:
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")
            self._declared.add(name)
        for labels, value in rows:
            if labels:
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{label_text}}} {_num(value)}")
            else:
                self.lines.append(f"{name} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


class MetricsCollector:
    """Builds the GetMetrics text on demand (synchronous: run it in a thread)."""

    def __init__(self, proc_root: Path = Path("/proc")) -> None:
        self.proc = proc_root
        self.scrapes = 0

    def collect(self) -> str:
        self.scrapes += 1
        w = _Writer()
        w.metric("kata_agent_scrape_count", "counter", "Metrics scrape count", [({}, self.scrapes)])
        for part in (self._agent_process, self._guest):
            try:
                part(w)
            except OSError as err:  # pragma: no cover - a broken /proc
                log.debug("metrics source failed", extra={"error": str(err)})
        return w.text()

    # -- agent process --------------------------------------------------------------------------

    def _agent_process(self, w: _Writer) -> None:
        me = self.proc / "self"
        stat = self._read(me / "stat")
        if stat:
            # comm may contain spaces: split after the closing parenthesis
            head, _, tail = stat.rpartition(")")
            fields = [head.split("(", 1)[0].strip(), "comm", *tail.split()]
            values = dict(zip(_PROC_STAT_FIELDS, fields, strict=False))
            w.metric(
                "kata_agent_threads",
                "gauge",
                "Agent process threads",
                [({}, int(values.get("num_threads", 0)))],
            )
            total = (int(values.get("utime", 0)) + int(values.get("stime", 0))) / _CLK_TCK
            w.metric(
                "kata_agent_total_time",
                "gauge",
                "Agent process total cpu time (seconds)",
                [({}, total)],
            )
            w.metric(
                "kata_agent_total_vm",
                "gauge",
                "Agent process total virtual memory (bytes)",
                [({}, int(values.get("vsize", 0)))],
            )
            w.metric(
                "kata_agent_total_rss",
                "gauge",
                "Agent process total rss (bytes)",
                [({}, int(values.get("rss", 0)) * _PAGE)],
            )
            w.metric(
                "kata_agent_proc_stat",
                "gauge",
                "Agent process stat",
                [
                    ({"item": k}, int(v))
                    for k, v in values.items()
                    if k not in ("pid", "comm", "state") and _is_int(v)
                ],
            )
        status = self._read(me / "status")
        if status:
            rows = []
            for line in status.splitlines():
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and _is_int(parts[0]):
                    value = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
                    rows.append(({"item": key.strip()}, value))
            w.metric("kata_agent_proc_status", "gauge", "Agent process status", rows)
        io = self._read(me / "io")
        if io:
            w.metric(
                "kata_agent_io_stat",
                "gauge",
                "Agent process IO statistics",
                list(_key_values(io, ":")),
            )

    # -- guest --------------------------------------------------------------------------------

    def _guest(self, w: _Writer) -> None:
        loadavg = self._read(self.proc / "loadavg")
        if loadavg:
            parts = loadavg.split()
            w.metric(
                "kata_guest_load",
                "gauge",
                "Guest system load",
                [
                    ({"item": k}, float(v))
                    for k, v in zip(("load1", "load5", "load15"), parts[:3], strict=False)
                ],
            )
            if len(parts) > 3 and "/" in parts[3]:
                running, total = parts[3].split("/")
                w.metric(
                    "kata_guest_tasks",
                    "gauge",
                    "Guest system load",
                    [({"item": "running"}, int(running)), ({"item": "total"}, int(total))],
                )
        stat = self._read(self.proc / "stat")
        if stat:
            rows = []
            for line in stat.splitlines():
                parts = line.split()
                if parts and parts[0].startswith("cpu"):
                    cpu = "total" if parts[0] == "cpu" else parts[0][3:]
                    for item, value in zip(_CPU_FIELDS, parts[1:], strict=False):
                        rows.append(({"cpu": cpu, "item": item}, int(value) / _CLK_TCK))
            w.metric("kata_guest_cpu_time", "gauge", "Guest CPU statistics", rows)
        vmstat = self._read(self.proc / "vmstat")
        if vmstat:
            w.metric(
                "kata_guest_vm_stat",
                "gauge",
                "Guest virtual memory statistics",
                list(_key_values(vmstat, " ")),
            )
        netdev = self._read(self.proc / "net/dev")
        if netdev:
            rows = []
            for line in netdev.splitlines()[2:]:
                name, _, rest = line.partition(":")
                for item, value in zip(_NETDEV_FIELDS, rest.split(), strict=False):
                    rows.append(({"interface": name.strip(), "item": item}, int(value)))
            w.metric("kata_guest_netdev_stat", "gauge", "Guest net devices statistics", rows)
        diskstats = self._read(self.proc / "diskstats")
        if diskstats:
            rows = []
            for line in diskstats.splitlines():
                parts = line.split()
                if len(parts) < 4:
                    continue
                for item, value in zip(_DISK_FIELDS, parts[3:], strict=False):
                    rows.append(({"disk": parts[2], "item": item}, int(value)))
            w.metric("kata_guest_diskstat", "gauge", "Disks statistics in system", rows)
        meminfo = self._read(self.proc / "meminfo")
        if meminfo:
            rows = []
            for line in meminfo.splitlines():
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and _is_int(parts[0]):
                    amount = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
                    rows.append(({"item": key.strip()}, amount))
            w.metric(
                "kata_guest_meminfo", "gauge", "Statistics about memory usage in the system", rows
            )
        self._filesystems(w)

    def _filesystems(self, w: _Writer) -> None:
        mounts = self._read(self.proc / "self/mounts")
        if not mounts:
            return
        byte_rows: list[tuple[dict[str, str], float]] = []
        inode_rows: list[tuple[dict[str, str], float]] = []
        seen: set[str] = set()
        for line in mounts.splitlines():
            parts = line.split()
            if len(parts) < 4 or parts[2] not in REAL_FILESYSTEMS:
                continue
            device, mount, options = parts[0], _unescape(parts[1]), parts[3].split(",")
            if "ro" in options or mount in seen:
                continue
            seen.add(mount)
            try:
                st = os.statvfs(mount)
            except OSError:
                continue
            labels = {"mount": mount, "device": device}
            byte_rows += [
                ({**labels, "item": "total"}, st.f_blocks * st.f_frsize),
                ({**labels, "item": "free"}, st.f_bfree * st.f_frsize),
                ({**labels, "item": "avail"}, st.f_bavail * st.f_frsize),
            ]
            inode_rows += [
                ({**labels, "item": "total"}, st.f_files),
                ({**labels, "item": "free"}, st.f_ffree),
            ]
        w.metric("kata_guest_filesystem_bytes", "gauge", "Filesystems bytes", byte_rows)
        w.metric("kata_guest_filesystem_inodes", "gauge", "Filesystems inodes", inode_rows)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text()
        except OSError as err:
            log.debug("metrics: cannot read", extra={"path": str(path), "error": str(err)})
            return ""


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _key_values(text: str, sep: str) -> Iterable[tuple[dict[str, str], float]]:
    for line in text.splitlines():
        key, _, raw = line.partition(sep)
        raw = raw.strip()
        if key and _is_int(raw):
            yield {"item": key.strip()}, int(raw)


def _unescape(path: str) -> str:
    return (
        path.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


Collector = Callable[[], str]
