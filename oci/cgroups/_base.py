"""What the v1 and v2 managers share: pid listing, kill-all, conversion helpers."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path, PurePosixPath

from .errors import CgroupBusy, CgroupError, CgroupNotFound, from_oserror
from .fs import read_lines


def list_pids(top: Path) -> list[int]:
    """Every pid in `top` and its child cgroups (cgroup.procs), sorted."""
    if not top.exists():
        raise CgroupNotFound(f"list pids of {top}: cgroup does not exist", errno=errno.ENOENT)
    pids: set[int] = set()
    for root, _, _ in os.walk(top):
        procs = Path(root) / "cgroup.procs"
        try:
            lines = read_lines(procs)
        except CgroupError:
            if not Path(root).exists():  # removed while walking
                continue
            raise
        pids.update(int(p) for p in lines)
    return sorted(pids)


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except OSError as e:
            raise from_oserror(f"kill({pid}, {signal.Signals(sig).name})", e) from None


def wait_empty(top: Path, timeout: float) -> None:
    """Wait until no process is left in `top` (they are exiting after a SIGKILL)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        left = list_pids(top) if top.exists() else []
        if not left:
            return
        if time.monotonic() >= deadline:
            raise CgroupBusy(f"processes {left} still in {top} after {timeout:g}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) → v2 cpu.weight (1..10000), runc's linear mapping."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io_weight(weight: int) -> int:
    """v1 blkio weight (10..1000) → v2 io.weight (1..10000), runc's mapping."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def as_dir(root: Path, path: PurePosixPath) -> Path:
    return root.joinpath(*path.parts[1:])
