"""The one seam between the container engine and the kernel; the only package that loads
``ctypes`` or ``prctl``.

Import the module you need: ``api`` (the ``Syscalls`` protocol and the plans it takes),
``linux`` (``LinuxSyscalls``, the real implementation), ``fake`` (``RecordingSyscalls``, the
recording fake for unit tests), ``consts`` (kernel constants), ``libc``, ``libseccomp`` and
``boot`` (the ctypes bindings). Every call raises ``OSError`` carrying ``errno`` and, where there
is one, the path. The package itself imports nothing: the guest's PID 1 loads ``libc`` and
``boot`` before anything else (see agent/boot).
"""
