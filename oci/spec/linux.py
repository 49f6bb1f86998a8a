"""The Linux-specific part of config.json (runtime-spec `config-linux.md`, 1.0 to 1.2).

Class names are the runtime-spec Go type names; field names are the snake_case of the JSON keys.
Optional scalars are `None` when absent, lists are tuples (empty when absent), maps are
`Mapping`s (a plain dict at runtime; treat it as read-only).
"""

# spec_field() is this package's dataclass field specifier (a dataclasses.field wrapper).
# ruff: noqa: RUF009

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from ._codec import SpecObject, spec_field


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


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxIDMapping(SpecObject):
    container_id: int = spec_field(0, key="containerID", required=True)
    host_id: int = spec_field(0, key="hostID", required=True)
    size: int = spec_field(0, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxNamespace(SpecObject):
    type: str = spec_field("", required=True)
    path: str | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxDevice(SpecObject):
    path: str = spec_field("", required=True)
    type: str = spec_field("", required=True)
    major: int | None = spec_field(None)
    minor: int | None = spec_field(None)
    file_mode: int | None = spec_field(None)
    uid: int | None = spec_field(None)
    gid: int | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxDeviceCgroup(SpecObject):
    allow: bool = spec_field(False, always=True)
    type: str | None = spec_field(None)
    major: int | None = spec_field(None)
    minor: int | None = spec_field(None)
    access: str | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxMemory(SpecObject):
    limit: int | None = spec_field(None)
    reservation: int | None = spec_field(None)
    swap: int | None = spec_field(None)
    kernel: int | None = spec_field(None)
    kernel_tcp: int | None = spec_field(None, key="kernelTCP")
    swappiness: int | None = spec_field(None)
    disable_oom_killer: bool | None = spec_field(None, key="disableOOMKiller")
    use_hierarchy: bool | None = spec_field(None)
    check_before_update: bool | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxCPU(SpecObject):
    shares: int | None = spec_field(None)
    quota: int | None = spec_field(None)
    burst: int | None = spec_field(None)
    period: int | None = spec_field(None)
    realtime_runtime: int | None = spec_field(None)
    realtime_period: int | None = spec_field(None)
    cpus: str | None = spec_field(None)
    mems: str | None = spec_field(None)
    idle: int | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxPids(SpecObject):
    limit: int | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxWeightDevice(SpecObject):
    major: int = spec_field(0, required=True)
    minor: int = spec_field(0, required=True)
    weight: int | None = spec_field(None)
    leaf_weight: int | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxThrottleDevice(SpecObject):
    major: int = spec_field(0, required=True)
    minor: int = spec_field(0, required=True)
    rate: int = spec_field(0, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxBlockIO(SpecObject):
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


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxHugepageLimit(SpecObject):
    page_size: str = spec_field("", required=True)
    limit: int = spec_field(0, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxInterfacePriority(SpecObject):
    name: str = spec_field("", required=True)
    priority: int = spec_field(0, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxNetwork(SpecObject):
    class_id: int | None = spec_field(None, key="classID")
    priorities: tuple[LinuxInterfacePriority, ...] = spec_field(())


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxRdma(SpecObject):
    hca_handles: int | None = spec_field(None)
    hca_objects: int | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxResources(SpecObject):
    devices: tuple[LinuxDeviceCgroup, ...] = spec_field(())
    memory: LinuxMemory | None = spec_field(None)
    cpu: LinuxCPU | None = spec_field(None)
    pids: LinuxPids | None = spec_field(None)
    block_io: LinuxBlockIO | None = spec_field(None, key="blockIO")
    hugepage_limits: tuple[LinuxHugepageLimit, ...] = spec_field(())
    network: LinuxNetwork | None = spec_field(None)
    rdma: Mapping[str, LinuxRdma] = spec_field(default_factory=dict)
    unified: Mapping[str, str] = spec_field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxSeccompArg(SpecObject):
    index: int = spec_field(0, required=True)
    value: int = spec_field(0, required=True)
    value_two: int = spec_field(0)
    op: str = spec_field("", required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxSyscall(SpecObject):
    names: tuple[str, ...] = spec_field((), required=True)
    action: str = spec_field("", required=True)
    errno_ret: int | None = spec_field(None)
    args: tuple[LinuxSeccompArg, ...] = spec_field(())


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxSeccomp(SpecObject):
    default_action: str = spec_field("", required=True)
    default_errno_ret: int | None = spec_field(None)
    architectures: tuple[str, ...] = spec_field(())
    flags: tuple[str, ...] = spec_field(())
    listener_path: str | None = spec_field(None)
    listener_metadata: str | None = spec_field(None)
    syscalls: tuple[LinuxSyscall, ...] = spec_field(())


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxIntelRdt(SpecObject):
    clos_id: str | None = spec_field(None, key="closID")
    l3_cache_schema: str | None = spec_field(None)
    mem_bw_schema: str | None = spec_field(None)
    enable_cmt: bool = spec_field(False, key="enableCMT")
    enable_mbm: bool = spec_field(False, key="enableMBM")


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxPersonality(SpecObject):
    domain: str = spec_field("", required=True)
    flags: tuple[str, ...] = spec_field(())


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxTimeOffset(SpecObject):
    secs: int | None = spec_field(None)
    nanosecs: int | None = spec_field(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxCapabilities(SpecObject):
    bounding: tuple[str, ...] = spec_field(())
    effective: tuple[str, ...] = spec_field(())
    inheritable: tuple[str, ...] = spec_field(())
    permitted: tuple[str, ...] = spec_field(())
    ambient: tuple[str, ...] = spec_field(())


@dataclass(frozen=True, slots=True, kw_only=True)
class LinuxIOPriority(SpecObject):
    class_: str = spec_field("", key="class", required=True)
    priority: int = spec_field(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Linux(SpecObject):
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
