"""Ref-counting, rollback and driver option handling, against the recording syscall fake."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import InvalidArgument, PermissionDenied, ResourceExhausted
from agent.storage import StorageManager
from agent.storage.env import StorageEnv
from agent.storage.model import Storage
from agent.storage.paths import StorageRoots
from oci.syscalls import consts as c
from oci.syscalls.fake import RecordingSyscalls


@dataclass
class _Res:
    returncode: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def __call__(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109
    ) -> _Res:
        self.calls.append(list(argv))
        return _Res()


class NoDevices:
    async def block_by_pci_path(self, pci_path: str) -> Path:
        raise AssertionError

    async def block_by_name(self, devname: str) -> Path:
        raise AssertionError

    async def scsi_block(self, scsi_addr: str) -> Path:
        raise AssertionError

    async def pmem(self, devname: str) -> Path:
        raise AssertionError


@pytest.fixture
def sys_() -> RecordingSyscalls:
    return RecordingSyscalls()


@pytest.fixture
def env(tmp_path: Path, sys_: RecordingSyscalls) -> StorageEnv:
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "sys").mkdir()
    return StorageEnv(
        roots=StorageRoots(run),
        sys=sys_,
        run=FakeRunner(),
        devices=NoDevices(),
        sysfs=tmp_path / "sys",
    )


def mgr(env: StorageEnv) -> StorageManager:
    return StorageManager(env)


def shm(env: StorageEnv, **kw: object) -> Storage:
    args: dict[str, object] = dict(
        driver="ephemeral",
        source="shm",
        fstype="tmpfs",
        mount_point=str(env.roots.sandbox_dir / "shm"),
        options=("noexec", "nosuid", "nodev", "mode=1777", "size=65536"),
    )
    args.update(kw)
    return Storage(**args)  # type: ignore[arg-type]


async def test_tmpfs_keeps_size_options(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    [mp] = await sm.add_storages([shm(env)], None)
    _src, fstype, flags, data = sys_.mounts[mp]
    assert fstype == "tmpfs"
    assert flags == c.MS_NOEXEC | c.MS_NOSUID | c.MS_NODEV
    assert data == "mode=1777,size=65536"


async def test_refcount_two_containers(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    vol = Storage(
        driver="ephemeral",
        source="tmpfs",
        fstype="tmpfs",
        mount_point=str(env.roots.sandbox_dir / "ephemeral" / "v"),
    )
    [a] = await sm.add_storages([vol], "c1")
    [b] = await sm.add_storages([vol], "c2")
    assert a == b
    assert sm.refcount(a) == 2
    assert sys_.names().count("mount") == 1
    await sm.release("c1")
    assert sm.refcount(a) == 1
    assert a in sys_.mounts
    await sm.release("c2")
    assert sm.refcount(a) == 0
    assert a not in sys_.mounts
    assert not Path(a).exists()  # noqa: ASYNC240


async def test_shared_kept_until_sandbox_end(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    vol = Storage(
        driver="ephemeral",
        fstype="tmpfs",
        shared=True,
        mount_point=str(env.roots.sandbox_dir / "ephemeral" / "s"),
    )
    [a] = await sm.add_storages([vol], "c1")
    await sm.release("c1")
    assert a in sys_.mounts
    await sm.release_all()
    assert a not in sys_.mounts


async def test_unknown_driver_rolls_back(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    bad = Storage(driver="floppy", mount_point=str(env.roots.sandbox_dir / "f"))
    with pytest.raises(InvalidArgument, match=r"^Failed to find the storage handler floppy$"):
        await sm.add_storages([shm(env), bad], "c1")
    assert sys_.mounts == {}
    assert sm.mount_points("c1") == []


async def test_mount_failure_rolls_back_earlier(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    v2 = Storage(driver="ephemeral", fstype="tmpfs", mount_point=str(env.roots.sandbox_dir / "v2"))
    sys_.fail("mount", errno.ENOSPC, target=os.path.realpath(v2.mount_point))  # noqa: ASYNC240
    with pytest.raises(Exception, match="ENOSPC"):
        await sm.add_storages([shm(env), v2], "c1")
    assert sys_.mounts == {}


async def test_outside_run_dir(env: StorageEnv, tmp_path: Path) -> None:
    sm = mgr(env)
    with pytest.raises(PermissionDenied, match="outside the allowed directories"):
        await sm.add_storages(
            [Storage(driver="local", mount_point=str(tmp_path / "elsewhere"))], "c1"
        )
    assert not (tmp_path / "elsewhere").exists()


async def test_virtiofs_dax_and_9p_defaults(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    fs = Storage(
        driver="virtio-fs",
        source="kataShared",
        fstype="virtiofs",
        options=("dax",),
        mount_point=str(env.roots.containers_dir) + "/",
    )
    p9 = Storage(
        driver="9p",
        source="hostshare",
        fstype="9p",
        mount_point=str(env.roots.shared_dir / "p9"),
    )
    a, b = await sm.add_storages([fs, p9], None)
    assert sys_.mounts[a] == ("kataShared", "virtiofs", 0, "dax")
    assert sys_.mounts[b][3] == "trans=virtio,version=9p2000.L,msize=8192"


async def test_overlay_rw(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    lower = env.roots.containers_dir / "layer"
    lower.mkdir(parents=True)
    extra = env.roots.run_dir / "c9" / "extra"
    ov = Storage(
        driver="overlayfs",
        source="overlay",
        fstype="fuse3.nydus-overlayfs",
        options=(f"lowerdir={lower}", "io.katacontainers.fs-opt.overlay-rw"),
        driver_options=(f"io.katacontainers.volume.overlayfs.create_directory={extra}",),
        mount_point=str(env.roots.run_dir / "c9" / "rootfs"),
    )
    [mp] = await sm.add_storages([ov], "c9")
    _, fstype, _, data = sys_.mounts[mp]
    upper = Path(os.path.realpath(env.roots.run_dir)) / "c9" / "upper"  # noqa: ASYNC240
    assert fstype == "overlay"
    assert data == f"lowerdir={lower},upperdir={upper},workdir={upper.parent / 'work'}"
    assert upper.is_dir()
    assert extra.is_dir()
    await sm.release("c9")
    assert not upper.exists()


async def test_local_mode(env: StorageEnv) -> None:
    sm = mgr(env)
    mp = env.roots.containers_dir / "sb" / "rootfs" / "local" / "v"
    await sm.add_storages(
        [Storage(driver="local", mount_point=str(mp), options=("mode=0750",))], "c"
    )
    assert mp.stat().st_mode & 0o7777 == 0o750
    with pytest.raises(InvalidArgument, match="invalid mode"):
        await sm.add_storages(
            [Storage(driver="local", mount_point=str(mp) + "x", options=("mode=9",))], "c"
        )


def _hugepages(env: StorageEnv, nr: int) -> Path:
    f = env.sysfs / "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    f.parent.mkdir(parents=True)
    f.write_text(f"{nr}\n")
    return f


async def test_hugetlbfs_reserves_and_gives_back(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    f = _hugepages(env, 3)
    sm = mgr(env)
    hp = Storage(
        driver="ephemeral",
        source="nodev",
        fstype="hugetlbfs",
        options=("pagesize=2097152,size=8388608",),
        mount_point=str(env.roots.sandbox_dir / "ephemeral" / "hp"),
    )
    [mp] = await sm.add_storages([hp], "c1")
    assert f.read_text() == "7"
    assert sys_.mounts[mp][1:] == ("hugetlbfs", 0, "pagesize=2097152,size=8388608")
    await sm.release("c1")
    assert f.read_text() == "3"


async def test_hugetlbfs_bad_options(env: StorageEnv) -> None:
    _hugepages(env, 0)
    sm = mgr(env)
    base = dict(
        driver="ephemeral", fstype="hugetlbfs", mount_point=str(env.roots.sandbox_dir / "h")
    )
    with pytest.raises(InvalidArgument, match="needs pagesize= and size="):
        await sm.add_storages([Storage(**base, options=("size=4M",))], "c")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not a multiple"):
        await sm.add_storages([Storage(**base, options=("pagesize=2M,size=3M",))], "c")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="not supported"):
        await sm.add_storages([Storage(**base, options=("pagesize=1M,size=3M",))], "c")  # type: ignore[arg-type]


class _StuckPool:
    """nr_hugepages that never grows (the kernel could not allocate)."""


async def test_hugetlbfs_shortfall(
    env: StorageEnv, sys_: RecordingSyscalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = _hugepages(env, 0)
    from agent.storage.drivers import ephemeral

    real = ephemeral._read_int
    calls = {"n": 0}

    def fake_read(p: Path) -> int:
        calls["n"] += 1
        return 1 if calls["n"] == 2 else real(p)  # the write "took" only 1 page

    monkeypatch.setattr(ephemeral, "_read_int", fake_read)
    sm = mgr(env)
    hp = Storage(
        driver="ephemeral",
        fstype="hugetlbfs",
        options=("pagesize=2M", "size=8M"),
        mount_point=str(env.roots.sandbox_dir / "h"),
    )
    with pytest.raises(ResourceExhausted, match="could allocate only 1 of 4 huge pages"):
        await sm.add_storages([hp], "c")
    assert f.read_text() == "0"
    assert sys_.mounts == {}


async def test_update_ephemeral_remounts(env: StorageEnv, sys_: RecordingSyscalls) -> None:
    sm = mgr(env)
    [mp] = await sm.add_storages([shm(env)], None)
    await sm.update_ephemeral_mounts([shm(env, options=("size=1048576", "fsgid=5"))])
    last = sys_.calls[-1]
    assert last.name == "mount"
    assert int(last.args[3]) & c.MS_REMOUNT  # type: ignore[call-overload]
    assert last.args[4] == "size=1048576"
    with pytest.raises(InvalidArgument, match="only ephemeral"):
        await sm.update_ephemeral_mounts([Storage(driver="local", mount_point=mp)])


class NoMkfsExt4Runner(FakeRunner):
    async def __call__(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109
    ) -> _Res:
        self.calls.append(list(argv))
        if argv[0] == "mkfs.ext4":
            from agent.spawn import SpawnError

            raise SpawnError("start mkfs.ext4: executable not found in PATH /bin", errno.ENOENT)
        return _Res()


async def test_create_filesystem_falls_back_to_mke2fs(env: StorageEnv) -> None:
    from agent.storage.drivers.block import make_filesystem

    runner = NoMkfsExt4Runner()
    env2 = StorageEnv(roots=env.roots, sys=env.sys, run=runner, devices=env.devices)
    vol = Storage(driver="blk", source="/dev/vdb", fstype="ext4", mount_point="/x")
    await make_filesystem(env2, vol, Path("/dev/vdb"), what="v")
    assert runner.calls == [
        [
            "mkfs.ext4",
            "-F",
            "-O",
            "^has_journal",
            "-m",
            "0",
            "-i",
            "163840",
            "-I",
            "128",
            "/dev/vdb",
        ],
        ["mke2fs", "-F", "-m", "0", "-i", "163840", "-I", "128", "/dev/vdb"],
    ]
    with pytest.raises(InvalidArgument, match="supports ext4 only"):
        await make_filesystem(
            env2, Storage(driver="blk", fstype="xfs", mount_point="/x"), Path("/dev/vdb"), what="v"
        )
