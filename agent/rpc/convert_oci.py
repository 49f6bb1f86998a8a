"""Pure conversion between the wire's `grpc.Spec` family (agent/rpc/pb/oci_pb2) and the
`oci.spec` model, with Kata's semantics (kata `src/libs/protocols/src/trans.rs`):

* proto3 scalars have no presence, so an empty string or a zero number means "unset" and
  becomes None (`Hostname: ""` → `hostname=None`, `Memory.Limit: 0` → `limit=None`,
  `OOMScoreAdj: 0` → `oom_score_adj=None`). Exceptions, where zero is a real value and the
  model field is not optional: user uid/gid, id mappings, rlimits, device major/minor,
  throttle rates, seccomp argument index/values and the rootfs path. Two required strings get a
  default instead: an empty `Version` becomes this model's `SPEC_VERSION`, an empty `Cwd`
  becomes "/" (runc and rustjail do not chdir for an empty cwd, i.e. stay at "/").
* A sub-message that is absent stays None; one that is present is converted even if empty.
* Empty `MaskedPaths`/`ReadonlyPaths`/`Namespaces` become empty tuples, which in this model
  already means "none": nothing adds runtime defaults to them.
* `LinuxSyscall.errnoret` is a proto `oneof`, so it has presence: `errnoret: 0` stays 0.
* Fields the proto does not carry (`domainname`, `process.scheduler`, `ioPriority`,
  `execCPUAffinity`, `linux.personality`, `timeOffsets`, mount id mappings, `unified`, `rdma`,
  seccomp listener and default errno, memory `useHierarchy`/`checkBeforeUpdate`, cpu
  `burst`/`idle`, most of `intelRdt`) are dropped by `*_to_pb` and absent after `*_from_pb`.

The reverse direction (`*_to_pb`) writes None as the zero value, so
`spec_from_pb(spec_to_pb(s)) == s` for every spec whose optional numbers are non-zero.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.rpc.pb import oci_pb2 as pb
from oci import spec as oci


def _s(value: str) -> str | None:
    return value or None


def _n(value: int) -> int | None:
    return value or None


def _b(value: bool) -> bool | None:
    return True if value else None


def _has(msg: object, field: str) -> bool:
    return msg.HasField(field)  # type: ignore[attr-defined,no-any-return]


# --- pb → oci.spec -------------------------------------------------------------------------------


def _id_mappings(maps: Iterable[pb.LinuxIDMapping]) -> tuple[oci.LinuxIDMapping, ...]:
    return tuple(
        oci.LinuxIDMapping(container_id=m.ContainerID, host_id=m.HostID, size=m.Size) for m in maps
    )


def _hooks(hooks: Iterable[pb.Hook]) -> tuple[oci.Hook, ...]:
    return tuple(
        oci.Hook(path=h.Path, args=tuple(h.Args), env=tuple(h.Env), timeout=_n(h.Timeout))
        for h in hooks
    )


def process_from_pb(p: pb.Process) -> oci.Process:
    """`grpc.Process` (CreateContainer's `OCI.Process`, ExecProcess's `process`) → Process."""
    caps = None
    if _has(p, "Capabilities"):
        c = p.Capabilities
        caps = oci.LinuxCapabilities(
            bounding=tuple(c.Bounding),
            effective=tuple(c.Effective),
            inheritable=tuple(c.Inheritable),
            permitted=tuple(c.Permitted),
            ambient=tuple(c.Ambient),
        )
    return oci.Process(
        terminal=p.Terminal,
        console_size=(
            oci.Box(height=p.ConsoleSize.Height, width=p.ConsoleSize.Width)
            if _has(p, "ConsoleSize")
            else None
        ),
        user=oci.User(
            uid=p.User.UID,
            gid=p.User.GID,
            additional_gids=tuple(p.User.AdditionalGids),
            username=_s(p.User.Username),
        ),
        args=tuple(p.Args),
        env=tuple(p.Env),
        cwd=p.Cwd or "/",
        capabilities=caps,
        rlimits=tuple(oci.POSIXRlimit(type=r.Type, hard=r.Hard, soft=r.Soft) for r in p.Rlimits),
        no_new_privileges=p.NoNewPrivileges,
        apparmor_profile=_s(p.ApparmorProfile),
        oom_score_adj=_n(p.OOMScoreAdj),
        selinux_label=_s(p.SelinuxLabel),
    )


def resources_from_pb(r: pb.LinuxResources) -> oci.LinuxResources:
    """`grpc.LinuxResources` (CreateContainer, UpdateContainer) → LinuxResources."""
    memory = None
    if _has(r, "Memory"):
        m = r.Memory
        memory = oci.LinuxMemory(
            limit=_n(m.Limit),
            reservation=_n(m.Reservation),
            swap=_n(m.Swap),
            kernel=_n(m.Kernel),
            kernel_tcp=_n(m.KernelTCP),
            swappiness=_n(m.Swappiness),
            disable_oom_killer=_b(m.DisableOOMKiller),
        )
    cpu = None
    if _has(r, "CPU"):
        c = r.CPU
        cpu = oci.LinuxCPU(
            shares=_n(c.Shares),
            quota=_n(c.Quota),
            period=_n(c.Period),
            realtime_runtime=_n(c.RealtimeRuntime),
            realtime_period=_n(c.RealtimePeriod),
            cpus=_s(c.Cpus),
            mems=_s(c.Mems),
        )
    block_io = None
    if _has(r, "BlockIO"):
        b = r.BlockIO

        def throttle(devs: Iterable[pb.LinuxThrottleDevice]) -> tuple[oci.LinuxThrottleDevice, ...]:
            return tuple(
                oci.LinuxThrottleDevice(major=d.Major, minor=d.Minor, rate=d.Rate) for d in devs
            )

        block_io = oci.LinuxBlockIO(
            weight=_n(b.Weight),
            leaf_weight=_n(b.LeafWeight),
            weight_device=tuple(
                oci.LinuxWeightDevice(
                    major=d.Major,
                    minor=d.Minor,
                    weight=_n(d.Weight),
                    leaf_weight=_n(d.LeafWeight),
                )
                for d in b.WeightDevice
            ),
            throttle_read_bps_device=throttle(b.ThrottleReadBpsDevice),
            throttle_write_bps_device=throttle(b.ThrottleWriteBpsDevice),
            throttle_read_iops_device=throttle(b.ThrottleReadIOPSDevice),
            throttle_write_iops_device=throttle(b.ThrottleWriteIOPSDevice),
        )
    network = None
    if _has(r, "Network"):
        network = oci.LinuxNetwork(
            class_id=_n(r.Network.ClassID),
            priorities=tuple(
                oci.LinuxInterfacePriority(name=p.Name, priority=p.Priority)
                for p in r.Network.Priorities
            ),
        )
    return oci.LinuxResources(
        devices=tuple(
            oci.LinuxDeviceCgroup(
                allow=d.Allow,
                type=_s(d.Type),
                major=_n(d.Major),
                minor=_n(d.Minor),
                access=_s(d.Access),
            )
            for d in r.Devices
        ),
        memory=memory,
        cpu=cpu,
        pids=oci.LinuxPids(limit=_n(r.Pids.Limit)) if _has(r, "Pids") else None,
        block_io=block_io,
        hugepage_limits=tuple(
            oci.LinuxHugepageLimit(page_size=h.Pagesize, limit=h.Limit) for h in r.HugepageLimits
        ),
        network=network,
    )


def _seccomp_from_pb(s: pb.LinuxSeccomp) -> oci.LinuxSeccomp:
    return oci.LinuxSeccomp(
        default_action=s.DefaultAction,
        architectures=tuple(s.Architectures),
        flags=tuple(s.Flags),
        syscalls=tuple(
            oci.LinuxSyscall(
                names=tuple(sc.Names),
                action=sc.Action,
                errno_ret=sc.errnoret if sc.HasField("errnoret") else None,
                args=tuple(
                    oci.LinuxSeccompArg(index=a.Index, value=a.Value, value_two=a.ValueTwo, op=a.Op)
                    for a in sc.Args
                ),
            )
            for sc in s.Syscalls
        ),
    )


def linux_from_pb(lx: pb.Linux) -> oci.Linux:
    return oci.Linux(
        uid_mappings=_id_mappings(lx.UIDMappings),
        gid_mappings=_id_mappings(lx.GIDMappings),
        sysctl=dict(lx.Sysctl),
        resources=resources_from_pb(lx.Resources) if _has(lx, "Resources") else None,
        cgroups_path=_s(lx.CgroupsPath),
        namespaces=tuple(
            oci.LinuxNamespace(type=ns.Type, path=_s(ns.Path)) for ns in lx.Namespaces
        ),
        devices=tuple(
            oci.LinuxDevice(
                path=d.Path,
                type=d.Type,
                major=d.Major,
                minor=d.Minor,
                file_mode=_n(d.FileMode),
                uid=_n(d.UID),
                gid=_n(d.GID),
            )
            for d in lx.Devices
        ),
        seccomp=_seccomp_from_pb(lx.Seccomp) if _has(lx, "Seccomp") else None,
        rootfs_propagation=_s(lx.RootfsPropagation),
        masked_paths=tuple(lx.MaskedPaths),
        readonly_paths=tuple(lx.ReadonlyPaths),
        mount_label=_s(lx.MountLabel),
        intel_rdt=(
            oci.LinuxIntelRdt(l3_cache_schema=_s(lx.IntelRdt.L3CacheSchema))
            if _has(lx, "IntelRdt")
            else None
        ),
    )


def spec_from_pb(s: pb.Spec) -> oci.Spec:
    """`grpc.Spec` (CreateContainerRequest.OCI) → Spec. Pure: no validation here."""
    hooks = None
    if _has(s, "Hooks"):
        h = s.Hooks
        hooks = oci.Hooks(
            prestart=_hooks(h.Prestart),
            create_runtime=_hooks(h.CreateRuntime),
            create_container=_hooks(h.CreateContainer),
            start_container=_hooks(h.StartContainer),
            poststart=_hooks(h.Poststart),
            poststop=_hooks(h.Poststop),
        )
    return oci.Spec(
        oci_version=s.Version or oci.SPEC_VERSION,
        process=process_from_pb(s.Process) if _has(s, "Process") else None,
        root=oci.Root(path=s.Root.Path, readonly=s.Root.Readonly) if _has(s, "Root") else None,
        hostname=_s(s.Hostname),
        mounts=tuple(
            oci.Mount(
                destination=m.destination,
                type=_s(m.type),
                source=_s(m.source),
                options=tuple(m.options),
            )
            for m in s.Mounts
        ),
        hooks=hooks,
        annotations=dict(s.Annotations),
        linux=linux_from_pb(s.Linux) if _has(s, "Linux") else None,
    )


# --- oci.spec → pb -------------------------------------------------------------------------------


def _hooks_to_pb(hooks: Iterable[oci.Hook]) -> list[pb.Hook]:
    return [
        pb.Hook(Path=h.path, Args=list(h.args), Env=list(h.env), Timeout=h.timeout or 0)
        for h in hooks
    ]


def _id_mappings_to_pb(maps: Iterable[oci.LinuxIDMapping]) -> list[pb.LinuxIDMapping]:
    return [
        pb.LinuxIDMapping(ContainerID=m.container_id, HostID=m.host_id, Size=m.size) for m in maps
    ]


def process_to_pb(p: oci.Process) -> pb.Process:
    out = pb.Process(
        Terminal=p.terminal,
        User=pb.User(
            UID=p.user.uid,
            GID=p.user.gid,
            AdditionalGids=list(p.user.additional_gids),
            Username=p.user.username or "",
        ),
        Args=list(p.args),
        Env=list(p.env),
        Cwd=p.cwd,
        Rlimits=[pb.POSIXRlimit(Type=r.type, Hard=r.hard, Soft=r.soft) for r in p.rlimits],
        NoNewPrivileges=p.no_new_privileges,
        ApparmorProfile=p.apparmor_profile or "",
        OOMScoreAdj=p.oom_score_adj or 0,
        SelinuxLabel=p.selinux_label or "",
    )
    if p.console_size is not None:
        out.ConsoleSize.CopyFrom(pb.Box(Height=p.console_size.height, Width=p.console_size.width))
    if p.capabilities is not None:
        c = p.capabilities
        out.Capabilities.CopyFrom(
            pb.LinuxCapabilities(
                Bounding=list(c.bounding),
                Effective=list(c.effective),
                Inheritable=list(c.inheritable),
                Permitted=list(c.permitted),
                Ambient=list(c.ambient),
            )
        )
    return out


def resources_to_pb(r: oci.LinuxResources) -> pb.LinuxResources:
    out = pb.LinuxResources(
        Devices=[
            pb.LinuxDeviceCgroup(
                Allow=d.allow,
                Type=d.type or "",
                Major=d.major or 0,
                Minor=d.minor or 0,
                Access=d.access or "",
            )
            for d in r.devices
        ],
        HugepageLimits=[
            pb.LinuxHugepageLimit(Pagesize=h.page_size, Limit=h.limit) for h in r.hugepage_limits
        ],
    )
    if r.memory is not None:
        m = r.memory
        out.Memory.CopyFrom(
            pb.LinuxMemory(
                Limit=m.limit or 0,
                Reservation=m.reservation or 0,
                Swap=m.swap or 0,
                Kernel=m.kernel or 0,
                KernelTCP=m.kernel_tcp or 0,
                Swappiness=m.swappiness or 0,
                DisableOOMKiller=bool(m.disable_oom_killer),
            )
        )
    if r.cpu is not None:
        c = r.cpu
        out.CPU.CopyFrom(
            pb.LinuxCPU(
                Shares=c.shares or 0,
                Quota=c.quota or 0,
                Period=c.period or 0,
                RealtimeRuntime=c.realtime_runtime or 0,
                RealtimePeriod=c.realtime_period or 0,
                Cpus=c.cpus or "",
                Mems=c.mems or "",
            )
        )
    if r.pids is not None:
        out.Pids.CopyFrom(pb.LinuxPids(Limit=r.pids.limit or 0))
    if r.block_io is not None:
        b = r.block_io

        def throttle(devs: Iterable[oci.LinuxThrottleDevice]) -> list[pb.LinuxThrottleDevice]:
            return [pb.LinuxThrottleDevice(Major=d.major, Minor=d.minor, Rate=d.rate) for d in devs]

        out.BlockIO.CopyFrom(
            pb.LinuxBlockIO(
                Weight=b.weight or 0,
                LeafWeight=b.leaf_weight or 0,
                WeightDevice=[
                    pb.LinuxWeightDevice(
                        Major=d.major,
                        Minor=d.minor,
                        Weight=d.weight or 0,
                        LeafWeight=d.leaf_weight or 0,
                    )
                    for d in b.weight_device
                ],
                ThrottleReadBpsDevice=throttle(b.throttle_read_bps_device),
                ThrottleWriteBpsDevice=throttle(b.throttle_write_bps_device),
                ThrottleReadIOPSDevice=throttle(b.throttle_read_iops_device),
                ThrottleWriteIOPSDevice=throttle(b.throttle_write_iops_device),
            )
        )
    if r.network is not None:
        out.Network.CopyFrom(
            pb.LinuxNetwork(
                ClassID=r.network.class_id or 0,
                Priorities=[
                    pb.LinuxInterfacePriority(Name=p.name, Priority=p.priority)
                    for p in r.network.priorities
                ],
            )
        )
    return out


def _seccomp_to_pb(s: oci.LinuxSeccomp) -> pb.LinuxSeccomp:
    syscalls = []
    for sc in s.syscalls:
        item = pb.LinuxSyscall(
            Names=list(sc.names),
            Action=sc.action,
            Args=[
                pb.LinuxSeccompArg(Index=a.index, Value=a.value, ValueTwo=a.value_two, Op=a.op)
                for a in sc.args
            ],
        )
        if sc.errno_ret is not None:
            item.errnoret = sc.errno_ret
        syscalls.append(item)
    return pb.LinuxSeccomp(
        DefaultAction=s.default_action,
        Architectures=list(s.architectures),
        Flags=list(s.flags),
        Syscalls=syscalls,
    )


def linux_to_pb(lx: oci.Linux) -> pb.Linux:
    out = pb.Linux(
        UIDMappings=_id_mappings_to_pb(lx.uid_mappings),
        GIDMappings=_id_mappings_to_pb(lx.gid_mappings),
        Sysctl=dict(lx.sysctl),
        CgroupsPath=lx.cgroups_path or "",
        Namespaces=[pb.LinuxNamespace(Type=ns.type, Path=ns.path or "") for ns in lx.namespaces],
        Devices=[
            pb.LinuxDevice(
                Path=d.path,
                Type=d.type,
                Major=d.major or 0,
                Minor=d.minor or 0,
                FileMode=d.file_mode or 0,
                UID=d.uid or 0,
                GID=d.gid or 0,
            )
            for d in lx.devices
        ],
        RootfsPropagation=lx.rootfs_propagation or "",
        MaskedPaths=list(lx.masked_paths),
        ReadonlyPaths=list(lx.readonly_paths),
        MountLabel=lx.mount_label or "",
    )
    if lx.resources is not None:
        out.Resources.CopyFrom(resources_to_pb(lx.resources))
    if lx.seccomp is not None:
        out.Seccomp.CopyFrom(_seccomp_to_pb(lx.seccomp))
    if lx.intel_rdt is not None:
        out.IntelRdt.CopyFrom(pb.LinuxIntelRdt(L3CacheSchema=lx.intel_rdt.l3_cache_schema or ""))
    return out


def spec_to_pb(s: oci.Spec) -> pb.Spec:
    """Spec → `grpc.Spec` (what the shim would send; for agent-ctl and tests)."""
    out = pb.Spec(
        Version=s.oci_version,
        Hostname=s.hostname or "",
        Mounts=[
            pb.Mount(
                destination=m.destination,
                source=m.source or "",
                type=m.type or "",
                options=list(m.options),
            )
            for m in s.mounts
        ],
        Annotations=dict(s.annotations),
    )
    if s.process is not None:
        out.Process.CopyFrom(process_to_pb(s.process))
    if s.root is not None:
        out.Root.CopyFrom(pb.Root(Path=s.root.path, Readonly=s.root.readonly))
    if s.hooks is not None:
        h = s.hooks
        out.Hooks.CopyFrom(
            pb.Hooks(
                Prestart=_hooks_to_pb(h.prestart),
                CreateRuntime=_hooks_to_pb(h.create_runtime),
                CreateContainer=_hooks_to_pb(h.create_container),
                StartContainer=_hooks_to_pb(h.start_container),
                Poststart=_hooks_to_pb(h.poststart),
                Poststop=_hooks_to_pb(h.poststop),
            )
        )
    if s.linux is not None:
        out.Linux.CopyFrom(linux_to_pb(s.linux))
    return out
