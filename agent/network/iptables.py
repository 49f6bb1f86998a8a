"""GetIPTables / SetIPTables: `iptables-save` and `iptables-restore --wait 5` (and the ip6tables
variants) from Debian's iptables package.

Kata looks in /usr/sbin first, then /sbin (its snapshot had two of the four paths wrong:
`iptables-store` and, for IPv6 restore, `ip6tables-save`; these are the right ones). Children run
through the agent's spawner (`agent.spawn.run`, injected), never subprocess.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from agent.errors import AgentError, Internal, InvalidArgument, Unavailable
from agent.spawn import Runner, RunResult

log = logging.getLogger(__name__)

SBIN_DIRS = ("/usr/sbin", "/sbin")
RESTORE_WAIT_SECONDS = 5
TIMEOUT = 30.0

# iptables exit statuses (xtables.h): 1 OTHER_PROBLEM (e.g. "line N failed"),
# 2 PARAMETER_PROBLEM, 4 RESOURCE_PROBLEM (e.g. the xtables lock is held).
_BAD_INPUT = (1, 2)
_RESOURCE = 4


def binary(name: str, dirs: Sequence[str] = SBIN_DIRS) -> str:
    for directory in dirs:
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    raise Unavailable(
        f"{name} not found in {' or '.join(dirs)} (the guest image needs Debian's iptables package)"
    )


def _names(is_ipv6: bool) -> tuple[str, str]:
    prefix = "ip6tables" if is_ipv6 else "iptables"
    return f"{prefix}-save", f"{prefix}-restore"


def _failure(argv0: str, done: RunResult) -> AgentError:
    text = (
        done.stderr.decode(errors="replace").strip() or done.stdout.decode(errors="replace").strip()
    )
    how = (
        f"exited with status {done.returncode}"
        if done.returncode >= 0
        else f"killed by signal {-done.returncode}"
    )
    message = f"{os.path.basename(argv0)} {how}: {text}"
    if done.returncode in _BAD_INPUT:
        return InvalidArgument(message)
    if done.returncode == _RESOURCE:
        return Unavailable(message)
    return Internal(message)


class IPTables:
    def __init__(self, run: Runner, dirs: Sequence[str] = SBIN_DIRS) -> None:
        self._run = run
        self._dirs = tuple(dirs)

    async def get(self, is_ipv6: bool) -> bytes:
        save, _ = _names(is_ipv6)
        argv = [binary(save, self._dirs)]
        done = await self._run(argv, timeout=TIMEOUT)
        if done.returncode != 0:
            raise _failure(argv[0], done)
        return done.stdout

    async def set(self, is_ipv6: bool, data: bytes) -> bytes:
        _, restore = _names(is_ipv6)
        argv = [binary(restore, self._dirs), "--wait", str(RESTORE_WAIT_SECONDS)]
        done = await self._run(argv, input=data, timeout=TIMEOUT)
        if done.returncode != 0:
            raise _failure(argv[0], done)
        log.info("%s: rules restored (%d bytes)", restore, len(data))
        return done.stdout
