"""Calls only the guest's init needs (agent/boot): finit_module and reboot.

Kept apart from ``libc.py`` so the container engine's seam stays as it is; same conventions:
ctypes with ``use_errno``, failures raise ``OSError`` naming the call and the object.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_reboot = _libc.reboot
_reboot.argtypes = (ctypes.c_int,)
_reboot.restype = ctypes.c_int

SYS_FINIT_MODULE = 313  # x86_64
RB_POWER_OFF = 0x4321FEDC
RB_AUTOBOOT = 0x01234567


def _oserror(what: str, path: str | None = None) -> OSError:
    err = ctypes.get_errno()
    msg = f"{what}: {os.strerror(err)}"
    return OSError(err, msg, path) if path is not None else OSError(err, msg)


def finit_module(path: str, params: str = "") -> None:
    """Load the kernel module in file `path`; EEXIST (already loaded) is not an error."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if (
            _syscall(
                SYS_FINIT_MODULE,
                ctypes.c_int(fd),
                ctypes.c_char_p(params.encode()),
                ctypes.c_int(0),
            )
            != 0
        ):
            err = _oserror("finit_module", path)
            if err.errno != 17:  # EEXIST
                raise err
    finally:
        os.close(fd)


def reboot(cmd: int) -> None:
    """reboot(2). Only the guest's PID 1 may call this (agent/boot/pid1.py checks)."""
    if _reboot(cmd) != 0:
        raise _oserror("reboot")
