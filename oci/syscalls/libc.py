"""ctypes binding of the few libc calls Python 3.11 lacks, with one checked-call helper."""

from __future__ import annotations

import ctypes
import os

from .consts import (
    KEYCTL_JOIN_SESSION_KEYRING,
    SYS_CLOSE_RANGE,
    SYS_KEYCTL,
    SYS_PIVOT_ROOT,
    SYS_SETNS,
    SYS_UNSHARE,
)

_libc = ctypes.CDLL(None, use_errno=True)

_mount = _libc.mount
_mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_mount.restype = ctypes.c_int
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_umount2.restype = ctypes.c_int
_sethostname = _libc.sethostname
_sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_setdomainname = _libc.setdomainname
_setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_personality = _libc.personality
_personality.argtypes = (ctypes.c_ulong,)
_personality.restype = ctypes.c_int


def oserror(what: str, path: str | None = None) -> OSError:
    """Build an OSError from the current errno; ``what`` names the call, ``path`` the object."""
    err = ctypes.get_errno()
    msg = f"{what}: {os.strerror(err)}"
    return OSError(err, msg, path) if path is not None else OSError(err, msg)


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None
) -> None:
    if _mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        raise oserror("mount", target)


def umount2(target: str, flags: int) -> None:
    if _umount2(_b(target), flags) != 0:
        raise oserror("umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    if _syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)) != 0:
        raise oserror("pivot_root", new_root)


def unshare(flags: int) -> None:
    if _syscall(SYS_UNSHARE, ctypes.c_int(flags)) != 0:
        raise oserror("unshare")


def setns(fd: int, nstype: int, path: str | None = None) -> None:
    if _syscall(SYS_SETNS, ctypes.c_int(fd), ctypes.c_int(nstype)) != 0:
        raise oserror("setns", path)


def sethostname(name: str) -> None:
    b = name.encode()
    if _sethostname(b, len(b)) != 0:
        raise oserror("sethostname", name)


def setdomainname(name: str) -> None:
    b = name.encode()
    if _setdomainname(b, len(b)) != 0:
        raise oserror("setdomainname", name)


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    r: int = _prctl(option, a2, a3, a4, a5)
    if r < 0:
        raise oserror(f"prctl({option})")
    return r


def keyctl_join_session_keyring(name: str | None) -> None:
    if _syscall(SYS_KEYCTL, ctypes.c_int(KEYCTL_JOIN_SESSION_KEYRING), _b(name)) < 0:
        raise oserror("keyctl(KEYCTL_JOIN_SESSION_KEYRING)")


def ioctl_int(fd: int, request: int, arg: int) -> None:
    if _ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_long(arg)) != 0:
        raise oserror(f"ioctl({request:#x})")


def personality(domain: int) -> None:
    if _personality(domain) < 0:
        raise oserror("personality")


def close_range(first: int, last: int = 0xFFFFFFFF) -> None:
    if _syscall(SYS_CLOSE_RANGE, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(0)) != 0:
        raise oserror("close_range")


def malloc_trim(pad: int = 0) -> None:
    """Give the heap pages malloc holds free back to the kernel, in every arena (glibc's
    ``malloc_trim``, see malloc_trim(3)); nothing to do on a libc without it (musl)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is None:
        return
    trim.argtypes = (ctypes.c_size_t,)
    trim(pad)


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def openat2(dirfd: int, path: str, flags: int, mode: int, resolve: int) -> int:
    """openat2(2): ``path`` resolved relative to ``dirfd`` under the ``resolve`` restrictions
    (RESOLVE_BENEATH, RESOLVE_IN_ROOT, ...); the new fd, or OSError (ENOSYS before Linux 5.6)."""
    from .consts import SYS_OPENAT2

    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd: int = _syscall(
        SYS_OPENAT2,
        ctypes.c_int(dirfd),
        _b(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        raise oserror("openat2", path)
    return fd


_renameat2 = _libc.renameat2
_renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
_renameat2.restype = ctypes.c_int


def renameat2(olddirfd: int, old: str, newdirfd: int, new: str, flags: int) -> None:
    """renameat2(2) (RENAME_EXCHANGE swaps the two names atomically, RENAME_NOREPLACE)."""
    if _renameat2(olddirfd, _b(old), newdirfd, _b(new), flags) != 0:
        raise oserror("renameat2", old)
