"""CreateContainer devices: find each one in the guest, then rewrite the container's spec.

One handler per `Device.type` (Kata's `DEVICE_HANDLERS`): `blk`, `mmioblk`, `scsi`, `nvdimm`,
`vfio-pci` (rebound to vfio-pci through `driver_override`, one IOMMU group, `/dev/vfio/<group>`),
`vfio-pci-gk` (stays on its guest driver; only the host → guest PCI address map).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from agent.devices import pci
from agent.devices.lookup import DeviceLookup
from agent.devices.model import Device, DevUpdate, SpecUpdate
from agent.devices.pci import PciAddress
from agent.devices.spec_update import rewrite_pci_env, rewrite_spec_env, update_devices
from agent.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from oci.spec import Spec

Handler = Callable[[Device], Awaitable[SpecUpdate]]


def device_info(path: Path, *, what: str, final_path: str | None = None) -> DevUpdate:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFound(f"{what}: VM device path {str(path)!r} doesn't exist") from None
    except OSError as err:
        raise Internal(f"{what}: stat {str(path)!r}: {err.strerror}") from err
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    else:
        raise InvalidArgument(f"{what}: {str(path)!r} is not a device node")
    return DevUpdate(kind, os.major(st.st_rdev), os.minor(st.st_rdev), final_path)


class DeviceManager:
    def __init__(self, lookup: DeviceLookup, *, sysfs: Path = Path("/sys")) -> None:
        self._lookup = lookup
        self._sysfs = sysfs
        self._pcimap: dict[str, dict[PciAddress, PciAddress]] = {}
        self._handlers: dict[str, Handler] = {
            "blk": self._blk,
            "mmioblk": self._mmioblk,
            "scsi": self._scsi,
            "nvdimm": self._nvdimm,
            "vfio-pci": self._vfio,
            "vfio-pci-gk": self._vfio_gk,
        }

    def types(self) -> list[str]:
        return sorted(self._handlers)

    async def apply(self, devices: Sequence[Device], spec: Spec, container_id: str) -> Spec:
        """The spec with guest device numbers, cgroup rules and PCI env rewritten."""
        updates: dict[str, DevUpdate] = {}
        mapping: dict[PciAddress, PciAddress] = {}
        for dev in devices:
            validate(dev)
            handler = self._handlers.get(dev.type)
            if handler is None:
                raise InvalidArgument(f"Failed to find the device handler {dev.type}")
            upd = await handler(dev)
            if upd.dev is not None:
                if dev.container_path in updates:
                    raise InvalidArgument(f"Conflicting device updates for {dev.container_path}")
                updates[dev.container_path] = upd.dev
            for host, guest in upd.pci:
                other = mapping.setdefault(host, guest)
                if other != guest:
                    raise InvalidArgument(
                        f"Conflicting guest address for host device {host} ({guest} versus {other})"
                    )
        if mapping:
            self._pcimap[container_id] = mapping
        spec = rewrite_spec_env(spec, mapping)
        return update_devices(spec, updates)

    def rewrite_env(self, env: Sequence[str], container_id: str) -> tuple[str, ...]:
        """ExecProcess: the same `PCIDEVICE_*` rewriting as at create time."""
        return rewrite_pci_env(env, self._pcimap.get(container_id, {}))

    def release(self, container_id: str) -> None:
        self._pcimap.pop(container_id, None)

    async def _blk(self, dev: Device) -> SpecUpdate:
        path = await self._lookup.block_by_pci_path(dev.id)
        return SpecUpdate(device_info(path, what=dev.describe()))

    async def _mmioblk(self, dev: Device) -> SpecUpdate:
        if not dev.vm_path.startswith("/dev/"):
            raise InvalidArgument(f"{dev.describe()}: invalid path for virtio mmio blk device")
        path = Path(dev.vm_path)
        if not await asyncio.to_thread(path.exists):
            path = await self._lookup.block_by_name(path.name)
        return SpecUpdate(device_info(path, what=dev.describe()))

    async def _scsi(self, dev: Device) -> SpecUpdate:
        path = await self._lookup.scsi_block(dev.id)
        return SpecUpdate(device_info(path, what=dev.describe()))

    async def _nvdimm(self, dev: Device) -> SpecUpdate:
        if not dev.vm_path.startswith("/dev/pmem"):
            raise InvalidArgument(f"{dev.describe()}: nvdimm vm_path must be /dev/pmemN")
        path = Path(dev.vm_path)
        if not await asyncio.to_thread(path.exists):
            path = await self._lookup.pmem(path.name)
        return SpecUpdate(device_info(path, what=dev.describe()))

    async def _pci_pairs(self, dev: Device) -> list[tuple[PciAddress, PciAddress, str]]:
        if not dev.options:
            raise InvalidArgument(f"{dev.describe()}: no '<host BDF>=<guest PCI path>' options")
        out = []
        for opt in dev.options:
            host_text, sep, guest_path = opt.partition("=")
            if not sep:
                raise InvalidArgument(
                    f"{dev.describe()}: option {opt!r} is not '<host BDF>=<guest PCI path>'"
                )
            host = pci.parse_address(host_text)
            devpath = await self._lookup.pci_device(guest_path)
            out.append((host, pci.address_of(devpath), devpath))
        return out

    async def _vfio_gk(self, dev: Device) -> SpecUpdate:
        pairs = await self._pci_pairs(dev)
        return SpecUpdate(None, tuple((h, g) for h, g, _ in pairs))

    async def _vfio(self, dev: Device) -> SpecUpdate:
        pairs = await self._pci_pairs(dev)
        groups = set()
        for _, guest, devpath in pairs:
            await asyncio.to_thread(self._bind_vfio, devpath, guest, dev.describe())
            groups.add(self._iommu_group(devpath, dev.describe()))
        if len(groups) != 1:
            raise FailedPrecondition(
                f"{dev.describe()}: devices are in different IOMMU groups {sorted(groups)}"
            )
        group = groups.pop()
        node = await self._lookup.vfio_group(group)
        info = device_info(node, what=dev.describe(), final_path=f"/dev/vfio/{group}")
        return SpecUpdate(info, tuple((h, g) for h, g, _ in pairs))

    def _bind_vfio(self, devpath: str, addr: PciAddress, what: str) -> None:
        d = self._sysfs / devpath.lstrip("/")
        try:
            current = Path(os.readlink(d / "driver")).name if (d / "driver").exists() else None
            if current == "vfio-pci":
                return
            (d / "driver_override").write_text("vfio-pci")
            if current is not None:
                (d / "driver" / "unbind").write_text(str(addr))
            (self._sysfs / "bus" / "pci" / "drivers_probe").write_text(str(addr))
        except OSError as err:
            raise Internal(f"{what}: bind {addr} to vfio-pci: {err.strerror}") from err

    def _iommu_group(self, devpath: str, what: str) -> str:
        link = self._sysfs / devpath.lstrip("/") / "iommu_group"
        try:
            return Path(os.readlink(link)).name
        except OSError as err:
            raise FailedPrecondition(f"{what}: no IOMMU group ({link}: {err.strerror})") from err


def validate(dev: Device) -> None:
    if not dev.type:
        raise InvalidArgument(f"invalid type for device {dev.describe()}")
    if not dev.id and not dev.vm_path:
        raise InvalidArgument(f"invalid ID and VM path for device {dev.describe()}")
    if not dev.container_path:
        raise InvalidArgument(f"invalid container path for device {dev.describe()}")
