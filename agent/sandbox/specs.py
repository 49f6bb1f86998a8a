"""Pure rewrites of a container's OCI spec before the engine sees it (reference doc §4.1 steps 4-6).

* ``root.path`` becomes the bundle's ``rootfs`` (the original root is bind-mounted there).
* ipc/uts namespace entries point at the sandbox's pinned namespaces (when the sandbox has them).
* A pid namespace entry is always present: the sandbox's shared one (``/proc/<first init>/ns/pid``)
  when the container asks for it and one is known, else a new one.
* Guest hooks found by CreateSandbox are added after the spec's own hooks.

``cgroupsPath`` is left as sent: `oci.cgroups.manager_for` resolves it (empty → ``/<id>``, Kata's
``slice:prefix:name`` → ``slice/prefix/name``) for the engine and for the agent alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.errors import InvalidArgument
from agent.sandbox.sandbox import GuestHooks
from oci.spec import Hook, Hooks, Linux, LinuxNamespace, Spec


def prepare_spec(
    spec: Spec,
    *,
    container_id: str,
    rootfs: Path,
    ipc_ns: Path | None,
    uts_ns: Path | None,
    pid_ns: str | None,
    hooks: GuestHooks,
) -> Spec:
    if spec.process is None:
        raise InvalidArgument(f"container {container_id}: the spec has no process")
    if not spec.process.args:
        raise InvalidArgument(f"container {container_id}: process.args is empty")
    if spec.root is None or not spec.root.path:
        raise InvalidArgument(f"container {container_id}: the spec has no root.path")
    if not spec.root.path.startswith("/"):
        raise InvalidArgument(
            f"container {container_id}: root.path {spec.root.path!r} must be absolute"
        )
    linux = spec.linux or Linux()
    namespaces: list[LinuxNamespace] = []
    for ns in linux.namespaces:
        if ns.type == "pid":
            continue
        if ns.type == "ipc" and ipc_ns is not None:
            ns = LinuxNamespace(type="ipc", path=str(ipc_ns))
        elif ns.type == "uts" and uts_ns is not None:
            ns = LinuxNamespace(type="uts", path=str(uts_ns))
        namespaces.append(ns)
    namespaces.append(LinuxNamespace(type="pid", path=pid_ns))
    linux = dataclasses.replace(linux, namespaces=tuple(namespaces))
    return dataclasses.replace(
        spec,
        root=dataclasses.replace(spec.root, path=str(rootfs)),
        linux=linux,
        hooks=merge_hooks(spec.hooks, hooks),
    )


def merge_hooks(hooks: Hooks | None, guest: GuestHooks) -> Hooks | None:
    if not (guest.prestart or guest.poststart or guest.poststop):
        return hooks
    base = hooks or Hooks()

    def extra(paths: tuple[str, ...], kind: str) -> tuple[Hook, ...]:
        return tuple(Hook(path=p, args=(Path(p).name, kind)) for p in paths)

    return dataclasses.replace(
        base,
        prestart=base.prestart + extra(guest.prestart, "prestart"),
        poststart=base.poststart + extra(guest.poststart, "poststart"),
        poststop=base.poststop + extra(guest.poststop, "poststop"),
    )
