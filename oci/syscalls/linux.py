"""LinuxSyscalls: the real implementation of the Syscalls protocol (os, ctypes libc, prctl)."""

from __future__ import annotations

import os
import resource as _resource

import _prctl  # type: ignore[import-not-found]  # python-prctl C module (wrapper: caps <= 37)

from . import consts, libc, libseccomp
from .api import CapabilitySets, SeccompPlan


def _os_call(what: str, path: str | None, fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as err:
        msg = f"{what}: {os.strerror(err.errno)}" if err.errno else f"{what}: {err}"
        raise OSError(err.errno, msg, path) from None


def _last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


class LinuxSyscalls:
    """Direct system calls. Stateless; one instance may be shared."""

    def mount(
        self,
        source: str | None,
        target: str,
        fstype: str | None,
        flags: int,
        data: str | None = None,
    ) -> None:
        libc.mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        libc.umount2(target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        libc.pivot_root(new_root, put_old)

    def chroot(self, path: str) -> None:
        _os_call("chroot", path, os.chroot, path)

    def chdir(self, path: str) -> None:
        _os_call("chdir", path, os.chdir, path)

    def unshare(self, flags: int) -> None:
        libc.unshare(flags)

    def setns(self, fd: int, nstype: int, path: str | None = None) -> None:
        libc.setns(fd, nstype, path)

    def sethostname(self, name: str) -> None:
        libc.sethostname(name)

    def setdomainname(self, name: str) -> None:
        libc.setdomainname(name)

    def mknod(self, path: str, mode: int, device: int) -> None:
        _os_call("mknod", path, os.mknod, path, mode, device)

    def chown(self, path: str, uid: int, gid: int) -> None:
        _os_call("chown", path, os.chown, path, uid, gid)

    def setgroups(self, gids: list[int]) -> None:
        _os_call("setgroups", None, os.setgroups, gids)

    def setresgid(self, gid: int) -> None:
        _os_call(f"setresgid({gid})", None, os.setresgid, gid, gid, gid)

    def setresuid(self, uid: int) -> None:
        _os_call(f"setresuid({uid})", None, os.setresuid, uid, uid, uid)

    def set_keepcaps(self, on: bool) -> None:
        libc.prctl(consts.PR_SET_KEEPCAPS, int(on))

    def set_no_new_privs(self) -> None:
        libc.prctl(consts.PR_SET_NO_NEW_PRIVS, 1)

    def set_dumpable(self, on: bool) -> None:
        libc.prctl(consts.PR_SET_DUMPABLE, int(on))

    def set_child_subreaper(self) -> None:
        libc.prctl(consts.PR_SET_CHILD_SUBREAPER, 1)

    def set_pdeathsig(self, sig: int) -> None:
        libc.prctl(consts.PR_SET_PDEATHSIG, sig)

    def drop_bounding_set(self, keep: frozenset[int]) -> None:
        for cap in range(_last_cap() + 1):
            if cap not in keep:
                try:
                    _prctl.prctl(consts.PR_CAPBSET_DROP, cap)
                except OSError as err:
                    raise OSError(
                        err.errno,
                        f"drop capability {cap} from the bounding set: "
                        f"{os.strerror(err.errno or 0)}",
                    ) from None

    def set_capabilities(self, caps: CapabilitySets) -> None:
        """Effective/permitted/inheritable via libcap (python-prctl), then the ambient set."""
        allcaps = set(range(_last_cap() + 1))
        e, p, i = caps.effective, caps.permitted | caps.ambient, caps.inheritable | caps.ambient
        e = e & p
        try:
            _prctl.set_caps(
                list(e), list(p), list(i), list(allcaps - e), list(allcaps - p), list(allcaps - i)
            )
        except OSError as err:
            raise OSError(err.errno, f"capset: {os.strerror(err.errno or 0)}") from None
        libc.prctl(consts.PR_CAP_AMBIENT, consts.PR_CAP_AMBIENT_CLEAR_ALL)
        for cap in sorted(caps.ambient):
            libc.prctl(consts.PR_CAP_AMBIENT, consts.PR_CAP_AMBIENT_RAISE, cap)

    def setrlimit(self, resource: int, soft: int, hard: int) -> None:
        _os_call(f"setrlimit({resource})", None, _resource.setrlimit, resource, (soft, hard))

    def umask(self, mask: int) -> None:
        os.umask(mask)

    def join_session_keyring(self, name: str | None) -> None:
        libc.keyctl_join_session_keyring(name)

    def set_controlling_tty(self, fd: int) -> None:
        libc.ioctl_int(fd, consts.TIOCSCTTY, 0)

    def personality(self, domain: int) -> None:
        libc.personality(domain)

    def load_seccomp(self, plan: SeccompPlan) -> None:
        flt = libseccomp.Filter(plan.default_action)
        try:
            for arch in plan.architectures:
                flt.add_arch(arch)
            for flag in plan.flags:
                flt.set_flag(flag)
            for rule in plan.rules:
                for name in rule.names:
                    flt.add_rule(rule.action, name, rule.conditions)
            flt.load()
        finally:
            flt.release()

    def write_file(self, path: str, data: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as err:
            raise OSError(err.errno, f"open: {os.strerror(err.errno or 0)}", path) from None
        try:
            os.write(fd, data.encode())
        except OSError as err:
            raise OSError(err.errno, f"write: {os.strerror(err.errno or 0)}", path) from None
        finally:
            os.close(fd)

    def close_fds_from(self, first: int, keep: frozenset[int] = frozenset()) -> None:
        lo = first
        for fd in sorted(k for k in keep if k >= first):
            if fd > lo:
                os.closerange(lo, fd)
            lo = fd + 1
        try:
            libc.close_range(lo)
        except OSError:
            os.closerange(lo, 65536)
