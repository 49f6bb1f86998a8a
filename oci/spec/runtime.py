"""The platform-neutral part of config.json (runtime-spec `config.md`, 1.0 to 1.2).

Fields for other platforms (`solaris`, `windows`, `vm`, `zos`) are not modelled; like any
unknown key they are kept in `Spec.extra` by the default decoding policy and written back.
"""

# spec_field() is this package's dataclass field specifier (a dataclasses.field wrapper).

from __future__ import annotations

import json
from collections.abc import Mapping

from ._codec import SpecObject, encode, model, spec_field
from .linux import Linux, LinuxCapabilities, LinuxIDMapping, LinuxIOPriority

SPEC_VERSION = "1.2.0"
"""The runtime-spec version this model implements (written by `default_spec`)."""


@model
class Box(SpecObject):
    """`process.consoleSize`."""

    height: int = spec_field(0, always=True)
    width: int = spec_field(0, always=True)


@model
class User(SpecObject):
    """`process.user` (numeric ids; `username` is for other platforms)."""

    uid: int = spec_field(0, always=True)
    gid: int = spec_field(0, always=True)
    umask: int | None = spec_field(None)
    additional_gids: tuple[int, ...] = spec_field(())
    username: str | None = spec_field(None)


@model
class POSIXRlimit(SpecObject):
    """`process.rlimits[]`."""

    type: str = spec_field("", required=True)
    hard: int = spec_field(0, required=True)
    soft: int = spec_field(0, required=True)


@model
class Scheduler(SpecObject):
    """`process.scheduler` (sched_setattr parameters)."""

    policy: str = spec_field("", required=True)
    nice: int | None = spec_field(None)
    priority: int | None = spec_field(None)
    flags: tuple[str, ...] = spec_field(())
    runtime: int | None = spec_field(None)
    deadline: int | None = spec_field(None)
    period: int | None = spec_field(None)


@model
class CPUAffinity(SpecObject):
    """`process.execCPUAffinity`."""

    initial: str | None = spec_field(None)
    final: str | None = spec_field(None)


@model
class Process(SpecObject):
    """`process`: the container process (also an exec's process.json)."""

    terminal: bool = spec_field(False)
    console_size: Box | None = spec_field(None)
    user: User = spec_field(default_factory=User)
    args: tuple[str, ...] = spec_field(())
    command_line: str | None = spec_field(None)
    env: tuple[str, ...] = spec_field(())
    cwd: str = spec_field("", required=True)
    capabilities: LinuxCapabilities | None = spec_field(None)
    rlimits: tuple[POSIXRlimit, ...] = spec_field(())
    no_new_privileges: bool = spec_field(False)
    apparmor_profile: str | None = spec_field(None)
    oom_score_adj: int | None = spec_field(None)
    scheduler: Scheduler | None = spec_field(None)
    selinux_label: str | None = spec_field(None)
    io_priority: LinuxIOPriority | None = spec_field(None)
    exec_cpu_affinity: CPUAffinity | None = spec_field(None, key="execCPUAffinity")


@model
class Root(SpecObject):
    """`root`: the container's root filesystem (`path` may be relative to the bundle)."""

    path: str = spec_field("", required=True)
    readonly: bool = spec_field(False)


@model
class Mount(SpecObject):
    """`mounts[]`."""

    destination: str = spec_field("", required=True)
    type: str | None = spec_field(None)
    source: str | None = spec_field(None)
    options: tuple[str, ...] = spec_field(())
    uid_mappings: tuple[LinuxIDMapping, ...] = spec_field(())
    gid_mappings: tuple[LinuxIDMapping, ...] = spec_field(())


@model
class Hook(SpecObject):
    """One hook: `hooks.<phase>[]`."""

    path: str = spec_field("", required=True)
    args: tuple[str, ...] = spec_field(())
    env: tuple[str, ...] = spec_field(())
    timeout: int | None = spec_field(None)


@model
class Hooks(SpecObject):
    """`hooks`: the six lifecycle hook lists."""

    prestart: tuple[Hook, ...] = spec_field(())
    create_runtime: tuple[Hook, ...] = spec_field(())
    create_container: tuple[Hook, ...] = spec_field(())
    start_container: tuple[Hook, ...] = spec_field(())
    poststart: tuple[Hook, ...] = spec_field(())
    poststop: tuple[Hook, ...] = spec_field(())


@model
class Spec(SpecObject):
    """A whole config.json."""

    oci_version: str = spec_field(SPEC_VERSION, required=True)
    process: Process | None = spec_field(None)
    root: Root | None = spec_field(None)
    hostname: str | None = spec_field(None)
    domainname: str | None = spec_field(None)
    mounts: tuple[Mount, ...] = spec_field(())
    hooks: Hooks | None = spec_field(None)
    annotations: Mapping[str, str] = spec_field(default_factory=dict)
    linux: Linux | None = spec_field(None)

    def to_json(self, *, indent: int | None = None) -> str:
        """config.json text for this spec (compact unless `indent` is given)."""
        seps = (",", ":") if indent is None else (",", ": ")
        return json.dumps(encode(self), indent=indent, separators=seps)
