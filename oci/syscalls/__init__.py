"""The one seam between the container engine and the kernel.

``Syscalls`` is the protocol, ``LinuxSyscalls`` the real implementation (ctypes libc,
python-prctl, libseccomp) and ``oci.syscalls.fake.RecordingSyscalls`` the recording fake.
Every call raises ``OSError`` carrying ``errno`` and, where there is one, the path.
Only this package imports ``ctypes`` or ``prctl``.
"""

from .api import CapabilitySets, SeccompPlan, SeccompRule, Syscalls
from .linux import LinuxSyscalls

__all__ = ["CapabilitySets", "LinuxSyscalls", "SeccompPlan", "SeccompRule", "Syscalls"]
