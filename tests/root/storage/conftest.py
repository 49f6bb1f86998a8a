"""Fixtures for the storage root tests: a private temporary run_dir, a started HardwareService
(real mounts through oci.syscalls, real helpers through agent.spawn, the real uevent listener),
and loop devices that are always detached and mounts that are always undone.

The run_dir is a bind mount of itself made private, so nothing mounted below it propagates to
other mount namespaces; teardown detaches it recursively, so no test can leave a mount behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agent.services.hardware import HardwareService
from agent.storage import mountinfo
from oci.syscalls import consts as c
from oci.syscalls.linux import LinuxSyscalls

LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    run = tmp_path / f"kata-{uuid.uuid4().hex[:8]}"
    run.mkdir()
    sc = LinuxSyscalls()
    sc.mount(str(run), str(run), None, c.MS_BIND)
    try:
        sc.mount(None, str(run), None, c.MS_PRIVATE)
        yield run
    finally:
        left = [e.mount_point for e in mountinfo.mounts_below(run) if e.mount_point != str(run)]
        sc.umount2(str(run), c.MNT_DETACH)
        assert left == [], f"mounts left behind under {run}: {left}"


@pytest.fixture
async def hw(run_dir: Path) -> AsyncIterator[HardwareService]:
    from agent import spawn

    svc = HardwareService.build(
        run_dir=run_dir, hotplug_timeout=10.0, syscalls=LinuxSyscalls(), run=spawn.run
    )
    await svc.start()
    try:
        yield svc
    finally:
        with contextlib.suppress(Exception):
            await svc.storage.release_all()
        await svc.stop()


def _losetup(*args: str) -> str:
    done = subprocess.run(["losetup", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def loopdev(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`loopdev(size_mib, mkfs=False)` → /dev/loopN on a sparse file; detached at teardown."""
    made: list[str] = []

    def make(size_mib: int = 64, *, mkfs: bool = False) -> Path:
        img = tmp_path / f"disk-{len(made)}.img"
        with img.open("wb") as f:
            f.truncate(size_mib << 20)
        if mkfs:
            subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
        dev = _losetup("--find", "--show", str(img))
        made.append(dev)
        return Path(dev)

    yield make
    for dev in made:
        with contextlib.suppress(subprocess.CalledProcessError):
            _losetup("-d", dev)


@pytest.fixture
def fresh_loop_index() -> Iterator[Callable[[], int]]:
    """Create loop devices through LOOP_CTL_ADD at unused indexes (a real `add` uevent each)."""
    added: list[int] = []
    fd = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)

    def add() -> int:
        used = {int(p.name[4:]) for p in Path("/sys/class/block").glob("loop[0-9]*")}
        idx = max(used | {0}) + 1 + len(added) + (os.getpid() % 50)
        while idx in used:
            idx += 1
        fcntl.ioctl(fd, LOOP_CTL_ADD, idx)
        added.append(idx)
        return idx

    try:
        yield add
    finally:
        for idx in added:
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, LOOP_CTL_REMOVE, idx)
        os.close(fd)
