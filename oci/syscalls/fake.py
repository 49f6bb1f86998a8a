"""RecordingSyscalls: a fake of the Syscalls protocol for unit tests.

Records every call in order as ``Call(name, *args)``, keeps an in-memory mount table
(``mounts``: target → (source, fstype, flags, data)) and lets a test inject a failure for the
n-th call of a given name (``fail("mount", errno.EACCES, target="/x/proc")``).

Callers that act on file descriptors pass ``/proc/self/fd/N`` as a mount target (or in a mount's
data, as overlay directories do): the fake records the path the fd stands for, so tests read and
match the real paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .api import CapabilitySets, SeccompPlan

_PROC_FD = re.compile(r"/proc/self/fd/(\d+)")


def _real(text: str | None) -> str | None:
    """``/proc/self/fd/N`` → the path of fd N (as it is now), wherever it appears in ``text``."""
    if text is None or "/proc/self/fd/" not in text:
        return text
    return _PROC_FD.sub(lambda m: os.readlink(m.group(0)), text)


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[object, ...] = ()

    def __init__(self, name: str, *args: object) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "args", args)


@dataclass
class _Failure:
    name: str
    errno: int
    target: str | None


@dataclass
class RecordingSyscalls:
    calls: list[Call] = field(default_factory=list)
    mounts: dict[str, tuple[str | None, str | None, int, str | None]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)

    def fail(self, name: str, errno: int, target: str | None = None) -> None:
        """Make the next call ``name`` (on ``target`` if given) raise OSError(errno)."""
        self._failures.append(_Failure(name, errno, target))

    def names(self) -> list[str]:
        return [c.name for c in self.calls]

    def _rec(self, name: str, *args: object, path: str | None = None) -> None:
        for f in self._failures:
            if f.name == name and (f.target is None or f.target == path):
                self._failures.remove(f)
                raise OSError(f.errno, f"{name}: {os.strerror(f.errno)}", path)
        self.calls.append(Call(name, *args))

    def mount(
        self,
        source: str | None,
        target: str,
        fstype: str | None,
        flags: int,
        data: str | None = None,
    ) -> None:
        source = _real(source)
        target = _real(target) or target
        data = _real(data)
        self._rec("mount", source, target, fstype, flags, data, path=target)
        if source is None and fstype is None and target in self.mounts:
            return  # a remount or a propagation change of an existing mount
        self.mounts[target] = (source, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        target = _real(target) or target
        self._rec("umount2", target, flags, path=target)
        self.mounts.pop(target, None)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._rec("pivot_root", new_root, put_old, path=new_root)

    def chroot(self, path: str) -> None:
        self._rec("chroot", path, path=path)

    def chdir(self, path: str) -> None:
        self._rec("chdir", path, path=path)

    def unshare(self, flags: int) -> None:
        self._rec("unshare", flags)

    def setns(self, fd: int, nstype: int, path: str | None = None) -> None:
        self._rec("setns", nstype, path, path=path)

    def sethostname(self, name: str) -> None:
        self._rec("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._rec("setdomainname", name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        self._rec("mknod", path, mode, device, path=path)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._rec("chown", path, uid, gid, path=path)

    def setgroups(self, gids: list[int]) -> None:
        self._rec("setgroups", tuple(gids))

    def setresgid(self, gid: int) -> None:
        self._rec("setresgid", gid)

    def setresuid(self, uid: int) -> None:
        self._rec("setresuid", uid)

    def set_keepcaps(self, on: bool) -> None:
        self._rec("set_keepcaps", on)

    def set_no_new_privs(self) -> None:
        self._rec("set_no_new_privs")

    def set_dumpable(self, on: bool) -> None:
        self._rec("set_dumpable", on)

    def set_child_subreaper(self) -> None:
        self._rec("set_child_subreaper")

    def set_pdeathsig(self, sig: int) -> None:
        self._rec("set_pdeathsig", sig)

    def drop_bounding_set(self, keep: frozenset[int]) -> None:
        self._rec("drop_bounding_set", keep)

    def set_capabilities(self, caps: CapabilitySets) -> None:
        self._rec("set_capabilities", caps)

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        self._rec("setrlimit", resource, soft, hard)

    def umask(self, mask: int) -> None:
        self._rec("umask", mask)

    def join_session_keyring(self, name: str | None) -> None:
        self._rec("join_session_keyring", name)

    def set_controlling_tty(self, fd: int) -> None:
        self._rec("set_controlling_tty", fd)

    def personality(self, domain: int) -> None:
        self._rec("personality", domain)

    def load_seccomp(self, plan: SeccompPlan) -> None:
        self._rec("load_seccomp", plan)

    def write_file(self, path: str, data: str) -> None:
        self._rec("write_file", path, data, path=path)
        self.files[path] = data

    def close_fds_from(self, first: int, keep: frozenset[int] = frozenset()) -> None:
        self._rec("close_fds_from", first, keep)
