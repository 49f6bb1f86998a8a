"""pb grpc.Spec ⇄ oci.spec.Spec with Kata's semantics (reference doc §4.1 step 1, §7.3)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format

import oci.spec as s
from agent.rpc import convert_oci as cv
from agent.rpc.pb import oci_pb2 as pb

CAPS = ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]

# The typical spec of reference doc §7.3, as the shim sends it (field names as in oci.proto).
TYPICAL: dict[str, Any] = {
    "Version": "1.1.0",
    "Process": {
        "Terminal": False,
        "User": {"UID": 0, "GID": 0, "AdditionalGids": [0, 10]},
        "Args": ["nginx", "-g", "daemon off;"],
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME=web-0",
        ],
        "Cwd": "/",
        "Capabilities": {"Bounding": CAPS, "Effective": CAPS, "Permitted": CAPS},
        "NoNewPrivileges": False,
        "OOMScoreAdj": 1000,
    },
    "Root": {"Path": "/run/kata-containers/shared/containers/cid/rootfs", "Readonly": False},
    "Hostname": "",
    "Mounts": [
        {
            "destination": "/proc",
            "source": "proc",
            "type": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "source": "tmpfs",
            "type": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "source": "devpts",
            "type": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/mqueue",
            "source": "mqueue",
            "type": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "source": "sysfs",
            "type": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "source": "cgroup",
            "type": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {
            "destination": "/etc/hosts",
            "source": "/run/kata-containers/shared/containers/cid-0123-hosts",
            "type": "bind",
            "options": ["rbind", "rprivate", "rw"],
        },
        {
            "destination": "/etc/resolv.conf",
            "source": "/run/kata-containers/shared/containers/cid-0123-resolv.conf",
            "type": "bind",
            "options": ["rbind", "rprivate", "ro"],
        },
        {
            "destination": "/dev/shm",
            "source": "/run/kata-containers/sandbox/shm",
            "type": "bind",
            "options": ["rbind"],
        },
        {
            "destination": "/var/run/secrets/kubernetes.io/serviceaccount",
            "source": "/run/kata-containers/shared/containers/watchable/cid-0123-serviceaccount",
            "type": "bind",
            "options": ["rbind", "rprivate", "ro"],
        },
    ],
    "Annotations": {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "sid",
        "io.kubernetes.cri.image-name": "nginx:1.27",
    },
    "Linux": {
        "Resources": {
            "Memory": {"Limit": 268435456},
            "CPU": {"Shares": 256, "Quota": 50000, "Period": 100000},
        },
        "CgroupsPath": "kubepods-burstable-poduid.slice:cri-containerd:cid",
        "Namespaces": [{"Type": "ipc"}, {"Type": "uts"}, {"Type": "mount"}],
        "MaskedPaths": [
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
        ],
        "ReadonlyPaths": [
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    },
}


def typical_pb() -> pb.Spec:
    return json_format.ParseDict(TYPICAL, pb.Spec())


def test_typical_spec_converts_with_kata_semantics() -> None:
    spec = cv.spec_from_pb(typical_pb())
    assert spec.oci_version == "1.1.0"
    assert spec.hostname is None  # "" → unset
    assert spec.process is not None
    assert spec.process.user == s.User(uid=0, gid=0, additional_gids=(0, 10))
    assert spec.process.args == ("nginx", "-g", "daemon off;")
    assert spec.process.oom_score_adj == 1000
    assert spec.process.apparmor_profile is None
    assert spec.process.selinux_label is None
    assert spec.process.console_size is None
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.bounding == tuple(CAPS)
    assert spec.process.capabilities.inheritable == ()
    assert spec.root == s.Root(path="/run/kata-containers/shared/containers/cid/rootfs")
    assert len(spec.mounts) == 10
    assert spec.mounts[6] == s.Mount(
        destination="/etc/hosts",
        type="bind",
        source="/run/kata-containers/shared/containers/cid-0123-hosts",
        options=("rbind", "rprivate", "rw"),
    )
    assert spec.hooks is None
    assert spec.annotations["io.kubernetes.cri.image-name"] == "nginx:1.27"
    lx = spec.linux
    assert lx is not None
    assert lx.cgroups_path == "kubepods-burstable-poduid.slice:cri-containerd:cid"
    assert lx.namespaces == (
        s.LinuxNamespace(type="ipc"),
        s.LinuxNamespace(type="uts"),
        s.LinuxNamespace(type="mount"),
    )
    assert lx.rootfs_propagation is None
    assert lx.mount_label is None
    assert lx.seccomp is None
    assert lx.resources == s.LinuxResources(
        memory=s.LinuxMemory(limit=268435456),
        cpu=s.LinuxCPU(shares=256, quota=50000, period=100000),
    )
    assert s.validate(spec) == []


def test_typical_spec_round_trips() -> None:
    msg = typical_pb()
    spec = cv.spec_from_pb(msg)
    assert cv.spec_to_pb(spec) == msg
    assert cv.spec_from_pb(cv.spec_to_pb(spec)) == spec
    # and through config.json text
    assert cv.spec_to_pb(s.loads(spec.to_json())) == msg


def get(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# (pb Spec fields as a dict, attribute path in the model, expected value)
ZERO_IS_UNSET: list[tuple[str, dict[str, Any], str, object]] = [
    ("hostname-empty", {"Hostname": ""}, "hostname", None),
    ("version-empty", {}, "oci_version", s.SPEC_VERSION),
    ("cwd-empty", {"Process": {"Args": ["sh"]}}, "process.cwd", "/"),
    ("hostname-set", {"Hostname": "h"}, "hostname", "h"),
    ("process-absent", {}, "process", None),
    ("root-absent", {}, "root", None),
    ("linux-absent", {}, "linux", None),
    ("hooks-absent", {}, "hooks", None),
    ("oom-zero", {"Process": {"OOMScoreAdj": 0}}, "process.oom_score_adj", None),
    ("oom-negative", {"Process": {"OOMScoreAdj": -999}}, "process.oom_score_adj", -999),
    ("apparmor-empty", {"Process": {"ApparmorProfile": ""}}, "process.apparmor_profile", None),
    ("selinux-set", {"Process": {"SelinuxLabel": "l"}}, "process.selinux_label", "l"),
    ("username-empty", {"Process": {"User": {"UID": 5}}}, "process.user.username", None),
    ("uid-zero-kept", {"Process": {"User": {}}}, "process.user.uid", 0),
    ("caps-absent", {"Process": {}}, "process.capabilities", None),
    ("console-present", {"Process": {"ConsoleSize": {}}}, "process.console_size", s.Box()),
    (
        "mount-type-empty",
        {"Mounts": [{"destination": "/x"}]},
        "mounts",
        (s.Mount(destination="/x"),),
    ),
    ("cgroups-path-empty", {"Linux": {}}, "linux.cgroups_path", None),
    ("propagation-empty", {"Linux": {}}, "linux.rootfs_propagation", None),
    ("masked-empty", {"Linux": {}}, "linux.masked_paths", ()),
    ("readonly-empty", {"Linux": {}}, "linux.readonly_paths", ()),
    ("namespaces-empty", {"Linux": {}}, "linux.namespaces", ()),
    ("resources-absent", {"Linux": {}}, "linux.resources", None),
    (
        "ns-path-empty",
        {"Linux": {"Namespaces": [{"Type": "pid", "Path": ""}]}},
        "linux.namespaces",
        (s.LinuxNamespace(type="pid"),),
    ),
    (
        "ns-path-set",
        {"Linux": {"Namespaces": [{"Type": "net", "Path": "/proc/1/ns/net"}]}},
        "linux.namespaces",
        (s.LinuxNamespace(type="net", path="/proc/1/ns/net"),),
    ),
    (
        "memory-zeros",
        {"Linux": {"Resources": {"Memory": {}}}},
        "linux.resources.memory",
        s.LinuxMemory(),
    ),
    (
        "memory-unlimited",
        {"Linux": {"Resources": {"Memory": {"Limit": -1, "Swap": -1, "DisableOOMKiller": True}}}},
        "linux.resources.memory",
        s.LinuxMemory(limit=-1, swap=-1, disable_oom_killer=True),
    ),
    (
        "cpu-zeros",
        {"Linux": {"Resources": {"CPU": {"Cpus": "", "Mems": ""}}}},
        "linux.resources.cpu",
        s.LinuxCPU(),
    ),
    (
        "pids-zero",
        {"Linux": {"Resources": {"Pids": {"Limit": 0}}}},
        "linux.resources.pids",
        s.LinuxPids(),
    ),
    (
        "devcgroup-wildcards",
        {"Linux": {"Resources": {"Devices": [{"Allow": False, "Access": "rwm"}]}}},
        "linux.resources.devices",
        (s.LinuxDeviceCgroup(allow=False, access="rwm"),),
    ),
    (
        "device-zero-mode",
        {"Linux": {"Devices": [{"Path": "/dev/x", "Type": "c", "Major": 1, "Minor": 0}]}},
        "linux.devices",
        (s.LinuxDevice(path="/dev/x", type="c", major=1, minor=0),),
    ),
    (
        "idmap-zero-kept",
        {"Linux": {"UIDMappings": [{"ContainerID": 0, "HostID": 0, "Size": 1}]}},
        "linux.uid_mappings",
        (s.LinuxIDMapping(container_id=0, host_id=0, size=1),),
    ),
    (
        "hook-timeout-zero",
        {"Hooks": {"Poststop": [{"Path": "/bin/true", "Timeout": 0}]}},
        "hooks.poststop",
        (s.Hook(path="/bin/true"),),
    ),
    (
        "hook-timeout-set",
        {"Hooks": {"Prestart": [{"Path": "/bin/true", "Args": ["true"], "Timeout": 3}]}},
        "hooks.prestart",
        (s.Hook(path="/bin/true", args=("true",), timeout=3),),
    ),
    (
        "intel-rdt-empty",
        {"Linux": {"IntelRdt": {}}},
        "linux.intel_rdt",
        s.LinuxIntelRdt(),
    ),
    (
        "sysctl",
        {"Linux": {"Sysctl": {"net.core.somaxconn": "1"}}},
        "linux.sysctl",
        {"net.core.somaxconn": "1"},
    ),
]


@pytest.mark.parametrize(
    ("fields", "path", "expected"),
    [c[1:] for c in ZERO_IS_UNSET],
    ids=[c[0] for c in ZERO_IS_UNSET],
)
def test_zero_values_become_unset(fields: dict[str, Any], path: str, expected: object) -> None:
    msg = json_format.ParseDict(fields, pb.Spec())
    assert get(cv.spec_from_pb(msg), path) == expected


def test_seccomp_errnoret_has_presence() -> None:
    msg = json_format.ParseDict(
        {
            "Version": "1.0.2",
            "Linux": {
                "Seccomp": {
                    "DefaultAction": "SCMP_ACT_ERRNO",
                    "Architectures": ["SCMP_ARCH_X86_64"],
                    "Flags": ["SECCOMP_FILTER_FLAG_LOG"],
                    "Syscalls": [
                        {"Names": ["mkdir"], "Action": "SCMP_ACT_ERRNO", "errnoret": 0},
                        {"Names": ["read"], "Action": "SCMP_ACT_ALLOW"},
                        {
                            "Names": ["personality"],
                            "Action": "SCMP_ACT_ALLOW",
                            "Args": [{"Index": 0, "Value": 8, "Op": "SCMP_CMP_EQ"}],
                        },
                    ],
                }
            },
        },
        pb.Spec(),
    )
    spec = cv.spec_from_pb(msg)
    assert spec.linux is not None
    sc = spec.linux.seccomp
    assert sc is not None
    assert sc.default_action == "SCMP_ACT_ERRNO"
    assert sc.syscalls[0].errno_ret == 0
    assert sc.syscalls[1].errno_ret is None
    assert sc.syscalls[2].args == (s.LinuxSeccompArg(index=0, value=8, op="SCMP_CMP_EQ"),)
    back = cv.spec_to_pb(spec)
    assert back.Linux.Seccomp.Syscalls[0].HasField("errnoret")
    assert not back.Linux.Seccomp.Syscalls[1].HasField("errnoret")
    assert back == msg


FULL_RESOURCES = s.LinuxResources(
    devices=(
        s.LinuxDeviceCgroup(allow=False, access="rwm"),
        s.LinuxDeviceCgroup(allow=True, type="c", major=10, minor=200, access="rwm"),
    ),
    memory=s.LinuxMemory(
        limit=1 << 30,
        reservation=1 << 29,
        swap=1 << 31,
        kernel=1 << 20,
        kernel_tcp=1 << 20,
        swappiness=60,
        disable_oom_killer=True,
    ),
    cpu=s.LinuxCPU(
        shares=1024,
        quota=-1,
        period=100000,
        realtime_runtime=950000,
        realtime_period=1000000,
        cpus="0-3",
        mems="0",
    ),
    pids=s.LinuxPids(limit=1024),
    block_io=s.LinuxBlockIO(
        weight=500,
        leaf_weight=300,
        weight_device=(s.LinuxWeightDevice(major=8, minor=0, weight=100),),
        throttle_read_bps_device=(s.LinuxThrottleDevice(major=8, minor=0, rate=1 << 20),),
        throttle_write_bps_device=(s.LinuxThrottleDevice(major=8, minor=16, rate=1 << 21),),
        throttle_read_iops_device=(s.LinuxThrottleDevice(major=8, minor=0, rate=100),),
        throttle_write_iops_device=(s.LinuxThrottleDevice(major=8, minor=0, rate=0),),
    ),
    hugepage_limits=(s.LinuxHugepageLimit(page_size="2MB", limit=1 << 22),),
    network=s.LinuxNetwork(
        class_id=0x100001, priorities=(s.LinuxInterfacePriority(name="eth0", priority=5),)
    ),
)


def test_resources_round_trip() -> None:
    msg = cv.resources_to_pb(FULL_RESOURCES)
    assert msg.Memory.Limit == 1 << 30
    assert msg.CPU.Quota == -1
    assert msg.BlockIO.ThrottleReadIOPSDevice[0].Rate == 100
    assert msg.HugepageLimits[0].Pagesize == "2MB"
    assert cv.resources_from_pb(msg) == FULL_RESOURCES


def test_update_container_resources_from_wire() -> None:
    # what UpdateContainer typically carries: memory + cpu only
    msg = pb.LinuxResources(
        Memory=pb.LinuxMemory(Limit=512 << 20), CPU=pb.LinuxCPU(Quota=20000, Period=100000)
    )
    r = cv.resources_from_pb(msg)
    assert r == s.LinuxResources(
        memory=s.LinuxMemory(limit=512 << 20), cpu=s.LinuxCPU(quota=20000, period=100000)
    )
    s.check_resources(r)
    assert cv.resources_from_pb(pb.LinuxResources()) == s.LinuxResources()


def test_exec_process_from_wire() -> None:
    msg = pb.Process(
        Terminal=True,
        User=pb.User(UID=1000, GID=1000, AdditionalGids=[1000]),
        Args=["sh"],
        Env=["TERM=xterm"],
        Cwd="/home",
    )
    p = cv.process_from_pb(msg)
    assert p == s.Process(
        terminal=True,
        user=s.User(uid=1000, gid=1000, additional_gids=(1000,)),
        args=("sh",),
        env=("TERM=xterm",),
        cwd="/home",
    )
    assert cv.process_to_pb(p) == msg


def test_fields_without_proto_counterpart_are_dropped() -> None:
    spec = s.Spec(
        root=s.Root(path="/r"),
        domainname="d",
        process=s.Process(
            cwd="/",
            args=("x",),
            scheduler=s.Scheduler(policy="SCHED_OTHER"),
            io_priority=s.LinuxIOPriority(class_="IOPRIO_CLASS_BE"),
        ),
        linux=s.Linux(
            personality=s.LinuxPersonality(domain="LINUX"),
            resources=s.LinuxResources(unified={"memory.high": "1"}),
        ),
    )
    back = cv.spec_from_pb(cv.spec_to_pb(spec))
    assert back.domainname is None
    assert back.process is not None
    assert back.process.scheduler is None
    assert back.process.io_priority is None
    assert back.linux is not None
    assert back.linux.personality is None
    assert back.linux.resources == s.LinuxResources()


def test_default_spec_round_trips_through_the_wire() -> None:
    spec = s.default_spec()
    assert cv.spec_from_pb(cv.spec_to_pb(spec)) == spec


def _fill(msg: Any, depth: int = 0) -> None:
    """Set every field of `msg` (recursively) to a non-zero value."""
    from google.protobuf.descriptor import FieldDescriptor as F

    for field in msg.DESCRIPTOR.fields:
        if field.name in ("Solaris", "Windows"):
            continue  # not part of the model (dropped by design)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            getattr(msg, field.name)["k"] = "v" if value_field.type == F.TYPE_STRING else 1
            continue
        is_repeated = field.is_repeated
        if field.type == F.TYPE_MESSAGE:
            if is_repeated:
                for _ in range(2):
                    _fill(getattr(msg, field.name).add(), depth + 1)
            else:
                _fill(getattr(msg, field.name), depth + 1)
            continue
        if field.type == F.TYPE_STRING:
            value: Any = f"{field.name}-value"
        elif field.type == F.TYPE_BOOL:
            value = True
        else:
            value = 7
        if is_repeated:
            getattr(msg, field.name).extend([value, value])
        else:
            setattr(msg, field.name, value)


def test_every_wire_field_survives_a_round_trip() -> None:
    msg = pb.Spec()
    _fill(msg)
    assert msg.Linux.Resources.Memory.Limit == 7
    assert msg.Process.Capabilities.Ambient[1] == "Ambient-value"
    assert msg.Linux.Seccomp.Syscalls[0].HasField("errnoret")
    spec = cv.spec_from_pb(msg)
    assert cv.spec_to_pb(spec) == msg
    # and the model holds what the wire said, e.g. deep inside
    assert spec.linux is not None
    assert spec.linux.resources is not None
    assert spec.linux.resources.block_io is not None
    assert spec.linux.resources.block_io.throttle_write_iops_device[1].rate == 7
    assert spec.hooks is not None
    assert spec.hooks.start_container[0].timeout == 7
    assert spec.linux.intel_rdt == s.LinuxIntelRdt(l3_cache_schema="L3CacheSchema-value")
