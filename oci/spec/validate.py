"""Pure checks of a decoded `Spec` (the equivalent of runc's `libcontainer/configs/validate`
plus kata's `rustjail/src/validator.rs`).

`validate(spec)` returns every `Problem` found; each names the offending field by its JSON path
(`linux.namespaces[2].type: unknown namespace "foo"`). Problems of severity "warning" describe
input that is accepted but probably not what the author meant (a relative mount destination).
`check(spec)` raises `SpecError` with all errors and returns the warnings.

Nothing here touches the host: whether the rootfs exists, whether the kernel supports a
namespace or knows a syscall name is for the engine to find out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from . import names
from ._codec import Problem, SpecError
from .linux import (
    Linux,
    LinuxIDMapping,
    LinuxResources,
    LinuxSeccomp,
)
from .runtime import Hook, Mount, Process, Spec

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64_MIN = -(1 << 63)
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
_CPU_LIST_RE = re.compile(r"^\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*$")
_PAGE_SIZE_RE = re.compile(r"^\d+(?:KB|MB|GB|TB|PB)$")
_SYSCALL_NAME_RE = re.compile(r"^[a-z0-9_]+$")
_UNIFIED_KEY_RE = re.compile(r"^[a-z_0-9]+\.[A-Za-z_0-9.\-]+$")


def _q(value: object) -> str:
    return json.dumps(value)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, "warning"))

    def absolute(self, path: str, value: str, what: str = "path") -> bool:
        if not value:
            self.error(path, f"{what} must not be empty")
            return False
        if not value.startswith("/"):
            self.error(path, f"{what} {_q(value)} is not absolute")
            return False
        return True

    def env(self, path: str, env: Iterable[str]) -> None:
        for i, item in enumerate(env):
            name, sep, _ = item.partition("=")
            if not sep or not name or "=" in name or "\x00" in name:
                self.error(f"{path}[{i}]", f"{_q(item)} is not of the form NAME=value")

    def u32(self, path: str, value: int | None) -> None:
        if value is not None and not 0 <= value <= _U32:
            self.error(path, f"{value} is out of range (0 to {_U32})")

    def u64(self, path: str, value: int | None) -> None:
        if value is not None and not 0 <= value <= _U64:
            self.error(path, f"{value} is out of range (0 to {_U64})")

    def in_range(self, path: str, value: int | None, lo: int, hi: int) -> None:
        if value is not None and not lo <= value <= hi:
            self.error(path, f"{value} is out of range ({lo} to {hi})")

    # --- top level -------------------------------------------------------------------------

    def spec(self, spec: Spec) -> None:
        m = _VERSION_RE.match(spec.oci_version)
        if m is None:
            self.error("ociVersion", f"{_q(spec.oci_version)} is not a semantic version")
        elif m.group(1) != "1":
            self.error(
                "ociVersion",
                f"unsupported version {_q(spec.oci_version)} (this runtime implements 1.x)",
            )
        if spec.root is None:
            self.error("root", "required on Linux")
        elif not spec.root.path:
            self.error("root.path", "must not be empty")
        if spec.process is not None:
            self.process("process", spec.process)
        linux = spec.linux if spec.linux is not None else Linux()
        namespaces = {ns.type for ns in linux.namespaces}
        if spec.hostname and "uts" not in namespaces:
            self.error("hostname", "setting the hostname needs a private uts namespace")
        if spec.domainname and "uts" not in namespaces:
            self.error("domainname", "setting the domainname needs a private uts namespace")
        for i, mount in enumerate(spec.mounts):
            self.mount(f"mounts[{i}]", mount)
        if spec.hooks is not None:
            for key, hooks in (
                ("prestart", spec.hooks.prestart),
                ("createRuntime", spec.hooks.create_runtime),
                ("createContainer", spec.hooks.create_container),
                ("startContainer", spec.hooks.start_container),
                ("poststart", spec.hooks.poststart),
                ("poststop", spec.hooks.poststop),
            ):
                for i, hook in enumerate(hooks):
                    self.hook(f"hooks.{key}[{i}]", hook)
        for key in spec.annotations:
            if not key:
                self.error("annotations", "keys must not be empty")
        if spec.linux is not None:
            self.linux("linux", spec.linux)

    def process(self, path: str, p: Process) -> None:
        if not p.args:
            self.error(f"{path}.args", "must not be empty")
        self.absolute(f"{path}.cwd", p.cwd, "cwd")
        self.env(f"{path}.env", p.env)
        self.u32(f"{path}.user.uid", p.user.uid)
        self.u32(f"{path}.user.gid", p.user.gid)
        for i, gid in enumerate(p.user.additional_gids):
            self.u32(f"{path}.user.additionalGids[{i}]", gid)
        self.in_range(f"{path}.user.umask", p.user.umask, 0, 0o7777)
        if p.console_size is not None and not p.terminal:
            self.warn(f"{path}.consoleSize", "ignored because process.terminal is false")
        if p.console_size is not None:
            self.u32(f"{path}.consoleSize.height", p.console_size.height)
            self.u32(f"{path}.consoleSize.width", p.console_size.width)
        seen: dict[str, int] = {}
        for i, rl in enumerate(p.rlimits):
            rpath = f"{path}.rlimits[{i}]"
            if rl.type not in names.RLIMITS:
                self.error(f"{rpath}.type", f"unknown rlimit {_q(rl.type)}")
            elif rl.type in seen:
                self.error(
                    f"{rpath}.type", f"duplicate rlimit {_q(rl.type)} (see [{seen[rl.type]}])"
                )
            else:
                seen[rl.type] = i
            self.u64(f"{rpath}.hard", rl.hard)
            self.u64(f"{rpath}.soft", rl.soft)
            if 0 <= rl.hard < rl.soft:
                self.error(f"{rpath}.soft", f"soft limit {rl.soft} exceeds hard limit {rl.hard}")
        if p.capabilities is not None:
            caps = p.capabilities
            for key, values in (
                ("bounding", caps.bounding),
                ("effective", caps.effective),
                ("inheritable", caps.inheritable),
                ("permitted", caps.permitted),
                ("ambient", caps.ambient),
            ):
                for i, cap in enumerate(values):
                    if cap not in names.CAPABILITIES:
                        self.error(
                            f"{path}.capabilities.{key}[{i}]", f"unknown capability {_q(cap)}"
                        )
        self.in_range(f"{path}.oomScoreAdj", p.oom_score_adj, -1000, 1000)
        if p.io_priority is not None:
            if p.io_priority.class_ not in names.IO_PRIORITY_CLASSES:
                self.error(
                    f"{path}.ioPriority.class",
                    f"unknown I/O priority class {_q(p.io_priority.class_)}",
                )
            self.in_range(f"{path}.ioPriority.priority", p.io_priority.priority, 0, 7)
        if p.scheduler is not None:
            s = p.scheduler
            if s.policy not in names.SCHEDULER_POLICIES:
                self.error(f"{path}.scheduler.policy", f"unknown policy {_q(s.policy)}")
            self.in_range(f"{path}.scheduler.nice", s.nice, -20, 19)
            for i, flag in enumerate(s.flags):
                if flag not in names.SCHEDULER_FLAGS:
                    self.error(f"{path}.scheduler.flags[{i}]", f"unknown flag {_q(flag)}")
            if s.policy != "SCHED_DEADLINE" and (s.runtime or s.deadline or s.period):
                self.error(
                    f"{path}.scheduler",
                    "runtime, deadline and period are only valid with SCHED_DEADLINE",
                )
        if p.exec_cpu_affinity is not None:
            for key, value in (
                ("initial", p.exec_cpu_affinity.initial),
                ("final", p.exec_cpu_affinity.final),
            ):
                if value is not None and not _CPU_LIST_RE.match(value):
                    self.error(f"{path}.execCPUAffinity.{key}", f"{_q(value)} is not a CPU list")

    def mount(self, path: str, m: Mount) -> None:
        if not m.destination:
            self.error(f"{path}.destination", "must not be empty")
        elif not m.destination.startswith("/"):
            self.warn(
                f"{path}.destination",
                f"{_q(m.destination)} is relative; it is taken relative to the container's /",
            )
        if m.uid_mappings or m.gid_mappings:
            if not (m.uid_mappings and m.gid_mappings):
                self.error(path, "uidMappings and gidMappings must be given together")
            is_bind = m.type == "bind" or "bind" in m.options or "rbind" in m.options
            if not is_bind:
                self.error(path, "id-mapped mounts are only supported for bind mounts")
            self.mappings(f"{path}.uidMappings", m.uid_mappings)
            self.mappings(f"{path}.gidMappings", m.gid_mappings)

    def hook(self, path: str, h: Hook) -> None:
        self.absolute(f"{path}.path", h.path)
        self.env(f"{path}.env", h.env)
        if h.timeout is not None and h.timeout <= 0:
            self.error(f"{path}.timeout", f"must be positive, got {h.timeout}")

    def mappings(self, path: str, maps: Iterable[LinuxIDMapping]) -> None:
        for i, m in enumerate(maps):
            self.u32(f"{path}[{i}].containerID", m.container_id)
            self.u32(f"{path}[{i}].hostID", m.host_id)
            if m.size <= 0 or m.size > _U32:
                self.error(f"{path}[{i}].size", f"must be between 1 and {_U32}, got {m.size}")

    # --- linux -----------------------------------------------------------------------------

    def linux(self, path: str, lx: Linux) -> None:
        types: dict[str, int] = {}
        for i, ns in enumerate(lx.namespaces):
            npath = f"{path}.namespaces[{i}]"
            if ns.type not in names.NAMESPACES:
                self.error(f"{npath}.type", f"unknown namespace {_q(ns.type)}")
            elif ns.type in types:
                self.error(
                    f"{npath}.type",
                    f"duplicate namespace {_q(ns.type)} (see [{types[ns.type]}])",
                )
            else:
                types[ns.type] = i
            if ns.path is not None:
                self.absolute(f"{npath}.path", ns.path)
        user_ns = lx.namespace("user")
        if lx.uid_mappings or lx.gid_mappings:
            if user_ns is None:
                self.error(f"{path}.uidMappings", "id mappings need a user namespace")
        elif user_ns is not None and user_ns.path is None:
            self.error(
                f"{path}.namespaces[{types['user']}]",
                "a new user namespace needs uidMappings and gidMappings",
            )
        if (
            user_ns is not None
            and user_ns.path is None
            and bool(lx.uid_mappings) != bool(lx.gid_mappings)
        ):
            self.error(f"{path}", "uidMappings and gidMappings must be given together")
        self.mappings(f"{path}.uidMappings", lx.uid_mappings)
        self.mappings(f"{path}.gidMappings", lx.gid_mappings)

        for key in lx.sysctl:
            self.sysctl(f"{path}.sysctl.{key}", key, types)

        for i, dev in enumerate(lx.devices):
            dpath = f"{path}.devices[{i}]"
            self.absolute(f"{dpath}.path", dev.path)
            if dev.type not in names.DEVICE_TYPES:
                self.error(f"{dpath}.type", f"unknown device type {_q(dev.type)}")
            elif dev.type != "p" and (dev.major is None or dev.minor is None):
                self.error(dpath, f"major and minor are required for type {_q(dev.type)}")
            self.in_range(f"{dpath}.fileMode", dev.file_mode, 0, 0o7777)
            self.u32(f"{dpath}.uid", dev.uid)
            self.u32(f"{dpath}.gid", dev.gid)
        seen_dev: dict[str, int] = {}
        for i, dev in enumerate(lx.devices):
            if dev.path in seen_dev:
                self.error(
                    f"{path}.devices[{i}].path",
                    f"duplicate device {_q(dev.path)} (see [{seen_dev[dev.path]}])",
                )
            seen_dev.setdefault(dev.path, i)

        if lx.resources is not None:
            self.resources(f"{path}.resources", lx.resources)
        if lx.cgroups_path is not None and ".." in lx.cgroups_path.replace(":", "/").split("/"):
            self.error(f"{path}.cgroupsPath", f"{_q(lx.cgroups_path)} must not contain '..'")
        if lx.seccomp is not None:
            self.seccomp(f"{path}.seccomp", lx.seccomp)
        if (
            lx.rootfs_propagation is not None
            and lx.rootfs_propagation not in names.ROOTFS_PROPAGATIONS
        ):
            self.error(
                f"{path}.rootfsPropagation",
                f"unknown propagation {_q(lx.rootfs_propagation)}",
            )
        for key, paths in (("maskedPaths", lx.masked_paths), ("readonlyPaths", lx.readonly_paths)):
            if paths and "mount" not in types:
                self.error(f"{path}.{key}", "needs a private mount namespace")
            for i, p in enumerate(paths):
                self.absolute(f"{path}.{key}[{i}]", p)
        if lx.intel_rdt is not None and lx.intel_rdt.clos_id is not None:
            clos = lx.intel_rdt.clos_id
            if clos in ("", ".", "..") or "/" in clos:
                self.error(f"{path}.intelRdt.closID", f"invalid CLOS id {_q(clos)}")
        if lx.personality is not None and lx.personality.domain not in names.PERSONALITY_DOMAINS:
            self.error(f"{path}.personality.domain", f"unknown domain {_q(lx.personality.domain)}")
        if lx.time_offsets:
            time_ns = lx.namespace("time")
            if time_ns is None:
                self.error(f"{path}.timeOffsets", "needs a time namespace")
            elif time_ns.path is not None:
                self.error(
                    f"{path}.timeOffsets", "cannot be set when joining an existing time namespace"
                )
            for clock, off in lx.time_offsets.items():
                if clock not in names.TIME_OFFSET_CLOCKS:
                    self.error(f"{path}.timeOffsets.{clock}", f"unknown clock {_q(clock)}")
                self.in_range(f"{path}.timeOffsets.{clock}.nanosecs", off.nanosecs, 0, 999_999_999)

    def sysctl(self, path: str, key: str, namespaces: dict[str, int]) -> None:
        parts = key.split(".")
        if not key or any(p in ("", "..") for p in parts) or "/" in key:
            self.error(path, "invalid sysctl name")
            return
        if key in names.IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if "ipc" not in namespaces:
                self.error(path, "needs a private ipc namespace")
        elif key.startswith("net."):
            if "network" not in namespaces:
                self.error(path, "needs a private network namespace")
        elif key == "kernel.domainname":
            if "uts" not in namespaces:
                self.error(path, "needs a private uts namespace")
        elif key == "kernel.hostname":
            self.error(path, "not supported: use the hostname field instead")
        else:
            self.error(path, "is not namespaced; it would change the host")

    def resources(self, path: str, r: LinuxResources) -> None:
        for i, d in enumerate(r.devices):
            dpath = f"{path}.devices[{i}]"
            if d.type is not None and d.type not in names.DEVICE_CGROUP_TYPES:
                self.error(f"{dpath}.type", f"unknown device type {_q(d.type)} (a, c or b)")
            if d.access is not None and (not d.access or set(d.access) - set("rwm")):
                self.error(f"{dpath}.access", f'{_q(d.access)} is not a subset of "rwm"')
        if r.memory is not None:
            mem = r.memory
            mpath = f"{path}.memory"
            for key, value in (
                ("limit", mem.limit),
                ("reservation", mem.reservation),
                ("swap", mem.swap),
                ("kernel", mem.kernel),
                ("kernelTCP", mem.kernel_tcp),
            ):
                if value is not None and value < -1:
                    self.error(f"{mpath}.{key}", f"must be -1 (unlimited) or >= 0, got {value}")
            if mem.limit is not None and mem.limit > 0:
                if mem.reservation is not None and mem.reservation > mem.limit:
                    self.error(
                        f"{mpath}.reservation",
                        f"reservation {mem.reservation} exceeds the limit {mem.limit}",
                    )
                if mem.swap is not None and 0 < mem.swap < mem.limit:
                    self.error(
                        f"{mpath}.swap",
                        f"memory+swap limit {mem.swap} is lower than the memory limit {mem.limit}",
                    )
            self.in_range(f"{mpath}.swappiness", mem.swappiness, 0, 100)
        if r.cpu is not None:
            cpu = r.cpu
            cpath = f"{path}.cpu"
            if cpu.quota is not None and (cpu.quota == 0 or cpu.quota < -1):
                self.error(f"{cpath}.quota", f"must be -1 (unlimited) or > 0, got {cpu.quota}")
            self.in_range(f"{cpath}.period", cpu.period, 1000, 1_000_000)
            if cpu.shares is not None and cpu.shares != 0:
                self.in_range(f"{cpath}.shares", cpu.shares, 2, 262144)
            self.u64(f"{cpath}.burst", cpu.burst)
            self.u64(f"{cpath}.realtimePeriod", cpu.realtime_period)
            for key, cpulist in (("cpus", cpu.cpus), ("mems", cpu.mems)):
                if cpulist and not _CPU_LIST_RE.match(cpulist):
                    self.error(f"{cpath}.{key}", f'{_q(cpulist)} is not a list like "0-3,6"')
            if cpu.idle is not None and cpu.idle not in (0, 1):
                self.error(f"{cpath}.idle", f"must be 0 or 1, got {cpu.idle}")
        if r.pids is not None and r.pids.limit is not None and r.pids.limit < -1:
            self.error(f"{path}.pids.limit", f"must be -1 (unlimited) or >= 0, got {r.pids.limit}")
        if r.block_io is not None:
            b = r.block_io
            bpath = f"{path}.blockIO"
            for key, w in (("weight", b.weight), ("leafWeight", b.leaf_weight)):
                if w is not None and w != 0:
                    self.in_range(f"{bpath}.{key}", w, 10, 1000)
            for i, wd in enumerate(b.weight_device):
                for key, w in (("weight", wd.weight), ("leafWeight", wd.leaf_weight)):
                    if w is not None and w != 0:
                        self.in_range(f"{bpath}.weightDevice[{i}].{key}", w, 10, 1000)
            for key, devs in (
                ("throttleReadBpsDevice", b.throttle_read_bps_device),
                ("throttleWriteBpsDevice", b.throttle_write_bps_device),
                ("throttleReadIOPSDevice", b.throttle_read_iops_device),
                ("throttleWriteIOPSDevice", b.throttle_write_iops_device),
            ):
                for i, td in enumerate(devs):
                    self.u64(f"{bpath}.{key}[{i}].rate", td.rate)
                    if td.major < 0 or td.minor < 0:
                        self.error(f"{bpath}.{key}[{i}]", "major and minor must be >= 0")
        seen_pages: set[str] = set()
        for i, h in enumerate(r.hugepage_limits):
            hpath = f"{path}.hugepageLimits[{i}].pageSize"
            if not _PAGE_SIZE_RE.match(h.page_size):
                self.error(hpath, f'{_q(h.page_size)} is not a page size like "2MB"')
            elif h.page_size in seen_pages:
                self.error(hpath, f"duplicate page size {_q(h.page_size)}")
            seen_pages.add(h.page_size)
            self.u64(f"{path}.hugepageLimits[{i}].limit", h.limit)
        if r.network is not None:
            self.u32(f"{path}.network.classID", r.network.class_id)
        for key in r.unified:
            if not _UNIFIED_KEY_RE.match(key) or ".." in key:
                self.error(
                    f"{path}.unified.{key}",
                    'is not a cgroup v2 interface file name like "memory.high"',
                )
            elif key.startswith("cgroup."):
                self.error(f"{path}.unified.{key}", "cgroup core files cannot be set")

    def seccomp(self, path: str, s: LinuxSeccomp) -> None:
        notify = False
        if s.default_action not in names.SECCOMP_ACTIONS:
            self.error(f"{path}.defaultAction", f"unknown action {_q(s.default_action)}")
        notify |= s.default_action == "SCMP_ACT_NOTIFY"
        if s.default_errno_ret is not None and s.default_action not in (
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_TRACE",
        ):
            self.error(
                f"{path}.defaultErrnoRet", "only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
            )
        for i, arch in enumerate(s.architectures):
            if arch not in names.SECCOMP_ARCHES:
                self.error(f"{path}.architectures[{i}]", f"unknown architecture {_q(arch)}")
        for i, flag in enumerate(s.flags):
            if flag not in names.SECCOMP_FLAGS:
                self.error(f"{path}.flags[{i}]", f"unknown flag {_q(flag)}")
        for i, sc in enumerate(s.syscalls):
            spath = f"{path}.syscalls[{i}]"
            if not sc.names:
                self.error(f"{spath}.names", "must not be empty")
            for j, name in enumerate(sc.names):
                if not _SYSCALL_NAME_RE.match(name):
                    self.error(f"{spath}.names[{j}]", f"invalid syscall name {_q(name)}")
            if sc.action not in names.SECCOMP_ACTIONS:
                self.error(f"{spath}.action", f"unknown action {_q(sc.action)}")
            notify |= sc.action == "SCMP_ACT_NOTIFY"
            if sc.errno_ret is not None and sc.action not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
                self.error(f"{spath}.errnoRet", "only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE")
            self.u32(f"{spath}.errnoRet", sc.errno_ret)
            for j, arg in enumerate(sc.args):
                apath = f"{spath}.args[{j}]"
                self.in_range(f"{apath}.index", arg.index, 0, 5)
                if arg.op not in names.SECCOMP_OPERATORS:
                    self.error(f"{apath}.op", f"unknown operator {_q(arg.op)}")
                self.u64(f"{apath}.value", arg.value)
                self.u64(f"{apath}.valueTwo", arg.value_two)
        if notify and not s.listener_path:
            self.error(f"{path}.listenerPath", "required when an action is SCMP_ACT_NOTIFY")
        if s.listener_path is not None:
            self.absolute(f"{path}.listenerPath", s.listener_path)


def validate(spec: Spec) -> list[Problem]:
    """Every problem found in `spec` (errors and warnings), in document order."""
    checker = _Checker()
    checker.spec(spec)
    return checker.problems


def check(spec: Spec) -> list[Problem]:
    """Raise `SpecError` if `spec` has errors; return its warnings."""
    problems = validate(spec)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise SpecError(errors)
    return [p for p in problems if p.severity == "warning"]


def check_resources(resources: LinuxResources, path: str = "linux.resources") -> None:
    """Validate a resources block on its own (UpdateContainer, `kata-oci update`)."""
    checker = _Checker()
    checker.resources(path, resources)
    errors = [p for p in checker.problems if p.severity == "error"]
    if errors:
        raise SpecError(errors)


def check_process(process: Process, path: str = "process") -> list[Problem]:
    """Validate a process on its own (an exec's process.json); raise on errors, return warnings."""
    checker = _Checker()
    checker.process(path, process)
    errors = [p for p in checker.problems if p.severity == "error"]
    if errors:
        raise SpecError(errors)
    return [p for p in checker.problems if p.severity == "warning"]
