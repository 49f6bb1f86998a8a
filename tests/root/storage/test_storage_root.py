"""Storages mounted for real: loop devices, tmpfs, overlayfs, local, watchable-bind, refcounts."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import spawn
from agent.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from agent.services.hardware import HardwareService
from agent.storage import mountinfo
from agent.storage.model import FsGroup, FsGroupPolicy, Storage

# ruff: noqa: ASYNC240  (tests inspect the real filesystem between awaits on purpose)


def _mount(path: str | Path) -> mountinfo.MountEntry | None:
    return mountinfo.find(os.path.realpath(path))


async def test_blk_dev_source_create_filesystem(
    hw: HardwareService, run_dir: Path, loopdev: Callable[..., Path]
) -> None:
    dev = loopdev(64)
    vol = Storage(
        driver="blk",
        source=str(dev),
        fstype="ext4",
        options=("nodev",),
        driver_options=("create_filesystem",),
        mount_point=str(run_dir / "sandbox" / "storage" / "vol1"),
    )
    [mp] = await hw.storage.add_storages([vol], "c1")
    entry = _mount(mp)
    assert entry is not None
    assert entry.fstype == "ext4"
    assert entry.source == str(dev)
    (Path(mp) / "hello").write_text("from the container")
    # mkfs options as Kata: no journal, 0 reserved blocks
    dump = (await spawn.run(["dumpe2fs", "-h", str(dev)], timeout=60)).stdout.decode()
    assert "has_journal" not in dump
    assert "Reserved block count:     0" in dump
    stats = await hw.volume_stats(mp)
    assert stats.bytes.total > 50 << 20
    assert stats.inodes.total > 0
    await hw.storage.release("c1")
    assert _mount(mp) is None
    assert not Path(mp).exists()


async def test_blk_fs_group(
    hw: HardwareService, run_dir: Path, loopdev: Callable[..., Path]
) -> None:
    dev = loopdev(32, mkfs=True)
    vol = Storage(
        driver="blk",
        source=str(dev),
        fstype="ext4",
        mount_point=str(run_dir / "sandbox" / "storage" / "fsg"),
        fs_group=FsGroup(4321, FsGroupPolicy.ON_ROOT_MISMATCH),
    )
    [mp] = await hw.storage.add_storages([vol], "c1")
    st = Path(mp).stat()
    assert st.st_gid == 4321
    assert st.st_mode & stat.S_ISGID
    assert (Path(mp) / "lost+found").stat().st_gid == 4321


async def test_fs_group_never_follows_links(
    hw: HardwareService, run_dir: Path, tmp_path: Path
) -> None:
    """fsGroup re-owns the volume entry by entry through fds: a link in the volume is re-owned
    itself, its target outside keeps its group and mode."""
    outside = tmp_path / "outside-file"
    outside.write_text("x")
    outside.chmod(0o600)
    mp = run_dir / "sandbox" / "local-fsgroup"
    (mp / "sub").mkdir(parents=True)
    (mp / "sub" / "f").write_text("in")
    (mp / "link").symlink_to(outside)
    vol = Storage(driver="local", mount_point=str(mp), fs_group=FsGroup(4321, FsGroupPolicy.ALWAYS))
    await hw.storage.add_storages([vol], "c1")
    assert (mp / "sub" / "f").stat().st_gid == 4321
    assert (mp / "link").lstat().st_gid == 4321
    assert outside.stat().st_gid != 4321
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600


async def _grow_loop(dev: Path, img: Path, size_mib: int) -> None:
    """Grow the loop device ``dev``'s backing file ``img``, and the device with it."""
    with img.open("r+b") as f:
        f.truncate(size_mib << 20)
    (await spawn.run(["losetup", "-c", str(dev)], timeout=60)).check("losetup -c")


async def test_resize_volume(
    hw: HardwareService, run_dir: Path, loopdev: Callable[..., Path], tmp_path: Path
) -> None:
    dev = loopdev(32, mkfs=True)
    vol = Storage(
        driver="blk",
        source=str(dev),
        fstype="ext4",
        mount_point=str(run_dir / "sandbox" / "storage" / "grow"),
    )
    [mp] = await hw.storage.add_storages([vol], "c1")
    before = (await hw.volume_stats(mp)).bytes.total
    await _grow_loop(dev, tmp_path / "disk-0.img", 96)
    if not _has_cap(24):  # CAP_SYS_RESOURCE: ext4 online resize needs it
        # this machine's root lacks it: the failure must be reported clearly, naming the volume
        with pytest.raises(Internal, match=r"resize volume .*grow.*: resize2fs exited with 1: "):
            await hw.resize_volume(mp, 0)
        return
    await hw.resize_volume(mp, 0)
    after = (await hw.volume_stats(mp)).bytes.total
    assert after > before + (50 << 20)


async def test_resize_volume_online_xfs(
    hw: HardwareService, run_dir: Path, loopdev: Callable[..., Path], tmp_path: Path
) -> None:
    """Real online growth (xfs_growfs needs only CAP_SYS_ADMIN; ext4's online resize needs
    CAP_SYS_RESOURCE, which this machine's root may lack): the volume, mounted through a blk
    storage, grows with its loop device while mounted; a size past the device is refused."""
    if shutil.which("mkfs.xfs") is None or shutil.which("xfs_growfs") is None:
        pytest.skip("xfsprogs is not installed (.ci/run installs it)")
    dev = loopdev(320)
    (await spawn.run(["mkfs.xfs", "-q", "-f", str(dev)], timeout=120)).check("mkfs.xfs")
    mp = str(run_dir / "sandbox" / "storage" / "xfs-grow")
    vol = Storage(driver="blk", source=str(dev), fstype="xfs", mount_point=mp)
    [mp] = await hw.storage.add_storages([vol], "c1")
    before = (await hw.volume_stats(mp)).bytes.total
    await _grow_loop(dev, tmp_path / "disk-0.img", 640)
    with pytest.raises(InvalidArgument, match=r"size: .* is more than the device"):
        await hw.resize_volume(mp, 1 << 40)
    await hw.resize_volume(mp, 0)
    after = (await hw.volume_stats(mp)).bytes.total
    assert after > before + (250 << 20)
    await hw.storage.release("c1")


def _has_cap(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


async def test_unformatted_device_leaves_nothing(
    hw: HardwareService, run_dir: Path, loopdev: Callable[..., Path]
) -> None:
    dev = loopdev(16)
    shm = Storage(
        driver="ephemeral",
        source="shm",
        fstype="tmpfs",
        mount_point=str(run_dir / "sandbox" / "shm"),
    )
    bad = Storage(
        driver="blk",
        source=str(dev),
        fstype="ext4",
        mount_point=str(run_dir / "sandbox" / "storage" / "raw"),
    )
    with pytest.raises(Internal, match=r"storage blk .* mount .* \(type ext4.*EINVAL"):
        await hw.storage.add_storages([shm, bad], "c1")
    assert mountinfo.mounts_below(run_dir / "sandbox") == []
    assert not (run_dir / "sandbox" / "storage" / "raw").exists()
    assert hw.storage.mount_points("c1") == []


async def test_not_a_block_device(hw: HardwareService, run_dir: Path) -> None:
    f = run_dir / "shared" / "plainfile"
    f.parent.mkdir(parents=True)
    f.write_text("x")
    vol = Storage(
        driver="blk",
        source="/dev/null",
        fstype="ext4",
        mount_point=str(run_dir / "sandbox" / "storage" / "n"),
    )
    with pytest.raises(InvalidArgument, match="'/dev/null' is not a block device"):
        await hw.storage.add_storages([vol], "c1")


async def test_uevent_for_new_loop_device(
    hw: HardwareService, fresh_loop_index: Callable[[], int]
) -> None:
    """A block device that appears after the wait started is found through its real uevent."""
    used = {int(p.name[4:]) for p in Path("/sys/class/block").glob("loop[0-9]*")}
    idx_holder: list[int] = []

    async def plug() -> None:
        await asyncio.sleep(0.2)
        idx_holder.append(fresh_loop_index())

    # we do not know the index before LOOP_CTL_ADD picks it, so wait for "any new loop device"
    from agent.devices.uevent import Match

    plugger = asyncio.create_task(plug())
    ev = await hw.uevents.wait_for(
        Match(
            lambda e: (
                e.subsystem == "block"
                and e.devname.startswith("loop")
                and e.devname[4:].isdigit()
                and int(e.devname[4:]) not in used
            ),
            "a new loop device",
        )
    )
    await plugger
    assert ev.devname == f"loop{idx_holder[0]}"
    # and the by-name lookup now answers from the device map
    assert await hw.lookup.block_by_name(ev.devname) == Path("/dev") / ev.devname


async def test_device_never_appears(hw: HardwareService, run_dir: Path) -> None:
    hw.uevents.hotplug_timeout = 0.5
    vol = Storage(
        driver="mmioblk",
        source="/dev/vdzz",
        fstype="ext4",
        mount_point=str(run_dir / "sandbox" / "storage" / "never"),
    )
    with pytest.raises(
        DeadlineExceeded, match=r"^Timeout after 0\.5 s waiting for uevent block device vdzz"
    ):
        await hw.storage.add_storages([vol], "c1")
    assert not (run_dir / "sandbox" / "storage" / "never").exists()


async def test_unparsable_pci_path(hw: HardwareService, run_dir: Path) -> None:
    vol = Storage(
        driver="blk",
        source="02/zz",
        fstype="ext4",
        mount_point=str(run_dir / "sandbox" / "storage" / "pci"),
    )
    with pytest.raises(InvalidArgument, match=r"invalid PCI path '02/zz': bad slot 'zz'"):
        await hw.storage.add_storages([vol], "c1")


async def test_outside_allowed_dirs(hw: HardwareService, run_dir: Path, tmp_path: Path) -> None:
    for bad in (tmp_path / "elsewhere", run_dir / "sandbox" / ".." / ".." / "x"):
        vol = Storage(driver="ephemeral", fstype="tmpfs", mount_point=str(bad))
        with pytest.raises(PermissionDenied):
            await hw.storage.add_storages([vol], "c1")
    link = run_dir / "sandbox" / "escape"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path)
    vol = Storage(driver="ephemeral", fstype="tmpfs", mount_point=str(link / "vol"))
    with pytest.raises(PermissionDenied, match="outside the allowed directories"):
        await hw.storage.add_storages([vol], "c1")
    assert not (tmp_path / "vol").exists()
    assert mountinfo.mounts_below(tmp_path / "elsewhere") == []


async def test_unknown_driver(hw: HardwareService, run_dir: Path) -> None:
    vol = Storage(driver="floppy", mount_point=str(run_dir / "sandbox" / "f"))
    with pytest.raises(InvalidArgument, match=r"^Failed to find the storage handler floppy$"):
        await hw.storage.add_storages([vol], "c1")


async def test_tmpfs_size_is_honoured(hw: HardwareService, run_dir: Path) -> None:
    shm = Storage(
        driver="ephemeral",
        source="shm",
        fstype="tmpfs",
        options=("noexec", "nosuid", "nodev", "mode=1777", "size=8388608"),
        mount_point=str(run_dir / "sandbox" / "shm"),
    )
    [mp] = await hw.storage.add_storages([shm], None)
    st = os.statvfs(mp)
    assert st.f_blocks * st.f_frsize == 8 << 20
    assert stat.S_IMODE(Path(mp).stat().st_mode) == 0o1777
    # UpdateEphemeralMounts resizes it
    await hw.update_ephemeral_mounts(
        [
            Storage(
                driver="ephemeral",
                source="shm",
                fstype="tmpfs",
                mount_point=shm.mount_point,
                options=("size=16m",),
            )
        ]
    )
    st = os.statvfs(mp)
    assert st.f_blocks * st.f_frsize == 16 << 20


async def test_ephemeral_fsgid(hw: HardwareService, run_dir: Path) -> None:
    vol = Storage(
        driver="ephemeral",
        source="tmpfs",
        fstype="tmpfs",
        options=("fsgid=2000",),
        mount_point=str(run_dir / "sandbox" / "ephemeral" / "v"),
    )
    [mp] = await hw.storage.add_storages([vol], "c1")
    st = Path(mp).stat()
    assert st.st_gid == 2000
    assert st.st_mode & stat.S_ISGID
    assert _mount(mp) is not None
    assert "fsgid" not in _mount(mp).super_options  # type: ignore[union-attr]


def _free_hugepages() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HugePages_Free:"):
            return int(line.split()[1])
    return 0


async def test_hugetlbfs(hw: HardwareService, run_dir: Path) -> None:
    if _free_hugepages() < 2:
        pytest.skip(
            "the kernel has no free 2 MiB huge pages (HugePages_Free < 2); the driver "
            "would have to grow the host's pool, which tests must not do"
        )
    vol = Storage(
        driver="ephemeral",
        source="nodev",
        fstype="hugetlbfs",
        options=("pagesize=2097152,size=4194304",),
        mount_point=str(run_dir / "sandbox" / "ephemeral" / "hp"),
    )
    [mp] = await hw.storage.add_storages([vol], "c1")
    st = os.statvfs(mp)
    assert st.f_blocks * st.f_bsize == 4 << 20
    await hw.storage.release("c1")


async def test_overlay_rw(hw: HardwareService, run_dir: Path) -> None:
    lower = run_dir / "shared" / "containers" / "layer0"
    lower.mkdir(parents=True)
    (lower / "etc").mkdir()
    (lower / "etc" / "os-release").write_text("ID=test\n")
    ov = Storage(
        driver="overlayfs",
        source="overlay",
        fstype="overlay",
        options=(f"lowerdir={lower}", "io.katacontainers.fs-opt.overlay-rw"),
        mount_point=str(run_dir / "c1" / "rootfs"),
    )
    [mp] = await hw.storage.add_storages([ov], "c1")
    root = Path(mp)
    assert (root / "etc" / "os-release").read_text() == "ID=test\n"
    (root / "new").write_text("written in the container")
    assert (run_dir / "c1" / "upper" / "new").read_text() == "written in the container"
    assert not (lower / "new").exists()
    assert _mount(mp).fstype == "overlay"  # type: ignore[union-attr]
    await hw.storage.release("c1")
    assert _mount(mp) is None
    assert not (run_dir / "c1" / "upper").exists()


async def test_overlay_bad_lowerdir_leaves_nothing(hw: HardwareService, run_dir: Path) -> None:
    ov = Storage(
        driver="overlayfs",
        source="overlay",
        fstype="overlay",
        options=(f"lowerdir={run_dir}/missing", "io.katacontainers.fs-opt.overlay-rw"),
        mount_point=str(run_dir / "c2" / "rootfs"),
    )
    with pytest.raises(InvalidArgument, match=r"lowerdir .*missing' does not exist"):
        await hw.storage.add_storages([ov], "c2")
    assert not (run_dir / "c2" / "upper").exists()
    assert mountinfo.mounts_below(run_dir / "c2") == []


@pytest.mark.parametrize("key", ["lowerdir", "upperdir", "workdir", "lowerdir+", "datadir+"])
async def test_overlay_dirs_must_lie_below_run_dir(
    hw: HardwareService, run_dir: Path, tmp_path: Path, key: str
) -> None:
    """Every directory an overlay option names is checked: outside run_dir (directly, or through
    a symlink below it) the storage is refused and nothing is mounted."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (run_dir / "sandbox").mkdir(exist_ok=True)
    (run_dir / "sandbox" / "evil").symlink_to(outside)
    for d in ("lower", "upper", "work"):
        (run_dir / "sandbox" / d).mkdir(exist_ok=True)
    good = {
        "lowerdir": f"{run_dir}/sandbox/lower",
        "upperdir": f"{run_dir}/sandbox/upper",
        "workdir": f"{run_dir}/sandbox/work",
    }
    for bad in (str(outside), f"{run_dir}/sandbox/evil", "/etc"):
        opts = {**good, key: bad}
        ov = Storage(
            driver="overlayfs",
            fstype="overlay",
            options=tuple(f"{k}={v}" for k, v in opts.items()),
            mount_point=str(run_dir / "sandbox" / "ov"),
        )
        with pytest.raises(PermissionDenied):
            await hw.storage.add_storages([ov], "c3")
    assert [e for e in mountinfo.mounts_below(run_dir) if e.mount_point != str(run_dir)] == []
    assert list(outside.iterdir()) == []


async def test_local(hw: HardwareService, run_dir: Path) -> None:
    mp = run_dir / "shared" / "containers" / "sb" / "rootfs" / "local" / "cache"
    vol = Storage(
        driver="local",
        source="local",
        fstype="local",
        options=("mode=0770", "fsgid=3000"),
        mount_point=str(mp),
    )
    await hw.storage.add_storages([vol], "c1")
    st = mp.stat()
    assert stat.S_IMODE(st.st_mode) == 0o2770
    assert st.st_gid == 3000
    assert _mount(mp) is None


async def test_refcount_two_containers(hw: HardwareService, run_dir: Path) -> None:
    vol = Storage(
        driver="ephemeral",
        source="tmpfs",
        fstype="tmpfs",
        mount_point=str(run_dir / "sandbox" / "ephemeral" / "shared-vol"),
    )
    [a] = await hw.storage.add_storages([vol], "c1")
    [b] = await hw.storage.add_storages([vol], "c2")
    assert a == b
    assert len([e for e in mountinfo.read() if e.mount_point == a]) == 1
    (Path(a) / "x").write_text("1")
    await hw.storage.release("c1")
    assert (Path(a) / "x").read_text() == "1"
    await hw.storage.release("c2")
    assert _mount(a) is None


async def test_watchable_mirror_never_follows_links(
    hw: HardwareService, run_dir: Path, tmp_path: Path
) -> None:
    """The host plants a symlink and a FIFO in the source, a container plants a symlink where
    the mirror writes its temporary copy: links are mirrored as links, the FIFO is skipped (not
    opened), and nothing outside is read into the mirror or written."""
    secret = tmp_path / "secret"
    secret.write_text("guest secret")
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    src = run_dir / "shared" / "containers" / "c1-feed-config"
    src.mkdir(parents=True)
    (src / "a.conf").write_text("v1")
    (src / "leak").symlink_to(secret)
    os.mkfifo(src / "pipe")
    dst = run_dir / "shared" / "containers" / "watchable" / "c1-feed-config"
    vol = Storage(driver="watchable-bind", source=str(src), mount_point=str(dst))
    [mp] = await hw.storage.add_storages([vol], "c1")
    assert os.readlink(Path(mp) / "leak") == str(secret)  # a link, not the secret's content
    assert not (Path(mp) / "pipe").exists()
    (Path(mp) / ".a.conf.kata-tmp").symlink_to(victim)  # the container's plant
    (src / "a.conf").write_text("v2-longer")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (Path(mp) / "a.conf").read_text() == "v2-longer":
            break
        await asyncio.sleep(0.2)
    assert (Path(mp) / "a.conf").read_text() == "v2-longer"
    assert victim.read_text() == "untouched"
    await hw.storage.release("c1")


async def test_watchable_single_file_is_bound(hw: HardwareService, run_dir: Path) -> None:
    src = run_dir / "shared" / "containers" / "c1-cafe-token"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("token-1")
    dst = run_dir / "shared" / "containers" / "watchable" / "c1-cafe-token"
    vol = Storage(driver="watchable-bind", source=str(src), mount_point=str(dst))
    [mp] = await hw.storage.add_storages([vol], "c1")
    assert Path(mp).read_text() == "token-1"
    assert _mount(mp) is not None
    await hw.storage.release("c1")
    assert _mount(mp) is None


async def test_watchable_bind_refresh(hw: HardwareService, run_dir: Path) -> None:
    src = run_dir / "shared" / "containers" / "c1-0123456789abcdef-config"
    src.mkdir(parents=True)
    (src / "a.conf").write_text("v1")
    (src / "..data").symlink_to("a.conf")
    dst = run_dir / "shared" / "containers" / "watchable" / "c1-0123456789abcdef-config"
    vol = Storage(driver="watchable-bind", source=str(src), mount_point=str(dst))
    [mp] = await hw.storage.add_storages([vol], "c1")
    assert _mount(mp).fstype == "tmpfs"  # type: ignore[union-attr]
    assert (Path(mp) / "a.conf").read_text() == "v1"
    assert os.readlink(Path(mp) / "..data") == "a.conf"
    (src / "a.conf").write_text("v2-longer")
    (src / "b.conf").write_text("new")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (Path(mp) / "b.conf").exists() and (Path(mp) / "a.conf").read_text() == "v2-longer":
            break
        await asyncio.sleep(0.2)
    assert (Path(mp) / "a.conf").read_text() == "v2-longer"
    assert (Path(mp) / "b.conf").read_text() == "new"
    await hw.storage.release("c1")
    assert _mount(mp) is None


async def test_watchable_bind_large_source_is_bound(hw: HardwareService, run_dir: Path) -> None:
    src = run_dir / "shared" / "containers" / "big"
    src.mkdir(parents=True)
    for i in range(20):
        (src / f"f{i}").write_text(str(i))
    dst = run_dir / "shared" / "containers" / "watchable" / "big"
    vol = Storage(driver="watchable-bind", source=str(src), mount_point=str(dst))
    [mp] = await hw.storage.add_storages([vol], "c1")
    assert _mount(mp).fstype != "tmpfs"  # type: ignore[union-attr]
    (src / "late").write_text("seen at once through the bind")
    assert (Path(mp) / "late").read_text() == "seen at once through the bind"


async def test_watchable_missing_source(hw: HardwareService, run_dir: Path) -> None:
    vol = Storage(
        driver="watchable-bind",
        source=str(run_dir / "shared" / "nope"),
        mount_point=str(run_dir / "shared" / "containers" / "watchable" / "nope"),
    )
    with pytest.raises(NotFound, match="does not exist"):
        await hw.storage.add_storages([vol], "c1")


async def test_volume_stats_missing(hw: HardwareService, run_dir: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a volume mounted through a storage"):
        await hw.volume_stats(str(run_dir / "nope"))


async def test_tmpfs_bad_option_leaves_nothing(hw: HardwareService, run_dir: Path) -> None:
    ok = Storage(
        driver="ephemeral", fstype="tmpfs", mount_point=str(run_dir / "sandbox" / "ephemeral" / "a")
    )
    bad = Storage(
        driver="ephemeral",
        fstype="tmpfs",
        options=("size=lots",),
        mount_point=str(run_dir / "sandbox" / "ephemeral" / "b"),
    )
    with pytest.raises(Internal, match=r"storage ephemeral .*'size=lots'.*EINVAL"):
        await hw.storage.add_storages([ok, bad], "c1")
    assert mountinfo.mounts_below(run_dir / "sandbox") == []
    assert not (run_dir / "sandbox" / "ephemeral" / "a").exists()
    assert not (run_dir / "sandbox" / "ephemeral" / "b").exists()


async def test_coldplugged_device_found_through_sysfs(loopdev: Callable[..., Path]) -> None:
    """A device attached before the listener started produced no uevent it could see."""
    from agent.devices.lookup import DeviceLookup
    from agent.devices.uevent import UeventListener

    dev = loopdev(8)
    ul = UeventListener(hotplug_timeout=0.5)
    await ul.start()
    try:
        assert await DeviceLookup(ul).block_by_name(dev.name) == dev
    finally:
        ul.stop()
