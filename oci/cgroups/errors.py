"""Errors of the cgroup layer: OS errors translated here, naming the step, the file and the errno.

The caller (the engine, the agent's services) maps these to its own error model by meaning:
`CgroupNotFound` (the cgroup or a controller file is missing), `CgroupBusy` (EBUSY: still has
processes or children, or an internal-process conflict), `CgroupInvalid` (the kernel refused a
value, EINVAL/ERANGE/ENODEV/..., or a name too long), `CgroupUnsupported` (the resource cannot be
expressed on this host) and the base `CgroupError` for anything else.
"""

from __future__ import annotations

import errno as _errno
import os


class CgroupError(Exception):
    """A cgroup operation failed; `str()` is a message a person can act on."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message


class CgroupNotFound(CgroupError):
    """The cgroup directory or one of its interface files does not exist."""


class CgroupBusy(CgroupError):
    """EBUSY (processes or child cgroups remain), or a wait (freeze, removal) timed out."""


class CgroupInvalid(CgroupError):
    """The kernel refused the value written (EINVAL, ERANGE, EOPNOTSUPP, ...)."""


class CgroupUnsupported(CgroupError):
    """The requested resource has no interface on this host (controller absent, cgroup v2)."""


def errno_name(code: int | None) -> str:
    if code is None:
        return "unknown error"
    return f"{_errno.errorcode.get(code, str(code))} ({os.strerror(code)})"


def from_oserror(step: str, e: OSError) -> CgroupError:
    """Translate `e` raised while doing `step` ("write 100 to /sys/fs/cgroup/...")."""
    message = f"{step}: {errno_name(e.errno)}"
    if e.errno in (_errno.ENOENT, _errno.ENOTDIR):
        return CgroupNotFound(message, errno=e.errno)
    if e.errno == _errno.EBUSY:
        return CgroupBusy(message, errno=e.errno)
    if e.errno in (
        _errno.EINVAL,
        _errno.ERANGE,
        _errno.EOPNOTSUPP,
        _errno.ENOSPC,
        _errno.ENODEV,  # a device rule for a device that does not exist
        _errno.ENAMETOOLONG,
        _errno.EOVERFLOW,
    ):
        return CgroupInvalid(message, errno=e.errno)
    return CgroupError(message, errno=e.errno)
