"""The sandbox's persistent IPC and UTS namespaces, pinned at ``<sandbox_ns_dir>/{ipc,uts}``.

They are created by a helper child (`agent.sandbox.nshelper`, started through agent.spawn): the
agent process never unshares or setns-es itself. Every container's ipc/uts namespace entries are
pointed at these files, so all containers of the pod share them (reference doc §1.2, §4.1).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.errors import Internal
from agent.spawn import Completed
from agent.storage import mountinfo
from oci.syscalls.api import Syscalls
from oci.syscalls.consts import MNT_DETACH

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 30.0
# A pinned namespace file carries one mount; a few more cover a repeated bind by mistake.
MAX_STACKED_MOUNTS = 8


class Runner(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109 - the helper is killed on expiry
        env: Mapping[str, str] | None = None,
    ) -> Completed: ...


@dataclass(frozen=True, slots=True)
class SandboxNamespaces:
    ipc: Path
    uts: Path


def _prepare(ns_dir: Path) -> SandboxNamespaces:
    ns_dir.mkdir(parents=True, exist_ok=True)
    ns_dir = Path(os.path.realpath(ns_dir))  # as mountinfo spells it
    pinned = SandboxNamespaces(ipc=ns_dir / "ipc", uts=ns_dir / "uts")
    for path in (pinned.ipc, pinned.uts):
        if mountinfo.is_mounted(path):
            raise Internal(f"sandbox namespaces: {path} is already mounted (a previous sandbox?)")
        path.touch(exist_ok=True)
    return pinned


async def create(ns_dir: Path, hostname: str, runner: Runner) -> SandboxNamespaces:
    pinned = _prepare(ns_dir)
    helper = str(Path(__file__).with_name("nshelper.py"))
    done = await runner.run(
        [sys.executable, "-I", helper, str(pinned.ipc), str(pinned.uts), hostname],
        timeout=HELPER_TIMEOUT,
        env={},
    )
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise Internal(f"create sandbox ipc/uts namespaces: {err or f'status {done.returncode}'}")
    return pinned


def release(pinned: SandboxNamespaces, syscalls: Syscalls) -> list[str]:
    """Unmount and remove the pinned namespace files; returns the errors (does not stop early)."""
    errors: list[str] = []
    for path in (pinned.ipc, pinned.uts):
        # Unmount until the kernel says it is no mount point (EINVAL). Asking the kernel rather
        # than matching /proc/self/mountinfo also works when the directory is reached through a
        # symlink (a guest's /var/run -> /run), where the recorded mount point differs.
        for _ in range(MAX_STACKED_MOUNTS):
            try:
                syscalls.umount2(str(path), MNT_DETACH)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOENT):
                    errors.append(f"unmount {path}: {errno.errorcode.get(err.errno or 0, '?')}")
                break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            errors.append(f"remove {path}: {os.strerror(err.errno or 0)}")
    return errors
