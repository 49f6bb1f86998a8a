from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.devices.lookup import DeviceLookup
from agent.devices.uevent import Match, Uevent, UeventListener, from_sysfs, parse
from agent.errors import DeadlineExceeded, InvalidArgument


def msg(action: str, devpath: str, **env: str) -> bytes:
    fields = {"ACTION": action, "DEVPATH": devpath, "SEQNUM": "42", **env}
    return f"{action}@{devpath}\0".encode() + b"".join(
        f"{k}={v}\0".encode() for k, v in fields.items()
    )


def test_parse_kernel_message() -> None:
    ev = parse(msg("add", "/devices/virtual/block/loop3", SUBSYSTEM="block", DEVNAME="loop3"))
    assert ev is not None
    assert (ev.action, ev.devpath, ev.subsystem, ev.devname, ev.seqnum) == (
        "add",
        "/devices/virtual/block/loop3",
        "block",
        "loop3",
        42,
    )


def test_parse_ignores_udev_and_garbage() -> None:
    assert parse(b"libudev\0\xfe\xed") is None
    assert parse(b"no at sign\0A=b\0") is None


def test_parse_header_only() -> None:
    ev = parse(b"remove@/devices/x\0")
    assert ev is not None
    assert ev.action == "remove"
    assert ev.devpath == "/devices/x"


def ev(action: str, devpath: str, subsystem: str = "block", devname: str = "") -> Uevent:
    return Uevent(action=action, devpath=devpath, subsystem=subsystem, devname=devname)


async def test_waiter_woken_by_later_event() -> None:
    ul = UeventListener(hotplug_timeout=5, sysfs=Path("/nonexistent"))
    m = Match(lambda e: e.devname == "vdb", "vdb")
    task = asyncio.create_task(ul.wait_for(m))
    await asyncio.sleep(0)
    ul.handle(ev("add", "/devices/pci0000:00/0000:00:05.0/virtio3/block/vdb", devname="vdb"))
    got = await task
    assert got.devname == "vdb"


async def test_event_seen_before_waiting_is_remembered_until_removed() -> None:
    ul = UeventListener(hotplug_timeout=0.05, sysfs=Path("/nonexistent"))
    ul.handle(ev("add", "/devices/virtual/block/loop9", devname="loop9"))
    m = Match(lambda e: e.devname == "loop9", "loop9")
    assert (await ul.wait_for(m)).devname == "loop9"
    ul.handle(ev("remove", "/devices/virtual/block/loop9", devname="loop9"))
    with pytest.raises(DeadlineExceeded, match=r"^Timeout after 0.05 s waiting for uevent loop9$"):
        await ul.wait_for(m)


async def test_memory_block_is_onlined(tmp_path: Path) -> None:
    online = tmp_path / "devices/system/memory/memory40/online"
    online.parent.mkdir(parents=True)
    online.write_text("0\n")
    ul = UeventListener(hotplug_timeout=1, sysfs=tmp_path)
    ul.handle(ev("add", "/devices/system/memory/memory40", subsystem="memory"))
    assert online.read_text() == "1"
    assert ul.seen() == []


async def test_block_by_pci_path_matches_whole_disk_only(tmp_path: Path) -> None:
    ul = UeventListener(hotplug_timeout=5, sysfs=tmp_path)
    look = DeviceLookup(ul, sysfs=tmp_path, dev=Path("/dev"))
    task = asyncio.create_task(look.block_by_pci_path("05"))
    await asyncio.sleep(0)
    base = "/devices/pci0000:00/0000:00:05.0/virtio2/block/vdc"
    ul.handle(ev("add", "/devices/pci0000:00/0000:00:06.0/virtio3/block/vdd", devname="vdd"))
    ul.handle(ev("add", base + "/vdc1", devname="vdc1"))
    await asyncio.sleep(0)
    assert not task.done()
    ul.handle(ev("add", base, devname="vdc"))
    assert await task == Path("/dev/vdc")


async def test_block_by_pci_path_timeout_text(tmp_path: Path) -> None:
    ul = UeventListener(hotplug_timeout=0.01, sysfs=tmp_path)
    look = DeviceLookup(ul, sysfs=tmp_path)
    with pytest.raises(DeadlineExceeded, match=r"Timeout after 0\.01 s waiting for uevent block "):
        await look.block_by_pci_path("07")


async def test_bad_references(tmp_path: Path) -> None:
    look = DeviceLookup(UeventListener(hotplug_timeout=1, sysfs=tmp_path), sysfs=tmp_path)
    with pytest.raises(InvalidArgument, match="invalid PCI path"):
        await look.block_by_pci_path("xyz")
    with pytest.raises(InvalidArgument, match="invalid SCSI address"):
        await look.scsi_block("1")
    with pytest.raises(InvalidArgument, match="nvdimm"):
        await look.pmem("vda")


async def test_net_by_pci_path_from_sysfs(tmp_path: Path) -> None:
    (tmp_path / "devices/pci0000:00/0000:00:03.0/virtio1/net/eth7").mkdir(parents=True)
    look = DeviceLookup(UeventListener(hotplug_timeout=0.01, sysfs=tmp_path), sysfs=tmp_path)
    assert await look.net_by_pci_path("03") == "eth7"


def test_from_sysfs(tmp_path: Path) -> None:
    d = tmp_path / "devices/virtual/block/loop1"
    d.mkdir(parents=True)
    (d / "uevent").write_text("MAJOR=7\nMINOR=1\nDEVNAME=loop1\nDEVTYPE=disk\n")
    (tmp_path / "class/block").mkdir(parents=True)
    (tmp_path / "class/block/loop1").symlink_to(d)
    (d / "subsystem").symlink_to(tmp_path / "class/block")
    e = from_sysfs(tmp_path, tmp_path / "class/block/loop1")
    assert e is not None
    assert (e.devpath, e.devname, e.subsystem) == ("/devices/virtual/block/loop1", "loop1", "block")


async def test_scsi_rescan_and_wait(tmp_path: Path) -> None:
    for host in ("host0", "host1"):
        d = tmp_path / "class/scsi_host" / host
        d.mkdir(parents=True)
        (d / "scan").write_text("")
    ul = UeventListener(hotplug_timeout=5, sysfs=tmp_path)
    look = DeviceLookup(ul, sysfs=tmp_path, dev=Path("/dev"))
    task = asyncio.create_task(look.scsi_block("1:2"))
    for _ in range(100):
        if (tmp_path / "class/scsi_host/host1/scan").read_text():
            break
        await asyncio.sleep(0.01)
    assert (tmp_path / "class/scsi_host/host0/scan").read_text() == "0 1 2"
    assert (tmp_path / "class/scsi_host/host1/scan").read_text() == "0 1 2"
    base = "/devices/pci0000:00/0000:00:04.0/virtio1/host0/target0:0:1/0:0:1:2/block/sdb"
    ul.handle(ev("add", base.replace("0:0:1:2", "0:0:1:3").replace("sdb", "sdc"), devname="sdc"))
    ul.handle(ev("add", base, devname="sdb"))
    assert await task == Path("/dev/sdb")


async def test_pmem_and_mmio_by_name(tmp_path: Path) -> None:
    ul = UeventListener(hotplug_timeout=5, sysfs=tmp_path)
    look = DeviceLookup(ul, sysfs=tmp_path, dev=Path("/dev"))
    ul.handle(
        ev("add", "/devices/LNXSYSTM:00/ndbus0/region0/namespace0.0/block/pmem0", devname="pmem0")
    )
    ul.handle(ev("add", "/devices/platform/virtio-mmio.0/virtio0/block/vdb", devname="vdb"))
    assert await look.pmem("pmem0") == Path("/dev/pmem0")
    assert await look.block_by_name("vdb") == Path("/dev/vdb")


async def test_resync_offers_devices_whose_uevent_was_lost(tmp_path: Path) -> None:
    ul = UeventListener(hotplug_timeout=5, sysfs=tmp_path)
    look = DeviceLookup(ul, sysfs=tmp_path, dev=Path("/dev"))
    task = asyncio.create_task(look.block_by_name("vdq"))
    await asyncio.sleep(0)
    d = tmp_path / "devices/pci0000:00/0000:00:07.0/virtio4/block/vdq"
    d.mkdir(parents=True)
    (d / "uevent").write_text("MAJOR=254\nMINOR=16\nDEVNAME=vdq\nDEVTYPE=disk\n")
    (tmp_path / "class/block").mkdir(parents=True)
    (tmp_path / "class/block/vdq").symlink_to(d)
    (d / "subsystem").symlink_to(tmp_path / "class/block")
    await ul.resync()
    assert await task == Path("/dev/vdq")
