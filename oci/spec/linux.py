"""The Linux-specific part of config.json (runtime-spec `config-linux.md`, 1.0 to 1.2).

Class names are the runtime-spec Go type names; field names are the snake_case of the JSON keys.
Optional scalars are `None` when absent, lists are tuples (empty when absent), maps are
`Mapping`s (a plain dict at runtime; treat it as read-only).
"""

# spec_field() is this package's dataclass field specifier (a dataclasses.field wrapper).

from __future__ import annotations

import enum
from collections.abc import Mapping

from ._codec import SpecObject, model, spec_field


class NamespaceType(enum.StrEnum):
    """`linux.namespaces[].type` values (the field itself stays a `str` so unknown values load
    and are reported by validation)."""

    PID = "pid"
    NETWORK = "network"
    MOUNT = "mount"
    IPC = "ipc"
    UTS = "uts"
    USER = "user"
    CGROUP = "cgroup"
    TIME = "time"


@model
class LinuxIDMapping(SpecObject):
    """A uid/gid mapping: `linux.uidMappings[]`, `linux.gidMappings[]`, `mounts[].uidMappings[]`."""

    container_id: int = spec_field(0, key="containerID", required=True)
    host_id: int = spec_field(0, key="hostID", required=True)
    size: int = spec_field(0, required=True)


@model
class LinuxNamespace(SpecObject):
    """`linux.namespaces[]`: a namespace to create, or to join when `path` is set."""

    type: str = spec_field("", required=True)
    path: str | None = spec_field(None)


@model
class LinuxDevice(SpecObject):
    """`linux.devices[]`: a device node to create in the container."""

    path: str = spec_field("", required=True)
    type: str = spec_field("", required=True)
    major: int | None = spec_field(None)
    minor: int | None = spec_field(None)
    file_mode: int | None = spec_field(None)
    uid: int | None = spec_field(None)
    gid: int | None = spec_field(None)


@model
class LinuxDeviceCgroup(SpecObject):
    """`linux.resources.devices[]`: a device cgroup rule (None type/major/minor = all)."""

    allow: bool = spec_field(False, always=True)
    type: str | None = spec_field(None)
    major: int | None = spec_field(None)
    minor: int | None = spec_field(None)
    access: str | None = spec_field(None)


@model
class LinuxMemory(SpecObject):
    """`linux.resources.memory` (bytes; -1 = unlimited; `swap` is memory+swap)."""

    limit: int | None = spec_field(None)
    reservation: int | None = spec_field(None)
    swap: int | None = spec_field(None)
    kernel: int | None = spec_field(None)
    kernel_tcp: int | None = spec_field(None, key="kernelTCP")
    swappiness: int | None = spec_field(None)
    disable_oom_killer: bool | None = spec_field(None, key="disableOOMKiller")
    use_hierarchy: bool | None = spec_field(None)
    check_before_update: bool | None = spec_field(None)


@model
class LinuxCPU(SpecObject):
    """`linux.resources.cpu` (quota/period in microseconds; cpus/mems as lists like "0-3")."""

    shares: int | None = spec_field(None)
    quota: int | None = spec_field(None)
    burst: int | None = spec_field(None)
    period: int | None = spec_field(None)
    realtime_runtime: int | None = spec_field(None)
    realtime_period: int | None = spec_field(None)
    cpus: str | None = spec_field(None)
    mems: str | None = spec_field(None)
    idle: int | None = spec_field(None)


@model
class LinuxPids(SpecObject):
    """`linux.resources.pids` (limit -1 = unlimited)."""

    limit: int | None = spec_field(None)


@model
class LinuxWeightDevice(SpecObject):
    """`linux.resources.blockIO.weightDevice[]`."""

    major: int = spec_field(0, required=True)
    minor: int = spec_field(0, required=True)
    weight: int | None = spec_field(None)
    leaf_weight: int | None = spec_field(None)


@model
class LinuxThrottleDevice(SpecObject):
    """`linux.resources.blockIO.throttle*Device[]` (bytes or I/O operations per second)."""

    major: int = spec_field(0, required=True)
    minor: int = spec_field(0, required=True)
    rate: int = spec_field(0, required=True)


@model
class LinuxBlockIO(SpecObject):
    """`linux.resources.blockIO`."""

    weight: int | None = spec_field(None)
    leaf_weight: int | None = spec_field(None)
    weight_device: tuple[LinuxWeightDevice, ...] = spec_field(())
    throttle_read_bps_device: tuple[LinuxThrottleDevice, ...] = spec_field(())
    throttle_write_bps_device: tuple[LinuxThrottleDevice, ...] = spec_field(())
    throttle_read_iops_device: tuple[LinuxThrottleDevice, ...] = spec_field(
        (), key="throttleReadIOPSDevice"
    )
    throttle_write_iops_device: tuple[LinuxThrottleDevice, ...] = spec_field(
        (), key="throttleWriteIOPSDevice"
    )


@model
class LinuxHugepageLimit(SpecObject):
    """`linux.resources.hugepageLimits[]` (`page_size` like "2MB")."""

    page_size: str = spec_field("", required=True)
    limit: int = spec_field(0, required=True)


@model
class LinuxInterfacePriority(SpecObject):
    """`linux.resources.network.priorities[]`."""

    name: str = spec_field("", required=True)
    priority: int = spec_field(0, required=True)


@model
class LinuxNetwork(SpecObject):
    """`linux.resources.network` (net_cls class id, net_prio priorities)."""

    class_id: int | None = spec_field(None, key="classID")
    priorities: tuple[LinuxInterfacePriority, ...] = spec_field(())


@model
class LinuxRdma(SpecObject):
    """A value of the `linux.resources.rdma` map."""

    hca_handles: int | None = spec_field(None)
    hca_objects: int | None = spec_field(None)


@model
class LinuxResources(SpecObject):
    """`linux.resources`: the container's cgroup limits (also UpdateContainer's payload)."""

    devices: tuple[LinuxDeviceCgroup, ...] = spec_field(())
    memory: LinuxMemory | None = spec_field(None)
    cpu: LinuxCPU | None = spec_field(None)
    pids: LinuxPids | None = spec_field(None)
    block_io: LinuxBlockIO | None = spec_field(None, key="blockIO")
    hugepage_limits: tuple[LinuxHugepageLimit, ...] = spec_field(())
    network: LinuxNetwork | None = spec_field(None)
    rdma: Mapping[str, LinuxRdma] = spec_field(default_factory=dict)
    unified: Mapping[str, str] = spec_field(default_factory=dict)


@model
class LinuxSeccompArg(SpecObject):
    """`linux.seccomp.syscalls[].args[]`: one argument comparison."""

    index: int = spec_field(0, required=True)
    value: int = spec_field(0, required=True)
    value_two: int = spec_field(0)
    op: str = spec_field("", required=True)


@model
class LinuxSyscall(SpecObject):
    """`linux.seccomp.syscalls[]`: an action for a set of syscall names."""

    names: tuple[str, ...] = spec_field((), required=True)
    action: str = spec_field("", required=True)
    errno_ret: int | None = spec_field(None)
    args: tuple[LinuxSeccompArg, ...] = spec_field(())


@model
class LinuxSeccomp(SpecObject):
    """`linux.seccomp`: the seccomp filter."""

    default_action: str = spec_field("", required=True)
    default_errno_ret: int | None = spec_field(None)
    architectures: tuple[str, ...] = spec_field(())
    flags: tuple[str, ...] = spec_field(())
    listener_path: str | None = spec_field(None)
    listener_metadata: str | None = spec_field(None)
    syscalls: tuple[LinuxSyscall, ...] = spec_field(())


@model
class LinuxIntelRdt(SpecObject):
    """`linux.intelRdt`."""

    clos_id: str | None = spec_field(None, key="closID")
    l3_cache_schema: str | None = spec_field(None)
    mem_bw_schema: str | None = spec_field(None)
    enable_cmt: bool = spec_field(False, key="enableCMT")
    enable_mbm: bool = spec_field(False, key="enableMBM")


@model
class LinuxPersonality(SpecObject):
    """`linux.personality` (execution domain)."""

    domain: str = spec_field("", required=True)
    flags: tuple[str, ...] = spec_field(())


@model
class LinuxTimeOffset(SpecObject):
    """A value of the `linux.timeOffsets` map (clock offset in a new time namespace)."""

    secs: int | None = spec_field(None)
    nanosecs: int | None = spec_field(None)


@model
class LinuxCapabilities(SpecObject):
    """`process.capabilities`: the five capability sets (names with the CAP_ prefix)."""

    bounding: tuple[str, ...] = spec_field(())
    effective: tuple[str, ...] = spec_field(())
    inheritable: tuple[str, ...] = spec_field(())
    permitted: tuple[str, ...] = spec_field(())
    ambient: tuple[str, ...] = spec_field(())


@model
class LinuxIOPriority(SpecObject):
    """`process.ioPriority` (`class_` holds the JSON key `class`)."""

    class_: str = spec_field("", key="class", required=True)
    priority: int = spec_field(0)


@model
class Linux(SpecObject):
    """`linux`: the Linux-specific configuration."""

    uid_mappings: tuple[LinuxIDMapping, ...] = spec_field(())
    gid_mappings: tuple[LinuxIDMapping, ...] = spec_field(())
    sysctl: Mapping[str, str] = spec_field(default_factory=dict)
    resources: LinuxResources | None = spec_field(None)
    cgroups_path: str | None = spec_field(None)
    namespaces: tuple[LinuxNamespace, ...] = spec_field(())
    devices: tuple[LinuxDevice, ...] = spec_field(())
    seccomp: LinuxSeccomp | None = spec_field(None)
    rootfs_propagation: str | None = spec_field(None)
    masked_paths: tuple[str, ...] = spec_field(())
    readonly_paths: tuple[str, ...] = spec_field(())
    mount_label: str | None = spec_field(None)
    intel_rdt: LinuxIntelRdt | None = spec_field(None)
    personality: LinuxPersonality | None = spec_field(None)
    time_offsets: Mapping[str, LinuxTimeOffset] = spec_field(default_factory=dict)

    def namespace(self, type: str) -> LinuxNamespace | None:
        """The entry for namespace `type` ("pid", "network", ...), or None."""
        for ns in self.namespaces:
            if ns.type == type:
                return ns
        return None

    def has_namespace(self, type: str) -> bool:
        return self.namespace(type) is not None
