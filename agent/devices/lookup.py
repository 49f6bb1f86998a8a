"""Kata device references → guest device nodes, waiting for the uevent when needed.

Implements the storage layer's `BlockDevices` seam, plus the lookups of NICs, PCI devices and
VFIO groups used by the device handlers and the network code.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from agent.devices import pci
from agent.devices.uevent import Match, Uevent, UeventListener
from agent.errors import InvalidArgument


class DeviceLookup:
    def __init__(
        self, uevents: UeventListener, *, sysfs: Path = Path("/sys"), dev: Path = Path("/dev")
    ) -> None:
        self.uevents = uevents
        self.sysfs = sysfs
        self.dev = dev

    def _node(self, ev: Uevent) -> Path:
        return self.dev / ev.devname

    async def _pci_devpath(self, text: str) -> str:
        path = pci.parse_path(text)
        return await asyncio.to_thread(pci.devpath, path, self.sysfs)

    async def block_by_pci_path(self, pci_path: str) -> Path:
        devpath = await self._pci_devpath(pci_path)
        rx = re.compile(re.escape(devpath) + r"/virtio[0-9]+/block/[^/]+$")
        ev = await self.uevents.wait_for(
            Match(
                lambda e: e.subsystem == "block" and bool(e.devname) and bool(rx.match(e.devpath)),
                f"block device at PCI path {pci_path} ({devpath}/virtio*/block/*)",
            )
        )
        return self._node(ev)

    async def block_by_name(self, devname: str) -> Path:
        if not devname or "/" in devname:
            raise InvalidArgument(f"invalid block device name {devname!r}")
        suffix = f"/block/{devname}"
        ev = await self.uevents.wait_for(
            Match(
                lambda e: e.subsystem == "block" and e.devpath.endswith(suffix),
                f"block device {devname} (*{suffix})",
            )
        )
        return self.dev / (ev.devname or devname)

    async def scsi_block(self, scsi_addr: str) -> Path:
        target, sep, lun = scsi_addr.partition(":")
        if not sep or not target.isdigit() or not lun.isdigit():
            raise InvalidArgument(f"invalid SCSI address {scsi_addr!r} (expected <id>:<lun>)")
        await asyncio.to_thread(self._scsi_rescan, target, lun)
        marker = f"/0:0:{target}:{lun}/block/"
        ev = await self.uevents.wait_for(
            Match(
                lambda e: e.subsystem == "block" and marker in e.devpath and bool(e.devname),
                f"SCSI disk {scsi_addr} (*{marker}*)",
            )
        )
        return self._node(ev)

    def _scsi_rescan(self, target: str, lun: str) -> None:
        hosts = self.sysfs / "class" / "scsi_host"
        try:
            scans = [h / "scan" for h in hosts.iterdir()]
        except FileNotFoundError:
            return
        for scan in scans:
            scan.write_text(f"0 {target} {lun}")

    async def pmem(self, devname: str) -> Path:
        if not re.fullmatch(r"pmem[0-9]+", devname):
            raise InvalidArgument(f"invalid nvdimm device name {devname!r} (expected pmemN)")
        suffix = f"/block/{devname}"
        ev = await self.uevents.wait_for(
            Match(
                lambda e: e.subsystem == "block" and e.devpath.endswith(suffix),
                f"nvdimm device {devname} (*{suffix})",
            )
        )
        return self.dev / (ev.devname or devname)

    async def pci_device(self, pci_path: str) -> str:
        """The devpath of the PCI device at `pci_path` (sysfs first, then its uevent)."""
        devpath = await self._pci_devpath(pci_path)
        if (self.sysfs / devpath.lstrip("/")).is_dir():
            return devpath
        ev = await self.uevents.wait_for(
            Match(lambda e: e.devpath == devpath, f"PCI device {pci_path} ({devpath})")
        )
        return ev.devpath

    async def net_by_pci_path(self, pci_path: str) -> str:
        """The interface name of the NIC at `pci_path` (sysfs first, then its uevent)."""
        devpath = await self._pci_devpath(pci_path)
        base = self.sysfs / devpath.lstrip("/")
        for pattern in ("net/*", "virtio*/net/*"):
            found = sorted(base.glob(pattern))
            if found:
                return found[0].name
        rx = re.compile(re.escape(devpath) + r"(/virtio[0-9]+)?/net/[^/]+$")
        ev = await self.uevents.wait_for(
            Match(
                lambda e: e.subsystem == "net" and bool(rx.match(e.devpath)),
                f"network interface at PCI path {pci_path} ({devpath}/*/net/*)",
            )
        )
        return ev.interface or ev.devpath.rsplit("/", 1)[-1]

    async def vfio_group(self, group: str) -> Path:
        devpath = f"/devices/virtual/vfio/{group}"
        await self.uevents.wait_for(
            Match(lambda e: e.devpath == devpath, f"VFIO group {group} ({devpath})")
        )
        return self.dev / "vfio" / group
