"""`default_spec()`: the config.json that `runc spec` prints (and `kata-oci spec` prints)."""

from __future__ import annotations

from .linux import Linux, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespace, LinuxResources
from .runtime import SPEC_VERSION, POSIXRlimit, Process, Root, Spec, User
from .runtime import Mount as _M

_CAPS = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")


def default_spec(*, rootless: bool = False) -> Spec:
    """runc's example spec: `sh` on a terminal in a read-only `rootfs`, with runc's mounts,
    namespaces, masked and read-only paths. `rootless=False` is the only variant implemented
    the same way as runc; with `rootless=True` a user namespace is added (mappings left to the
    caller) and the network namespace dropped, like `runc spec --rootless`.
    """
    caps = LinuxCapabilities(bounding=_CAPS, effective=_CAPS, permitted=_CAPS, ambient=_CAPS)
    namespaces = tuple(
        LinuxNamespace(type=t) for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")
    )
    if rootless:
        kept = tuple(ns for ns in namespaces if ns.type != "network")
        namespaces = (*kept, LinuxNamespace(type="user"))
    return Spec(
        oci_version=SPEC_VERSION,
        process=Process(
            terminal=True,
            user=User(uid=0, gid=0),
            args=("sh",),
            env=(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ),
            cwd="/",
            capabilities=caps,
            rlimits=(POSIXRlimit(type="RLIMIT_NOFILE", hard=1024, soft=1024),),
            no_new_privileges=True,
        ),
        root=Root(path="rootfs", readonly=True),
        hostname="runc",
        mounts=(
            _M(destination="/proc", type="proc", source="proc"),
            _M(
                destination="/dev",
                type="tmpfs",
                source="tmpfs",
                options=("nosuid", "strictatime", "mode=755", "size=65536k"),
            ),
            _M(
                destination="/dev/pts",
                type="devpts",
                source="devpts",
                options=("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
            ),
            _M(
                destination="/dev/shm",
                type="tmpfs",
                source="shm",
                options=("nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
            ),
            _M(
                destination="/dev/mqueue",
                type="mqueue",
                source="mqueue",
                options=("nosuid", "noexec", "nodev"),
            ),
            _M(
                destination="/sys",
                type="sysfs",
                source="sysfs",
                options=("nosuid", "noexec", "nodev", "ro"),
            ),
            _M(
                destination="/sys/fs/cgroup",
                type="cgroup",
                source="cgroup",
                options=("nosuid", "noexec", "nodev", "relatime", "ro"),
            ),
        ),
        linux=Linux(
            resources=LinuxResources(devices=(LinuxDeviceCgroup(allow=False, access="rwm"),)),
            namespaces=namespaces,
            masked_paths=(
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ),
            readonly_paths=(
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ),
        ),
    )
