"""The container's init configuration, planned from the spec before anything exists (pure: no
I/O; every bad name fails here with the field that carries it, runc's specconv).

``create_config`` plans a create (namespaces, mounts, devices, hooks, the process);
``exec_config`` plans an exec into a container from its state record. Namespaces to join are
returned as paths: the launch opens them (``oci.engine.launch.open_namespaces``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from oci import spec as ocispec
from oci.spec import names
from oci.syscalls import consts as c

from . import rootfs
from .errors import InvalidArgument
from .init import DevicePlan, InitConfig
from .process import ProcessPlan, plan_caps, plan_seccomp

PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}

# The order exec joins a container's namespaces in (stage-1 takes the user one first and the
# mount one last whatever the order).
_EXEC_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


@dataclass(frozen=True, slots=True)
class Options:
    """What the caller decides about a create, beside the spec."""

    stdio: tuple[int, int, int] | None = None
    console_socket: int | None = None
    no_pivot: bool = False
    preserve_fds: int = 0
    new_keyring: bool = True


@dataclass(frozen=True, slots=True)
class NamespacePath:
    """A namespace to join, by path: ``field`` names it in the spec (create), or is empty."""

    flag: int
    path: str
    field: str = ""


def create_config(
    container_id: str,
    bundle: str,
    rootfs_path: str,
    spec: ocispec.Spec,
    process: ProcessPlan,
    options: Options,
) -> tuple[InitConfig, tuple[NamespacePath, ...]]:
    """The init's configuration for a create, and the namespaces it joins by path."""
    linux = spec.linux or ocispec.Linux()
    ns_new = 0
    joins: list[NamespacePath] = []
    user_ns: str | None = None
    for i, ns in enumerate(linux.namespaces):
        flag = c.NAMESPACE_FLAGS.get(ns.type, 0)
        if not flag:
            raise InvalidArgument(f'linux.namespaces[{i}].type: unknown namespace "{ns.type}"')
        if ns.path:
            joins.append(NamespacePath(flag, ns.path, f"linux.namespaces[{i}].path"))
            if flag == c.CLONE_NEWUSER:
                user_ns = "join"
        elif flag == c.CLONE_NEWUSER:
            user_ns = "new"
        else:
            ns_new |= flag
    mounts = tuple(
        rootfs.plan_mount(m.destination, m.source, m.type, m.options, bundle) for m in spec.mounts
    )
    dev_mount = next((m for m in mounts if m.destination.rstrip("/") == "/dev"), None)
    devices = tuple(
        DevicePlan(
            d.path,
            d.type,
            d.major or 0,
            d.minor or 0,
            d.file_mode if d.file_mode is not None else 0o666,
            d.uid or 0,
            d.gid or 0,
        )
        for d in linux.devices
    )
    hooks = spec.hooks
    personality = None
    if linux.personality is not None:
        personality = PERSONALITY.get(linux.personality.domain)
        if personality is None:
            raise InvalidArgument(
                f'linux.personality.domain: unknown domain "{linux.personality.domain}"'
            )
    config = InitConfig(
        mode="create",
        container_id=container_id,
        process=process,
        rootfs=rootfs_path,
        bundle=bundle,
        user_ns=user_ns,
        ns_new=ns_new,
        mounts=mounts,
        devices=devices,
        default_devices=dev_mount is not None and not dev_mount.is_bind,
        rootfs_propagation=linux.rootfs_propagation,
        rootfs_readonly=spec.root.readonly if spec.root else False,
        masked_paths=linux.masked_paths,
        readonly_paths=linux.readonly_paths,
        sysctl=tuple(linux.sysctl.items()),
        hostname=spec.hostname,
        domainname=spec.domainname,
        no_pivot=options.no_pivot,
        hooks_create_container=hooks.create_container if hooks else (),
        hooks_start_container=hooks.start_container if hooks else (),
        has_prestart_hooks=bool(hooks and (hooks.prestart or hooks.create_runtime)),
        stdio=options.stdio,
        console_fd=options.console_socket,
        preserve_fds=options.preserve_fds,
        keep_fds=_keep(options.console_socket),
        personality=personality,
        new_keyring=options.new_keyring,
        time_offsets=tuple(
            (clock, off.secs or 0, off.nanosecs or 0) for clock, off in linux.time_offsets.items()
        ),
    )
    return config, tuple(joins)


def exec_config(
    container_id: str,
    bundle: str,
    init_pid: int,
    namespaces: list[str],
    process: ProcessPlan,
    *,
    stdio: tuple[int, int, int] | None,
    console_socket: int | None,
    preserve_fds: int,
) -> tuple[InitConfig, tuple[NamespacePath, ...]]:
    """The configuration for an exec into a container whose init is ``init_pid`` and which
    has the ``namespaces`` (spec type names) of its state record, and the namespaces it
    joins (the init's)."""
    joins = tuple(
        NamespacePath(c.NAMESPACE_FLAGS[t], f"/proc/{init_pid}/ns/{names.NAMESPACE_PROC_NAMES[t]}")
        for t in _EXEC_ORDER
        if t in namespaces
    )
    config = InitConfig(
        mode="exec",
        container_id=container_id,
        process=process,
        rootfs="/",
        bundle=bundle,
        stdio=stdio,
        console_fd=console_socket,
        preserve_fds=preserve_fds,
        keep_fds=_keep(console_socket),
    )
    return config, joins


def id_maps(linux: ocispec.Linux) -> tuple[str, str]:
    """The uid_map and gid_map text of a new user namespace."""

    def text(maps: tuple[ocispec.LinuxIDMapping, ...]) -> str:
        return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)

    return text(linux.uid_mappings), text(linux.gid_mappings)


def exec_process(config: dict[str, Any], process: ProcessPlan, *, init_caps: bool) -> ProcessPlan:
    """An exec's process plan completed from the container's stored spec (``config``): its
    seccomp profile, and with ``init_caps`` (the process named none) the init's capabilities.
    Only these two parts of the spec are decoded."""
    raw_seccomp = (config.get("linux") or {}).get("seccomp")
    raw_caps = (config.get("process") or {}).get("capabilities")
    if raw_seccomp:
        seccomp = ocispec.decode(ocispec.LinuxSeccomp, raw_seccomp)[0]
        process = dataclasses.replace(process, seccomp=plan_seccomp(seccomp))
    if init_caps and raw_caps:
        caps = ocispec.decode(ocispec.LinuxCapabilities, raw_caps)[0]
        process = dataclasses.replace(process, caps=plan_caps(caps))
    return process


def _keep(console_socket: int | None) -> frozenset[int]:
    return frozenset(fd for fd in (console_socket,) if fd is not None)
