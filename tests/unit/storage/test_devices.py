"""Device handlers: spec rewriting (pure) and the vfio/blk handlers against a fake sysfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.devices import pci
from agent.devices.handlers import DeviceManager
from agent.devices.lookup import DeviceLookup
from agent.devices.model import Device, DevUpdate
from agent.devices.spec_update import rewrite_pci_env, update_devices
from agent.devices.uevent import Uevent, UeventListener
from agent.errors import FailedPrecondition, InvalidArgument, NotFound
from oci.spec import Linux, LinuxDevice, LinuxDeviceCgroup, LinuxResources, Process, Spec


def spec_with(*devices: LinuxDevice, rules: tuple[LinuxDeviceCgroup, ...] = ()) -> Spec:
    return Spec(
        process=Process(args=("sh",), cwd="/", env=("PATH=/bin",)),
        linux=Linux(devices=devices, resources=LinuxResources(devices=rules)),
    )


def test_update_devices_renumbers_and_allows() -> None:
    spec = spec_with(
        LinuxDevice(path="/dev/xvda", type="b", major=202, minor=0),
        LinuxDevice(path="/dev/other", type="c", major=1, minor=9),
        rules=(
            LinuxDeviceCgroup(allow=False, access="rwm"),
            LinuxDeviceCgroup(allow=True, type="b", major=202, minor=0, access="r"),
        ),
    )
    out = update_devices(spec, {"/dev/xvda": DevUpdate("b", 254, 16)})
    assert out.linux is not None
    assert out.linux.devices[0] == LinuxDevice(path="/dev/xvda", type="b", major=254, minor=16)
    assert out.linux.devices[1] == spec.linux.devices[1]  # type: ignore[union-attr]
    rules = out.linux.resources.devices  # type: ignore[union-attr]
    assert rules[0] == LinuxDeviceCgroup(allow=False, access="rwm")
    assert (rules[1].major, rules[1].minor, rules[1].access) == (254, 16, "r")
    assert rules[2] == LinuxDeviceCgroup(allow=True, type="b", major=254, minor=16, access="rwm")


def test_update_devices_new_path_and_missing() -> None:
    spec = spec_with(LinuxDevice(path="/dev/vfio/12", type="c", major=241, minor=0))
    out = update_devices(spec, {"/dev/vfio/12": DevUpdate("c", 240, 1, "/dev/vfio/3")})
    assert out.linux.devices[0].path == "/dev/vfio/3"  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match=r"^Missing devices in OCI spec: /dev/xvdb$"):
        update_devices(spec, {"/dev/xvdb": DevUpdate("b", 1, 2)})


def test_rewrite_pci_env() -> None:
    h1, h2 = pci.parse_address("0000:3b:00.1"), pci.parse_address("0000:3b:00.2")
    g1, g2 = pci.parse_address("0000:01:00.0"), pci.parse_address("0000:02:00.0")
    env = (
        "PATH=/bin",
        "PCIDEVICE_INTEL_COM_SRIOV=0000:3b:00.1,0000:3b:00.2",
        'PCIDEVICE_INTEL_COM_SRIOV_INFO={"0000:3b:00.1":{"generic":{"deviceID":"0000:3b:00.1"}}}',
        "PCIDEVICE_VDPA=/dev/vhost-vdpa-0",
    )
    out = rewrite_pci_env(env, {h1: g1, h2: g2})
    assert out[1] == "PCIDEVICE_INTEL_COM_SRIOV=0000:01:00.0,0000:02:00.0"
    assert "0000:3b" not in out[2]
    assert "0000:01:00.0" in out[2]
    assert out[3] == env[3]
    with pytest.raises(NotFound, match=r"unable to translate host PCI address 0000:3b:00\.2"):
        rewrite_pci_env(env, {h1: g1})


def _pci_dev(sysfs: Path, devpath: str, group: str, driver: str | None) -> Path:
    d = sysfs / devpath.lstrip("/")
    d.mkdir(parents=True)
    (d / "driver_override").write_text("")
    groups = sysfs / "kernel" / "iommu_groups" / group
    groups.mkdir(parents=True, exist_ok=True)
    (d / "iommu_group").symlink_to(groups)
    if driver:
        drv = sysfs / "bus" / "pci" / "drivers" / driver
        drv.mkdir(parents=True, exist_ok=True)
        (drv / "unbind").write_text("")
        (d / "driver").symlink_to(drv)
    (sysfs / "bus" / "pci").mkdir(parents=True, exist_ok=True)
    (sysfs / "bus" / "pci" / "drivers_probe").write_text("")
    return d


async def test_vfio_pci(tmp_path: Path) -> None:
    sysfs = tmp_path
    d = _pci_dev(sysfs, "/devices/pci0000:00/0000:00:05.0", "7", "virtio-pci")
    ul = UeventListener(hotplug_timeout=1, sysfs=sysfs)
    ul.handle(Uevent(action="add", devpath="/devices/virtual/vfio/7", subsystem="vfio"))
    # /dev/vfio/7 does not exist on this machine: point the lookup's /dev at a tree with a char node
    dev = tmp_path / "dev"
    (dev / "vfio").mkdir(parents=True)
    os.symlink("/dev/null", dev / "vfio" / "7")
    mgr = DeviceManager(DeviceLookup(ul, sysfs=sysfs, dev=dev), sysfs=sysfs)
    spec = spec_with(LinuxDevice(path="/dev/vfio/42", type="c", major=245, minor=42))
    spec = Spec(
        process=Process(args=("sh",), cwd="/", env=("PCIDEVICE_X=0000:81:00.0",)),
        linux=spec.linux,
    )
    out = await mgr.apply(
        [
            Device(
                type="vfio-pci",
                id="42",
                container_path="/dev/vfio/42",
                options=("0000:81:00.0=05",),
            )
        ],
        spec,
        "c1",
    )
    assert (d / "driver_override").read_text() == "vfio-pci"
    assert (sysfs / "bus/pci/drivers/virtio-pci/unbind").read_text() == "0000:00:05.0"
    assert (sysfs / "bus/pci/drivers_probe").read_text() == "0000:00:05.0"
    assert out.linux.devices[0].path == "/dev/vfio/7"  # type: ignore[union-attr]
    assert (out.linux.devices[0].major, out.linux.devices[0].minor) == (1, 3)  # type: ignore[union-attr]
    assert out.process.env == ("PCIDEVICE_X=0000:00:05.0",)  # type: ignore[union-attr]
    assert mgr.rewrite_env(["PCIDEVICE_X=0000:81:00.0"], "c1") == ("PCIDEVICE_X=0000:00:05.0",)
    mgr.release("c1")
    with pytest.raises(NotFound):
        mgr.rewrite_env(["PCIDEVICE_X=0000:81:00.0"], "c1")


async def test_vfio_groups_must_match(tmp_path: Path) -> None:
    _pci_dev(tmp_path, "/devices/pci0000:00/0000:00:05.0", "7", None)
    _pci_dev(tmp_path, "/devices/pci0000:00/0000:00:06.0", "8", None)
    mgr = DeviceManager(
        DeviceLookup(UeventListener(hotplug_timeout=1, sysfs=tmp_path), sysfs=tmp_path),
        sysfs=tmp_path,
    )
    dev = Device(
        type="vfio-pci",
        id="1",
        container_path="/dev/vfio/1",
        options=("0000:81:00.0=05", "0000:81:00.1=06"),
    )
    with pytest.raises(FailedPrecondition, match="different IOMMU groups"):
        await mgr.apply([dev], spec_with(), "c1")


async def test_vfio_gk_only_maps(tmp_path: Path) -> None:
    _pci_dev(tmp_path, "/devices/pci0000:00/0000:00:05.0", "7", "nvidia")
    mgr = DeviceManager(
        DeviceLookup(UeventListener(hotplug_timeout=1, sysfs=tmp_path), sysfs=tmp_path),
        sysfs=tmp_path,
    )
    dev = Device(
        type="vfio-pci-gk", id="1", container_path="/dev/vfio/1", options=("0000:81:00.0=05",)
    )
    spec = Spec(process=Process(args=("x",), cwd="/", env=("PCIDEVICE_G=0000:81:00.0",)))
    out = await mgr.apply([dev], spec, "c1")
    assert out.process.env == ("PCIDEVICE_G=0000:00:05.0",)  # type: ignore[union-attr]
    assert (tmp_path / "devices/pci0000:00/0000:00:05.0/driver_override").read_text() == ""


async def test_blk_device_by_pci_path(tmp_path: Path) -> None:
    ul = UeventListener(hotplug_timeout=1, sysfs=tmp_path)
    ul.handle(
        Uevent(
            action="add",
            subsystem="block",
            devname="null",
            devpath="/devices/pci0000:00/0000:00:09.0/virtio5/block/null",
        )
    )
    mgr = DeviceManager(DeviceLookup(ul, sysfs=tmp_path, dev=Path("/dev")), sysfs=tmp_path)
    spec = spec_with(LinuxDevice(path="/dev/xvda", type="b", major=202, minor=0))
    # /dev/null is a char device: the handler reports the real type of the node it found
    out = await mgr.apply([Device(type="blk", id="09", container_path="/dev/xvda")], spec, "c1")
    assert out.linux.resources.devices[-1].type == "c"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("dev", "msg"),
    [
        (Device(type="", id="1", container_path="/dev/x"), "invalid type"),
        (Device(type="blk", container_path="/dev/x"), "invalid ID and VM path"),
        (Device(type="blk", id="02", container_path=""), "invalid container path"),
        (
            Device(type="tape", id="1", container_path="/dev/x"),
            "Failed to find the device handler tape",
        ),
        (Device(type="mmioblk", vm_path="vda", container_path="/dev/x"), "invalid path"),
        (Device(type="vfio-pci", id="1", container_path="/dev/x"), "no '<host BDF>"),
        (
            Device(type="vfio-pci", id="1", container_path="/dev/x", options=("zz=02",)),
            "invalid PCI address",
        ),
    ],
)
async def test_invalid_devices(tmp_path: Path, dev: Device, msg: str) -> None:
    mgr = DeviceManager(
        DeviceLookup(UeventListener(hotplug_timeout=0.01, sysfs=tmp_path), sysfs=tmp_path),
        sysfs=tmp_path,
    )
    with pytest.raises(InvalidArgument, match=msg):
        await mgr.apply([dev], spec_with(), "c1")
