"""Minimal ctypes binding to libseccomp.so.2: build a filter, then load it.

Only what the OCI ``linux.seccomp`` object needs: default action, architectures, rules with
argument conditions, errno return values and the filter flags. Every failure raises OSError
with the errno libseccomp returned and a message naming the syscall/arch/flag involved.
"""

from __future__ import annotations

import ctypes
import os

from .api import ArgCondition

SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_NOTIFY = 0x7FC00000


def act_errno(err: int) -> int:
    return 0x00050000 | (err & 0xFFFF)


def act_trace(msg: int) -> int:
    return 0x7FF00000 | (msg & 0xFFFF)


# enum scmp_compare
COMPARE_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# enum scmp_filter_attr
_ATTR_ACT_DEFAULT = 1
_ATTR_ACT_BADARCH = 2
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _ATTR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _ATTR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ATTR_CTL_SSB,
}


class _ArgCmp(ctypes.Structure):
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as err:
            raise OSError(2, f"seccomp: cannot load libseccomp.so.2: {err}") from err
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = (ctypes.c_uint32,)
        lib.seccomp_release.argtypes = (ctypes.c_void_p,)
        lib.seccomp_load.argtypes = (ctypes.c_void_p,)
        lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
        lib.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        lib.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
        lib.seccomp_rule_add_array.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.POINTER(_ArgCmp),
        )
        _lib = lib
    return _lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise OSError(-rc, f"seccomp: {what}: {os.strerror(-rc)}")


def resolve_syscall(name: str) -> int:
    """Syscall name → number for the native arch; unknown names raise OSError(EINVAL)."""
    nr: int = _load().seccomp_syscall_resolve_name(name.encode())
    if nr == -1:  # __NR_SCMP_ERROR
        raise OSError(22, f'seccomp: unknown syscall "{name}"')
    return nr


def resolve_arch(name: str) -> int:
    """OCI arch name (SCMP_ARCH_X86_64) → libseccomp token; unknown names raise OSError."""
    short = name.removeprefix("SCMP_ARCH_").lower()
    token: int = _load().seccomp_arch_resolve_name(short.encode())
    if token == 0:
        raise OSError(22, f'seccomp: unknown architecture "{name}"')
    return token


class Filter:
    """One libseccomp filter context; ``load()`` installs it in the calling thread/process."""

    def __init__(self, default_action: int) -> None:
        lib = _load()
        ctx = lib.seccomp_init(default_action)
        if not ctx:
            raise OSError(22, f"seccomp: seccomp_init({default_action:#x}) failed")
        self._lib = lib
        self._ctx = ctypes.c_void_p(ctx)
        self.default_action = default_action
        # We manage no_new_privs ourselves (runc does the same).
        _check(lib.seccomp_attr_set(self._ctx, _ATTR_CTL_NNP, 0), "disable CTL_NNP")

    def set_flag(self, flag: str) -> None:
        attr = FLAGS.get(flag)
        if attr is None:
            raise OSError(22, f'seccomp: unsupported flag "{flag}"')
        _check(self._lib.seccomp_attr_set(self._ctx, attr, 1), f"flag {flag}")

    def set_badarch_action(self, action: int) -> None:
        _check(self._lib.seccomp_attr_set(self._ctx, _ATTR_ACT_BADARCH, action), "badarch action")

    def add_arch(self, name: str) -> None:
        rc = self._lib.seccomp_arch_add(self._ctx, resolve_arch(name))
        if rc == -17:  # EEXIST: the native arch is already in the filter
            return
        _check(rc, f"add architecture {name}")

    def add_rule(self, action: int, syscall: str, conds: tuple[ArgCondition, ...] = ()) -> None:
        nr = resolve_syscall(syscall)
        if action == self.default_action:
            return  # libseccomp refuses such rules; they are no-ops anyway
        indexes = [c.index for c in conds]
        if len(set(indexes)) != len(indexes):
            # Several conditions on one argument: runc adds one rule per condition (OR).
            for c in conds:
                self._add(action, nr, syscall, (c,))
        else:
            self._add(action, nr, syscall, conds)

    def _add(self, action: int, nr: int, name: str, conds: tuple[ArgCondition, ...]) -> None:
        arr = (_ArgCmp * max(len(conds), 1))()
        for i, c in enumerate(conds):
            arr[i] = _ArgCmp(c.index, c.op, c.value, c.value_two)
        _check(
            self._lib.seccomp_rule_add_array(self._ctx, action, nr, len(conds), arr),
            f'rule for syscall "{name}"',
        )

    def load(self) -> None:
        _check(self._lib.seccomp_load(self._ctx), "load filter")

    def release(self) -> None:
        if self._ctx:
            self._lib.seccomp_release(self._ctx)
            self._ctx = ctypes.c_void_p(None)
