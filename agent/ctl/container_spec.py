"""A default container spec as the Kata shim would send it (``grpc.Spec``), for ``kata-agent-ctl
run`` and the lifecycle tests: runc's default mounts, capabilities, masked and read-only paths;
ipc/uts/mount namespaces (the agent adds the pid namespace; the network is the guest's)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.rpc.pb import oci_pb2

DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


def default_mounts() -> list[oci_pb2.Mount]:
    def m(dest: str, typ: str, src: str, *opts: str) -> oci_pb2.Mount:
        return oci_pb2.Mount(destination=dest, type=typ, source=src, options=list(opts))

    return [
        m("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        m("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ),
        m("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
        m("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        m("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
    ]


def container_spec(
    rootfs: str,
    args: Sequence[str],
    *,
    terminal: bool = False,
    env: Sequence[str] = (),
    cwd: str = "/",
    cgroups_path: str = "",
    memory_limit: int = 0,
    annotations: Mapping[str, str] | None = None,
    readonly_root: bool = False,
    console_size: tuple[int, int] | None = None,
) -> oci_pb2.Spec:
    caps = list(DEFAULT_CAPS)
    environment = [DEFAULT_PATH, *(["TERM=xterm"] if terminal else []), *env]
    resources = None
    if memory_limit:
        resources = oci_pb2.LinuxResources(
            Memory=oci_pb2.LinuxMemory(Limit=memory_limit, Swap=memory_limit)
        )
    return oci_pb2.Spec(
        Version="1.1.0",
        Process=oci_pb2.Process(
            Terminal=terminal,
            User=oci_pb2.User(UID=0, GID=0),
            Args=list(args),
            Env=environment,
            Cwd=cwd,
            Capabilities=oci_pb2.LinuxCapabilities(Bounding=caps, Effective=caps, Permitted=caps),
            NoNewPrivileges=True,
            ConsoleSize=_box(console_size) if terminal else None,
        ),
        Root=oci_pb2.Root(Path=rootfs, Readonly=readonly_root),
        Mounts=default_mounts(),
        Annotations=dict(annotations or {}),
        Linux=oci_pb2.Linux(
            CgroupsPath=cgroups_path,
            Resources=resources,
            Namespaces=[
                oci_pb2.LinuxNamespace(Type="ipc"),
                oci_pb2.LinuxNamespace(Type="uts"),
                oci_pb2.LinuxNamespace(Type="mount"),
            ],
            MaskedPaths=list(MASKED_PATHS),
            ReadonlyPaths=list(READONLY_PATHS),
        ),
    )


def _box(size: tuple[int, int] | None) -> oci_pb2.Box | None:
    return None if size is None else oci_pb2.Box(Height=size[0], Width=size[1])


def exec_process(
    args: Sequence[str],
    *,
    terminal: bool = False,
    env: Sequence[str] = (),
    cwd: str = "/",
    console_size: tuple[int, int] | None = None,
) -> oci_pb2.Process:
    """What the Go shim sends for an exec: Terminal, User, Args, Env, Cwd (plus, here, the
    console size, so the terminal has its size from the start)."""
    return oci_pb2.Process(
        Terminal=terminal,
        ConsoleSize=_box(console_size) if terminal else None,
        User=oci_pb2.User(UID=0, GID=0),
        Args=list(args),
        Env=[DEFAULT_PATH, *(["TERM=xterm"] if terminal else []), *env],
        Cwd=cwd,
    )
