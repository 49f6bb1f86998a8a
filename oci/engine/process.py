"""The process half of a spec, planned as data before the fork (with ``oci.engine.plan``, so bad
names fail before any process exists) and applied in the init: capabilities, seccomp, rlimits,
user, env."""

from __future__ import annotations

import errno as _errno
import os
from dataclasses import dataclass

from oci import spec as ocispec
from oci.spec import names as spec_names
from oci.syscalls import libseccomp as ls
from oci.syscalls.api import ArgCondition, CapabilitySets, SeccompPlan, SeccompRule

from .errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class ProcessPlan:
    """The container process resolved ahead of the fork (names to numbers, the executable)."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    umask: int | None
    rlimits: tuple[tuple[int, int, int], ...]
    caps: CapabilitySets | None
    no_new_privs: bool
    oom_score_adj: int | None
    seccomp: SeccompPlan | None
    apparmor_profile: str | None
    selinux_label: str | None
    terminal: bool
    console_size: tuple[int, int] | None


def _caps(names: tuple[str, ...], field: str) -> frozenset[int]:
    out = set()
    for n in names:
        num = spec_names.CAPABILITIES.get(
            n.upper() if n.upper().startswith("CAP_") else "CAP_" + n.upper()
        )
        if num is None:
            raise InvalidArgument(f'{field}: unknown capability "{n}"')
        out.add(num)
    return frozenset(out)


def plan_caps(caps: ocispec.LinuxCapabilities | None) -> CapabilitySets | None:
    if caps is None:
        return None
    return CapabilitySets(
        bounding=_caps(caps.bounding, "process.capabilities.bounding"),
        effective=_caps(caps.effective, "process.capabilities.effective"),
        permitted=_caps(caps.permitted, "process.capabilities.permitted"),
        inheritable=_caps(caps.inheritable, "process.capabilities.inheritable"),
        ambient=_caps(caps.ambient, "process.capabilities.ambient"),
    )


def _action(name: str, errno_ret: int | None, field: str) -> int:
    match name:
        case "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD":
            return ls.SCMP_ACT_KILL_THREAD
        case "SCMP_ACT_KILL_PROCESS":
            return ls.SCMP_ACT_KILL_PROCESS
        case "SCMP_ACT_TRAP":
            return ls.SCMP_ACT_TRAP
        case "SCMP_ACT_ERRNO":
            return ls.act_errno(_errno.EPERM if errno_ret is None else errno_ret)
        case "SCMP_ACT_TRACE":
            return ls.act_trace(_errno.EPERM if errno_ret is None else errno_ret)
        case "SCMP_ACT_ALLOW":
            return ls.SCMP_ACT_ALLOW
        case "SCMP_ACT_LOG":
            return ls.SCMP_ACT_LOG
        case "SCMP_ACT_NOTIFY":
            raise InvalidArgument(f"{field}: SCMP_ACT_NOTIFY is not supported")
    raise InvalidArgument(f'{field}: unknown seccomp action "{name}"')


def plan_seccomp(sc: ocispec.LinuxSeccomp | None) -> SeccompPlan | None:
    """Spec ``linux.seccomp`` → SeccompPlan; every name is resolved now (unknown syscall,
    architecture, operator or flag → InvalidArgument naming the field)."""
    if sc is None:
        return None
    default = _action(sc.default_action, sc.default_errno_ret, "linux.seccomp.defaultAction")
    for i, arch in enumerate(sc.architectures):
        try:
            ls.resolve_arch(arch)
        except OSError as err:
            raise InvalidArgument(f"linux.seccomp.architectures[{i}]: {err.strerror}") from None
    for i, flag in enumerate(sc.flags):
        if flag not in ls.FLAGS:
            raise InvalidArgument(f'linux.seccomp.flags[{i}]: unsupported flag "{flag}"')
    rules = []
    for i, sysc in enumerate(sc.syscalls):
        field = f"linux.seccomp.syscalls[{i}]"
        action = _action(sysc.action, sysc.errno_ret, field + ".action")
        conds = []
        for j, a in enumerate(sysc.args):
            op = ls.COMPARE_OPS.get(a.op)
            if op is None:
                raise InvalidArgument(f'{field}.args[{j}].op: unknown operator "{a.op}"')
            if not 0 <= a.index < 6:
                raise InvalidArgument(f"{field}.args[{j}].index: must be 0..5, got {a.index}")
            conds.append(ArgCondition(a.index, op, a.value, a.value_two))
        for name in sysc.names:
            try:
                ls.resolve_syscall(name)
            except OSError as err:
                raise InvalidArgument(f"{field}.names: {err.strerror}") from None
        rules.append(SeccompRule(action, tuple(sysc.names), tuple(conds)))
    return SeccompPlan(default, tuple(sc.architectures), tuple(sc.flags), tuple(rules))


def plan_rlimits(
    rlimits: tuple[ocispec.POSIXRlimit, ...],
) -> tuple[tuple[int, int, int], ...]:
    out = []
    for i, r in enumerate(rlimits):
        num = spec_names.RLIMITS.get(r.type)
        if num is None:
            raise InvalidArgument(f'process.rlimits[{i}].type: unknown rlimit "{r.type}"')
        out.append((num, r.soft, r.hard))
    return tuple(out)


def plan_process(proc: ocispec.Process, seccomp: ocispec.LinuxSeccomp | None) -> ProcessPlan:
    """``oci.spec.Process`` (+ ``linux.seccomp``) → ProcessPlan, validating every name."""
    user = proc.user
    args = tuple(proc.args)
    if not args:
        raise InvalidArgument("process.args: must not be empty")
    size = proc.console_size
    return ProcessPlan(
        args=args,
        env=tuple(proc.env),
        cwd=proc.cwd or "/",
        uid=user.uid,
        gid=user.gid,
        additional_gids=tuple(user.additional_gids),
        umask=user.umask,
        rlimits=plan_rlimits(tuple(proc.rlimits)),
        caps=plan_caps(proc.capabilities),
        no_new_privs=bool(proc.no_new_privileges),
        oom_score_adj=proc.oom_score_adj,
        seccomp=plan_seccomp(seccomp),
        apparmor_profile=proc.apparmor_profile,
        selinux_label=proc.selinux_label,
        terminal=bool(proc.terminal),
        console_size=(size.height, size.width) if size is not None else None,
    )


def env_get(env: tuple[str, ...], key: str) -> str | None:
    for e in env:
        k, _, v = e.partition("=")
        if k == key:
            return v
    return None


def home_for(uid: int, passwd: str = "/etc/passwd") -> str:
    try:
        with open(passwd) as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def exec_env(p: ProcessPlan) -> dict[str, str]:
    """The environment the program gets: the plan's, plus HOME from the container's
    /etc/passwd when it has none (runc's rule)."""
    env: dict[str, str] = {}
    for e in p.env:
        k, _, v = e.partition("=")
        env[k] = v
    if env_get(p.env, "HOME") is None:
        env["HOME"] = home_for(p.uid)
    return env


def find_executable(arg0: str, env: tuple[str, ...]) -> str:
    """Resolve ``arg0`` in the container (after pivot_root) like execvp; OSError if missing."""
    if "/" in arg0:
        if not os.path.exists(arg0):
            raise OSError(2, f'exec: "{arg0}": no such file or directory', arg0)
        return arg0
    for d in (env_get(env, "PATH") or DEFAULT_PATH).split(":"):
        cand = os.path.join(d or ".", arg0)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    raise OSError(2, f'exec: "{arg0}": executable file not found in $PATH', arg0)
