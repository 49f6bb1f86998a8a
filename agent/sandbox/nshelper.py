"""Helper child: create the sandbox's persistent IPC and UTS namespaces.

Run as ``python -I <this file> IPC_FILE UTS_FILE HOSTNAME`` by `agent.sandbox.namespaces`
(through agent.spawn; as a script, so that only `oci.syscalls` is imported, not the agent's
packages, which would take several times as long): it unshares both namespaces, sets the hostname
in the new UTS namespace and bind-mounts ``/proc/self/ns/{ipc,uts}`` onto the two (existing, empty)
files, which pins the namespaces after it exits. The agent itself never changes namespaces.
Exit status 0 on success; otherwise one line on stderr naming the step and the errno.
"""

from __future__ import annotations

import errno
import os
import sys


def main(argv: list[str]) -> int:
    # Run as a script: the repository is on sys.path only once __main__ below has put it there.
    from oci.syscalls.consts import CLONE_NEWIPC, CLONE_NEWUTS, MS_BIND
    from oci.syscalls.linux import LinuxSyscalls

    if len(argv) != 3:
        print("usage: nshelper IPC_FILE UTS_FILE HOSTNAME", file=sys.stderr)
        return 2
    ipc_file, uts_file, hostname = argv
    sys_ = LinuxSyscalls()
    step = "unshare(CLONE_NEWIPC|CLONE_NEWUTS)"
    try:
        sys_.unshare(CLONE_NEWIPC | CLONE_NEWUTS)
        if hostname:
            step = f"sethostname({hostname!r})"
            sys_.sethostname(hostname)
        step = f"bind mount /proc/self/ns/ipc on {ipc_file}"
        sys_.mount("/proc/self/ns/ipc", ipc_file, None, MS_BIND, None)
        step = f"bind mount /proc/self/ns/uts on {uts_file}"
        sys_.mount("/proc/self/ns/uts", uts_file, None, MS_BIND, None)
    except OSError as err:
        code = errno.errorcode.get(err.errno or 0, "?")
        print(f"{step}: {code}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    raise SystemExit(main(sys.argv[1:]))
