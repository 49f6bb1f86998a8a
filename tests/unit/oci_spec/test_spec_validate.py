"""Every validation rule of oci.spec.validate, one table row each: the patch applied to a valid
spec and the exact problem text (path: message) it must produce."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

import oci.spec as s

Doc = dict[str, Any]


def base() -> Doc:
    """A valid spec with every namespace a rule may need (user ns with mappings)."""
    d = s.default_spec().to_dict()
    d["linux"]["namespaces"] = [
        {"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")
    ]
    return d


def with_user(d: Doc) -> None:
    d["linux"]["namespaces"].append({"type": "user"})
    d["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    d["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]


def ns_only(*types: str) -> Callable[[Doc], None]:
    def patch(d: Doc) -> None:
        d["linux"]["namespaces"] = [{"type": t} for t in types]
        d["linux"].pop("maskedPaths", None)
        d["linux"].pop("readonlyPaths", None)
        d.pop("hostname", None)

    return patch


def setp(path: str, value: Any) -> Callable[[Doc], None]:
    """Set a dotted path ("process.user.uid", "linux.namespaces.2.type") creating objects."""

    def patch(d: Doc) -> None:
        keys = path.split(".")
        cur: Any = d
        for k in keys[:-1]:
            cur = cur[int(k)] if isinstance(cur, list) else cur.setdefault(k, {})
        if isinstance(cur, list):
            cur[int(keys[-1])] = value
        else:
            cur[keys[-1]] = value

    return patch


def both(*patches: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def patch(d: Doc) -> None:
        for p in patches:
            p(d)

    return patch


def delp(path: str) -> Callable[[Doc], None]:
    def patch(d: Doc) -> None:
        *head, last = path.split(".")
        cur: Any = d
        for k in head:
            cur = cur[k]
        del cur[last]

    return patch


SECCOMP = {"defaultAction": "SCMP_ACT_ALLOW"}

CASES: list[tuple[str, Callable[[Doc], None], str]] = [
    # top level
    (
        "version-not-semver",
        setp("ociVersion", "one"),
        'ociVersion: "one" is not a semantic version',
    ),
    (
        "version-major-2",
        setp("ociVersion", "2.0.0"),
        'ociVersion: unsupported version "2.0.0" (this runtime implements 1.x)',
    ),
    ("root-missing", delp("root"), "root: required on Linux"),
    ("root-path-empty", setp("root.path", ""), "root.path: must not be empty"),
    (
        "hostname-without-uts",
        both(ns_only("mount"), setp("hostname", "h")),
        "hostname: setting the hostname needs a private uts namespace",
    ),
    (
        "domainname-without-uts",
        both(ns_only("mount"), setp("domainname", "d")),
        "domainname: setting the domainname needs a private uts namespace",
    ),
    ("annotation-empty-key", setp("annotations", {"": "x"}), "annotations: keys must not be empty"),
    # process
    ("args-empty", setp("process.args", []), "process.args: must not be empty"),
    ("cwd-relative", setp("process.cwd", "tmp"), 'process.cwd: cwd "tmp" is not absolute'),
    ("cwd-empty", setp("process.cwd", ""), "process.cwd: cwd must not be empty"),
    (
        "env-no-equals",
        setp("process.env", ["A=1", "B"]),
        'process.env[1]: "B" is not of the form NAME=value',
    ),
    (
        "env-empty-name",
        setp("process.env", ["=1"]),
        'process.env[0]: "=1" is not of the form NAME=value',
    ),
    (
        "uid-range",
        setp("process.user.uid", 1 << 32),
        "process.user.uid: 4294967296 is out of range (0 to 4294967295)",
    ),
    ("gid-negative", setp("process.user.gid", -1), "process.user.gid: -1 is out of range"),
    (
        "additional-gid-range",
        setp("process.user.additionalGids", [1, -5]),
        "process.user.additionalGids[1]: -5 is out of range",
    ),
    (
        "umask-range",
        setp("process.user.umask", 0o10000),
        "process.user.umask: 4096 is out of range",
    ),
    (
        "rlimit-unknown",
        setp("process.rlimits", [{"type": "RLIMIT_FOO", "hard": 1, "soft": 1}]),
        'process.rlimits[0].type: unknown rlimit "RLIMIT_FOO"',
    ),
    (
        "rlimit-duplicate",
        setp(
            "process.rlimits",
            [
                {"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1},
                {"type": "RLIMIT_NOFILE", "hard": 2, "soft": 2},
            ],
        ),
        'process.rlimits[1].type: duplicate rlimit "RLIMIT_NOFILE" (see [0])',
    ),
    (
        "rlimit-soft-over-hard",
        setp("process.rlimits", [{"type": "RLIMIT_CORE", "hard": 1, "soft": 2}]),
        "process.rlimits[0].soft: soft limit 2 exceeds hard limit 1",
    ),
    (
        "rlimit-range",
        setp("process.rlimits", [{"type": "RLIMIT_CORE", "hard": 1 << 64, "soft": 0}]),
        "process.rlimits[0].hard: 18446744073709551616 is out of range",
    ),
    (
        "capability-unknown",
        setp("process.capabilities.effective", ["CAP_KILL", "CAP_FOO"]),
        'process.capabilities.effective[1]: unknown capability "CAP_FOO"',
    ),
    (
        "capability-without-prefix",
        setp("process.capabilities.ambient", ["KILL"]),
        'process.capabilities.ambient[0]: unknown capability "KILL"',
    ),
    (
        "oom-score-adj-range",
        setp("process.oomScoreAdj", 1001),
        "process.oomScoreAdj: 1001 is out of range (-1000 to 1000)",
    ),
    (
        "ioprio-class",
        setp("process.ioPriority", {"class": "IOPRIO_CLASS_X", "priority": 0}),
        'process.ioPriority.class: unknown I/O priority class "IOPRIO_CLASS_X"',
    ),
    (
        "ioprio-priority",
        setp("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}),
        "process.ioPriority.priority: 8 is out of range (0 to 7)",
    ),
    (
        "scheduler-policy",
        setp("process.scheduler", {"policy": "SCHED_X"}),
        'process.scheduler.policy: unknown policy "SCHED_X"',
    ),
    (
        "scheduler-nice",
        setp("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20}),
        "process.scheduler.nice: 20 is out of range (-20 to 19)",
    ),
    (
        "scheduler-flag",
        setp("process.scheduler", {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}),
        'process.scheduler.flags[0]: unknown flag "SCHED_FLAG_X"',
    ),
    (
        "scheduler-deadline-fields",
        setp("process.scheduler", {"policy": "SCHED_OTHER", "runtime": 10}),
        "process.scheduler: runtime, deadline and period are only valid with SCHED_DEADLINE",
    ),
    (
        "cpu-affinity",
        setp("process.execCPUAffinity", {"initial": "0-", "final": "1"}),
        'process.execCPUAffinity.initial: "0-" is not a CPU list',
    ),
    (
        "console-size-range",
        setp("process.consoleSize", {"height": -1, "width": 1}),
        "process.consoleSize.height: -1 is out of range",
    ),
    # mounts and hooks
    (
        "mount-destination-empty",
        setp("mounts.0.destination", ""),
        "mounts[0].destination: must not be empty",
    ),
    (
        "idmap-needs-both",
        setp(
            "mounts.0",
            {
                "destination": "/d",
                "type": "bind",
                "source": "/s",
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            },
        ),
        "mounts[0]: uidMappings and gidMappings must be given together",
    ),
    (
        "idmap-bind-only",
        setp(
            "mounts.0",
            {
                "destination": "/d",
                "type": "tmpfs",
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            },
        ),
        "mounts[0]: id-mapped mounts are only supported for bind mounts",
    ),
    (
        "idmap-size",
        setp(
            "mounts.0",
            {
                "destination": "/d",
                "options": ["rbind"],
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}],
                "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}],
            },
        ),
        "mounts[0].uidMappings[0].size: must be between 1 and 4294967295, got 0",
    ),
    (
        "hook-relative",
        setp("hooks", {"poststop": [{"path": "true"}]}),
        'hooks.poststop[0].path: path "true" is not absolute',
    ),
    (
        "hook-env",
        setp("hooks", {"prestart": [{"path": "/bin/true", "env": ["OK=1", "BROKEN"]}]}),
        'hooks.prestart[0].env[1]: "BROKEN" is not of the form NAME=value',
    ),
    (
        "hook-timeout",
        setp("hooks", {"createRuntime": [{"path": "/bin/true", "timeout": 0}]}),
        "hooks.createRuntime[0].timeout: must be positive, got 0",
    ),
    # namespaces and id mappings
    (
        "namespace-unknown",
        setp("linux.namespaces.2", {"type": "foo"}),
        'linux.namespaces[2].type: unknown namespace "foo"',
    ),
    (
        "namespace-duplicate",
        setp("linux.namespaces.5", {"type": "pid"}),
        'linux.namespaces[5].type: duplicate namespace "pid" (see [0])',
    ),
    (
        "namespace-path-relative",
        setp("linux.namespaces.1", {"type": "network", "path": "netns/x"}),
        'linux.namespaces[1].path: path "netns/x" is not absolute',
    ),
    (
        "mappings-need-userns",
        setp("linux.uidMappings", [{"containerID": 0, "hostID": 1, "size": 1}]),
        "linux.uidMappings: id mappings need a user namespace",
    ),
    (
        "userns-needs-mappings",
        setp("linux.namespaces.5", {"type": "user"}),
        "linux.namespaces[5]: a new user namespace needs uidMappings and gidMappings",
    ),
    (
        "userns-both-mappings",
        both(with_user, delp("linux.gidMappings")),
        "linux: uidMappings and gidMappings must be given together",
    ),
    (
        "mapping-host-id-range",
        both(with_user, setp("linux.gidMappings", [{"containerID": 0, "hostID": -1, "size": 1}])),
        "linux.gidMappings[0].hostID: -1 is out of range",
    ),
    # sysctl
    (
        "sysctl-ipc-needs-ipcns",
        both(ns_only("mount", "uts"), setp("linux.sysctl", {"kernel.shmmax": "1"})),
        "linux.sysctl.kernel.shmmax: needs a private ipc namespace",
    ),
    (
        "sysctl-mqueue-needs-ipcns",
        both(ns_only("mount"), setp("linux.sysctl", {"fs.mqueue.msg_max": "1"})),
        "linux.sysctl.fs.mqueue.msg_max: needs a private ipc namespace",
    ),
    (
        "sysctl-net-needs-netns",
        both(ns_only("mount"), setp("linux.sysctl", {"net.ipv4.ip_forward": "1"})),
        "linux.sysctl.net.ipv4.ip_forward: needs a private network namespace",
    ),
    (
        "sysctl-domainname-needs-uts",
        both(ns_only("mount"), setp("linux.sysctl", {"kernel.domainname": "x"})),
        "linux.sysctl.kernel.domainname: needs a private uts namespace",
    ),
    (
        "sysctl-hostname",
        setp("linux.sysctl", {"kernel.hostname": "x"}),
        "linux.sysctl.kernel.hostname: not supported: use the hostname field instead",
    ),
    (
        "sysctl-host-wide",
        setp("linux.sysctl", {"vm.swappiness": "1"}),
        "linux.sysctl.vm.swappiness: is not namespaced; it would change the host",
    ),
    (
        "sysctl-bad-name",
        setp("linux.sysctl", {"net..x": "1"}),
        "linux.sysctl.net..x: invalid sysctl name",
    ),
    # devices
    (
        "device-relative",
        setp("linux.devices", [{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]),
        'linux.devices[0].path: path "dev/x" is not absolute',
    ),
    (
        "device-type",
        setp("linux.devices", [{"path": "/dev/x", "type": "z"}]),
        'linux.devices[0].type: unknown device type "z"',
    ),
    (
        "device-needs-major-minor",
        setp("linux.devices", [{"path": "/dev/x", "type": "c"}]),
        'linux.devices[0]: major and minor are required for type "c"',
    ),
    (
        "device-file-mode",
        setp(
            "linux.devices",
            [{"path": "/dev/x", "type": "c", "major": 1, "minor": 1, "fileMode": 0o20000}],
        ),
        "linux.devices[0].fileMode: 8192 is out of range",
    ),
    (
        "device-uid",
        setp("linux.devices", [{"path": "/dev/x", "type": "p", "uid": -2}]),
        "linux.devices[0].uid: -2 is out of range",
    ),
    (
        "device-duplicate",
        setp("linux.devices", [{"path": "/dev/x", "type": "p"}, {"path": "/dev/x", "type": "p"}]),
        'linux.devices[1].path: duplicate device "/dev/x" (see [0])',
    ),
    # resources
    (
        "devcgroup-type",
        setp("linux.resources.devices", [{"allow": True, "type": "x", "access": "r"}]),
        'linux.resources.devices[0].type: unknown device type "x" (a, c or b)',
    ),
    (
        "devcgroup-access",
        setp("linux.resources.devices", [{"allow": True, "type": "c", "access": "rwx"}]),
        'linux.resources.devices[0].access: "rwx" is not a subset of "rwm"',
    ),
    (
        "memory-negative",
        setp("linux.resources.memory", {"limit": -2}),
        "linux.resources.memory.limit: must be -1 (unlimited) or >= 0, got -2",
    ),
    (
        "memory-reservation-over-limit",
        setp("linux.resources.memory", {"limit": 100, "reservation": 200}),
        "linux.resources.memory.reservation: reservation 200 exceeds the limit 100",
    ),
    (
        "memory-swap-under-limit",
        setp("linux.resources.memory", {"limit": 200, "swap": 100}),
        "linux.resources.memory.swap: memory+swap limit 100 is lower than the memory limit 200",
    ),
    (
        "memory-swappiness",
        setp("linux.resources.memory", {"swappiness": 101}),
        "linux.resources.memory.swappiness: 101 is out of range (0 to 100)",
    ),
    (
        "cpu-quota-zero",
        setp("linux.resources.cpu", {"quota": 0}),
        "linux.resources.cpu.quota: must be -1 (unlimited) or > 0, got 0",
    ),
    (
        "cpu-period",
        setp("linux.resources.cpu", {"period": 999}),
        "linux.resources.cpu.period: 999 is out of range (1000 to 1000000)",
    ),
    (
        "cpu-shares",
        setp("linux.resources.cpu", {"shares": 1}),
        "linux.resources.cpu.shares: 1 is out of range (2 to 262144)",
    ),
    (
        "cpu-burst",
        setp("linux.resources.cpu", {"burst": -1}),
        "linux.resources.cpu.burst: -1 is out of range",
    ),
    (
        "cpu-rt-period",
        setp("linux.resources.cpu", {"realtimePeriod": -1}),
        "linux.resources.cpu.realtimePeriod: -1 is out of range",
    ),
    (
        "cpu-cpus",
        setp("linux.resources.cpu", {"cpus": "0-a"}),
        'linux.resources.cpu.cpus: "0-a" is not a list like "0-3,6"',
    ),
    (
        "cpu-mems",
        setp("linux.resources.cpu", {"mems": "0,"}),
        'linux.resources.cpu.mems: "0," is not a list like "0-3,6"',
    ),
    (
        "cpu-idle",
        setp("linux.resources.cpu", {"idle": 2}),
        "linux.resources.cpu.idle: must be 0 or 1, got 2",
    ),
    (
        "pids-limit",
        setp("linux.resources.pids", {"limit": -5}),
        "linux.resources.pids.limit: must be -1 (unlimited) or >= 0, got -5",
    ),
    (
        "blkio-weight",
        setp("linux.resources.blockIO", {"weight": 5}),
        "linux.resources.blockIO.weight: 5 is out of range (10 to 1000)",
    ),
    (
        "blkio-leaf-weight",
        setp("linux.resources.blockIO", {"leafWeight": 1001}),
        "linux.resources.blockIO.leafWeight: 1001 is out of range (10 to 1000)",
    ),
    (
        "blkio-weight-device",
        setp("linux.resources.blockIO", {"weightDevice": [{"major": 8, "minor": 0, "weight": 1}]}),
        "linux.resources.blockIO.weightDevice[0].weight: 1 is out of range (10 to 1000)",
    ),
    (
        "blkio-throttle-rate",
        setp(
            "linux.resources.blockIO",
            {"throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": -1}]},
        ),
        "linux.resources.blockIO.throttleWriteIOPSDevice[0].rate: -1 is out of range",
    ),
    (
        "blkio-throttle-major",
        setp(
            "linux.resources.blockIO",
            {"throttleReadBpsDevice": [{"major": -8, "minor": 0, "rate": 1}]},
        ),
        "linux.resources.blockIO.throttleReadBpsDevice[0]: major and minor must be >= 0",
    ),
    (
        "hugepage-size",
        setp("linux.resources.hugepageLimits", [{"pageSize": "2M", "limit": 0}]),
        'linux.resources.hugepageLimits[0].pageSize: "2M" is not a page size like "2MB"',
    ),
    (
        "hugepage-duplicate",
        setp(
            "linux.resources.hugepageLimits",
            [{"pageSize": "2MB", "limit": 0}, {"pageSize": "2MB", "limit": 1}],
        ),
        'linux.resources.hugepageLimits[1].pageSize: duplicate page size "2MB"',
    ),
    (
        "hugepage-limit",
        setp("linux.resources.hugepageLimits", [{"pageSize": "1GB", "limit": -1}]),
        "linux.resources.hugepageLimits[0].limit: -1 is out of range",
    ),
    (
        "net-classid",
        setp("linux.resources.network", {"classID": -1}),
        "linux.resources.network.classID: -1 is out of range",
    ),
    (
        "unified-key",
        setp("linux.resources.unified", {"../memory.max": "1"}),
        "linux.resources.unified.../memory.max: is not a cgroup v2 interface file name",
    ),
    (
        "unified-core-file",
        setp("linux.resources.unified", {"cgroup.procs": "1"}),
        "linux.resources.unified.cgroup.procs: cgroup core files cannot be set",
    ),
    # cgroupsPath
    (
        "cgroups-path-dotdot",
        setp("linux.cgroupsPath", "/a/../../b"),
        "linux.cgroupsPath: \"/a/../../b\" must not contain '..'",
    ),
    (
        "cgroups-path-dotdot-kata",
        setp("linux.cgroupsPath", "s.slice:..:x"),
        "linux.cgroupsPath: \"s.slice:..:x\" must not contain '..'",
    ),
    # seccomp
    (
        "seccomp-default-action",
        setp("linux.seccomp", {"defaultAction": "SCMP_ACT_MAYBE"}),
        'linux.seccomp.defaultAction: unknown action "SCMP_ACT_MAYBE"',
    ),
    (
        "seccomp-default-errno",
        setp("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1}),
        "linux.seccomp.defaultErrnoRet: only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
    ),
    (
        "seccomp-arch",
        setp("linux.seccomp", {**SECCOMP, "architectures": ["SCMP_ARCH_Z80"]}),
        'linux.seccomp.architectures[0]: unknown architecture "SCMP_ARCH_Z80"',
    ),
    (
        "seccomp-flag",
        setp("linux.seccomp", {**SECCOMP, "flags": ["SECCOMP_FILTER_FLAG_X"]}),
        'linux.seccomp.flags[0]: unknown flag "SECCOMP_FILTER_FLAG_X"',
    ),
    (
        "seccomp-names-empty",
        setp("linux.seccomp", {**SECCOMP, "syscalls": [{"names": [], "action": "SCMP_ACT_LOG"}]}),
        "linux.seccomp.syscalls[0].names: must not be empty",
    ),
    (
        "seccomp-name-invalid",
        setp(
            "linux.seccomp",
            {**SECCOMP, "syscalls": [{"names": ["read", "Write!"], "action": "SCMP_ACT_LOG"}]},
        ),
        'linux.seccomp.syscalls[0].names[1]: invalid syscall name "Write!"',
    ),
    (
        "seccomp-action",
        setp("linux.seccomp", {**SECCOMP, "syscalls": [{"names": ["read"], "action": "NOPE"}]}),
        'linux.seccomp.syscalls[0].action: unknown action "NOPE"',
    ),
    (
        "seccomp-errno-ret-action",
        setp(
            "linux.seccomp",
            {
                **SECCOMP,
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_KILL", "errnoRet": 1}],
            },
        ),
        "linux.seccomp.syscalls[0].errnoRet: only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
    ),
    (
        "seccomp-arg-index",
        setp(
            "linux.seccomp",
            {
                **SECCOMP,
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
        ),
        "linux.seccomp.syscalls[0].args[0].index: 6 is out of range (0 to 5)",
    ),
    (
        "seccomp-arg-op",
        setp(
            "linux.seccomp",
            {
                **SECCOMP,
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SORTA"}],
                    }
                ],
            },
        ),
        'linux.seccomp.syscalls[0].args[0].op: unknown operator "SCMP_CMP_SORTA"',
    ),
    (
        "seccomp-arg-value",
        setp(
            "linux.seccomp",
            {
                **SECCOMP,
                "syscalls": [
                    {
                        "names": ["read"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
        ),
        "linux.seccomp.syscalls[0].args[0].value: -1 is out of range",
    ),
    (
        "seccomp-notify-needs-listener",
        setp("linux.seccomp", {"defaultAction": "SCMP_ACT_NOTIFY"}),
        "linux.seccomp.listenerPath: required when an action is SCMP_ACT_NOTIFY",
    ),
    (
        "seccomp-listener-relative",
        setp("linux.seccomp", {**SECCOMP, "listenerPath": "x.sock"}),
        'linux.seccomp.listenerPath: path "x.sock" is not absolute',
    ),
    # the rest of linux
    (
        "propagation",
        setp("linux.rootfsPropagation", "sideways"),
        'linux.rootfsPropagation: unknown propagation "sideways"',
    ),
    (
        "masked-needs-mountns",
        both(ns_only("pid"), setp("linux.maskedPaths", ["/proc/kcore"])),
        "linux.maskedPaths: needs a private mount namespace",
    ),
    (
        "readonly-needs-mountns",
        both(ns_only("pid"), setp("linux.readonlyPaths", ["/proc/sys"])),
        "linux.readonlyPaths: needs a private mount namespace",
    ),
    (
        "masked-relative",
        setp("linux.maskedPaths", ["proc/kcore"]),
        'linux.maskedPaths[0]: path "proc/kcore" is not absolute',
    ),
    (
        "readonly-relative",
        setp("linux.readonlyPaths", ["/proc/bus", "sys"]),
        'linux.readonlyPaths[1]: path "sys" is not absolute',
    ),
    (
        "intel-rdt-clos",
        setp("linux.intelRdt", {"closID": "../x"}),
        'linux.intelRdt.closID: invalid CLOS id "../x"',
    ),
    (
        "personality-domain",
        setp("linux.personality", {"domain": "BSD"}),
        'linux.personality.domain: unknown domain "BSD"',
    ),
    (
        "time-offsets-need-timens",
        setp("linux.timeOffsets", {"monotonic": {"secs": 1}}),
        "linux.timeOffsets: needs a time namespace",
    ),
    (
        "time-offsets-join",
        both(
            setp("linux.namespaces.5", {"type": "time", "path": "/proc/1/ns/time"}),
            setp("linux.timeOffsets", {"boottime": {"secs": 1}}),
        ),
        "linux.timeOffsets: cannot be set when joining an existing time namespace",
    ),
    (
        "time-offsets-clock",
        both(
            setp("linux.namespaces.5", {"type": "time"}),
            setp("linux.timeOffsets", {"realtime": {"secs": 1}}),
        ),
        'linux.timeOffsets.realtime: unknown clock "realtime"',
    ),
    (
        "time-offsets-nanosecs",
        both(
            setp("linux.namespaces.5", {"type": "time"}),
            setp("linux.timeOffsets", {"monotonic": {"nanosecs": 1_000_000_000}}),
        ),
        "linux.timeOffsets.monotonic.nanosecs: 1000000000 is out of range",
    ),
]


def problems_for(patch: Callable[[Doc], None]) -> list[str]:
    doc = base()
    patch(doc)
    spec = s.loads(json.dumps(doc), validate=False)
    return [str(p) for p in s.validate(spec) if p.severity == "error"]


def test_base_is_valid() -> None:
    assert s.validate(s.loads(json.dumps(base()))) == []
    doc = base()
    with_user(doc)
    assert s.validate(s.loads(json.dumps(doc))) == []


@pytest.mark.parametrize(("patch", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(patch: Callable[[Doc], None], expected: str) -> None:
    found = problems_for(patch)
    assert any(p.startswith(expected) for p in found), found
    # and load() refuses the document with that exact text in the error
    doc = base()
    patch(doc)
    with pytest.raises(s.SpecError) as err:
        s.loads(json.dumps(doc))
    assert expected in str(err.value)


def test_issue_example_text_exactly() -> None:
    doc = base()
    doc["linux"]["namespaces"][2] = {"type": "foo"}
    with pytest.raises(s.SpecError) as err:
        s.loads(json.dumps(doc))
    assert str(err.value) == 'linux.namespaces[2].type: unknown namespace "foo"'
    assert err.value.problems == (s.Problem("linux.namespaces[2].type", 'unknown namespace "foo"'),)


@pytest.mark.parametrize(
    "patch",
    [
        setp("linux.sysctl", {"kernel.shmmax": "1", "net.core.somaxconn": "1"}),
        setp("linux.sysctl", {"kernel.domainname": "d", "fs.mqueue.queues_max": "1"}),
        both(with_user, setp("process.user.uid", 0)),
        setp("linux.namespaces.5", {"type": "user", "path": "/proc/1/ns/user"}),
        setp("linux.resources.memory", {"limit": 100, "swap": -1, "reservation": 50}),
        setp("linux.resources.cpu", {"quota": -1, "period": 100000, "shares": 0}),
        setp("linux.resources.pids", {"limit": -1}),
        setp("linux.cgroupsPath", "kubepods.slice:cri-containerd:abc"),
        setp("linux.devices", [{"path": "/dev/p", "type": "p"}]),
        setp("linux.resources.unified", {"memory.high": "max", "io.bfq.weight": "1"}),
        setp("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 1, "deadline": 2}),
    ],
)
def test_accepted(patch: Callable[[Doc], None]) -> None:
    assert problems_for(patch) == []


def test_warnings_do_not_fail_load(caplog: pytest.LogCaptureFixture) -> None:
    doc = base()
    doc["mounts"][0]["destination"] = "proc"
    doc["process"]["terminal"] = False
    doc["process"]["consoleSize"] = {"height": 1, "width": 1}
    spec = s.loads(json.dumps(doc))
    warnings = [str(p) for p in s.check(spec)]
    assert warnings == [
        "process.consoleSize: ignored because process.terminal is false",
        'mounts[0].destination: "proc" is relative; it is taken relative to the container\'s /',
    ]
    assert "is relative" in caplog.text


def test_all_errors_reported_together() -> None:
    doc = base()
    doc["process"]["cwd"] = "x"
    doc["linux"]["namespaces"][0] = {"type": "bogus"}
    with pytest.raises(s.SpecError) as err:
        s.loads(json.dumps(doc))
    assert [p.path for p in err.value.problems] == ["process.cwd", "linux.namespaces[0].type"]


def test_check_resources_alone() -> None:
    s.check_resources(s.LinuxResources(memory=s.LinuxMemory(limit=1 << 20)))
    with pytest.raises(s.SpecError, match=r"^resources\.cpu\.quota: must be -1"):
        s.check_resources(s.LinuxResources(cpu=s.LinuxCPU(quota=0)), path="resources")
