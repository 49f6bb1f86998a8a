"""The one seam between the container engine and the kernel.

``Syscalls`` is the protocol, ``LinuxSyscalls`` the real implementation (ctypes libc,
python-prctl, libseccomp) and ``oci.syscalls.fake.RecordingSyscalls`` the recording fake.
Every call raises ``OSError`` carrying ``errno`` and, where there is one, the path.
Only this package imports ``ctypes`` or ``prctl``.

The names are loaded on first use (PEP 562) so that ``from oci.syscalls import consts`` stays
cheap for short kata-oci commands.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs ~0.1 s on PID 1's path under TCG
if TYPE_CHECKING:
    from typing import Any

    from .api import CapabilitySets, SeccompPlan, SeccompRule, Syscalls
    from .linux import LinuxSyscalls

__all__ = ["CapabilitySets", "LinuxSyscalls", "SeccompPlan", "SeccompRule", "Syscalls"]


def __getattr__(name: str) -> Any:
    if name == "LinuxSyscalls":
        from .linux import LinuxSyscalls

        return LinuxSyscalls
    if name in ("CapabilitySets", "SeccompPlan", "SeccompRule", "Syscalls"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'oci.syscalls' has no attribute {name!r}")
