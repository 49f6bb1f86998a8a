"""Race tests: a separate process swaps a directory entry with a symlink to a directory outside
(renameat2 RENAME_EXCHANGE, in a loop, for several seconds) while the agent works on that path;
afterwards nothing outside has changed. Run with openat2 and with the O_NOFOLLOW walk."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent import config as cfg
from agent.errors import AgentError
from agent.services.guest import CopyFileArgs, GuestService
from oci import safepath
from tests.root.hardening.conftest import swaps_done

pytestmark = pytest.mark.slow

SECONDS = 4.0


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest) -> Iterator[str]:
    safepath.set_openat2(None if request.param == "openat2" else False)
    if request.param == "openat2" and not safepath.openat2_in_use():
        pytest.skip("the kernel has no openat2")
    yield request.param
    safepath.set_openat2(None)


def _snapshot(top: Path) -> dict[str, tuple[int, int, int, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out[str(p.relative_to(top))] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    top = tmp_path / "outside"
    (top / "vdir").mkdir(parents=True)
    (top / "vdir").chmod(0o700)
    (top / "victim").write_text("do not touch")
    (top / "victim").chmod(0o600)
    return top


@pytest.mark.usefixtures("resolver")
async def test_copy_file_under_symlink_swaps(
    tmp_path: Path, outside: Path, swapper: Callable[..., object]
) -> None:
    config = cfg.with_values(cfg.defaults(), {("paths", "run_dir"): tmp_path / "run"})
    service = GuestService(config)
    base = config.paths.shared_containers_dir
    base.mkdir(parents=True)
    (base / "d").mkdir()
    (base / "d.swap").symlink_to(outside / "vdir")
    (base / "f.tmp").write_text("")
    (base / "f.swap").symlink_to(outside / "victim")
    before = _snapshot(outside)
    procs = [swapper(base, "d", "d.swap", SECONDS), swapper(base, "f.tmp", "f.swap", SECONDS)]
    calls = refused = 0
    end = time.monotonic() + SECONDS
    while time.monotonic() < end:
        for args in (
            CopyFileArgs(f"{base}/d", 0, stat.S_IFDIR | 0o777, 0o777, 4242, 4242, 0, b""),
            CopyFileArgs(f"{base}/d/sub/x", 2, stat.S_IFREG | 0o666, 0o777, 4242, 4242, 0, b"p"),
            CopyFileArgs(f"{base}/f", 2, stat.S_IFREG | 0o666, 0o777, 4242, 4242, 0, b"p"),
            CopyFileArgs(f"{base}/f", 2, stat.S_IFREG | 0o666, 0o777, 4242, 4242, 1, b"q"),
        ):
            calls += 1
            try:
                await service.copy_file(args)
            except AgentError:
                refused += 1
    swaps = [swaps_done(p) for p in procs]  # type: ignore[arg-type]
    assert min(swaps) > 100, f"the swapper barely ran: {swaps}"
    assert _snapshot(outside) == before
    assert calls > refused  # the race did not simply make every call fail


@pytest.fixture
def private_run_dir(tmp_path: Path) -> Iterator[Path]:
    """A run_dir bind-mounted on itself, private: nothing mounted below escapes the test."""
    from oci.syscalls import consts as m
    from oci.syscalls.linux import LinuxSyscalls

    run = tmp_path / "run"
    run.mkdir()
    sc = LinuxSyscalls()
    sc.mount(str(run), str(run), None, m.MS_BIND)
    sc.mount(None, str(run), None, m.MS_PRIVATE)
    try:
        yield run
    finally:
        sc.umount2(str(run), m.MNT_DETACH)


@pytest.mark.usefixtures("resolver")
async def test_storage_mounts_under_symlink_swaps(
    private_run_dir: Path, outside: Path, swapper: Callable[..., object]
) -> None:
    """Storages whose mount point lies below a directory of the share are added and released
    while the share's directory is swapped with a symlink to outside: every mount lands below
    run_dir or the call fails; nothing is mounted or made outside."""
    from agent import spawn
    from agent.services.hardware import HardwareService
    from agent.storage import mountinfo
    from agent.storage.model import Storage
    from oci.syscalls.linux import LinuxSyscalls

    hw = HardwareService.build(
        run_dir=private_run_dir, hotplug_timeout=1.0, syscalls=LinuxSyscalls(), run=spawn.run
    )
    share = private_run_dir / "shared" / "containers"
    (share / "sb").mkdir(parents=True)
    (share / "sb.swap").symlink_to(outside / "vdir")
    before = _snapshot(outside)
    top = os.path.realpath(outside)  # noqa: ASYNC240 - once, before the race
    proc = swapper(share, "sb", "sb.swap", SECONDS)
    ok = refused = 0
    end = time.monotonic() + SECONDS
    i = 0
    while time.monotonic() < end:
        i += 1
        vol = Storage(
            driver="ephemeral",
            fstype="tmpfs",
            source="tmpfs",
            mount_point=str(share / "sb" / f"vol{i}" / "data"),
        )
        try:
            await hw.storage.add_storages([vol], f"c{i}")
            ok += 1
        except AgentError:
            refused += 1
        outside_mounts = [e.mount_point for e in mountinfo.read() if e.mount_point.startswith(top)]
        assert outside_mounts == []
        try:
            await hw.storage.release(f"c{i}")
        except AgentError:
            refused += 1
    swaps = swaps_done(proc)  # type: ignore[arg-type]
    await hw.storage.release_all()
    assert swaps > 100, f"the swapper barely ran: {swaps}"
    assert _snapshot(outside) == before
    assert ok > 0
    left = [e.mount_point for e in mountinfo.mounts_below(private_run_dir)]
    assert left == [str(private_run_dir)], left
