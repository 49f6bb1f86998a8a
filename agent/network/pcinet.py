"""Wait for a hot-plugged NIC given its PCI path (UpdateInterface's `devicePath`).

A PCI path is the chain of slots from the root bus to the device, `"02"` or `"02/00"`: slot 02
on the root bus, then slot 00 on the bus behind that bridge (function 0 each time). It maps to a
sysfs device directory such as `/sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0`; the NIC is
there once some `/sys/class/net/<name>` link resolves below it (a virtio-net device puts its
netdev under `.../virtio<N>/net/<name>`).

This is a small sysfs poll, as Kata does first for cold-plugged NICs. The uevent listener and the
general PCI resolver of `agent/devices` had not landed when this was written; the poll gives the
same answer at a cost of one directory scan per interval. `sysfs_root` is a parameter so tests can
build a fake tree.
"""

from __future__ import annotations

import asyncio
import os
import re

from agent.errors import DeadlineExceeded, InvalidArgument

_SLOT_RE = re.compile(r"^[0-9a-fA-F]{1,2}$")
ROOT_BUS = "pci0000:00"


def parse_pci_path(path: str) -> tuple[int, ...]:
    slots = path.strip().strip("/").split("/")
    if not slots or not all(_SLOT_RE.match(s) for s in slots):
        raise InvalidArgument(f"interface devicePath: invalid PCI path {path!r} (expected 02/00)")
    values = tuple(int(s, 16) for s in slots)
    if any(v > 0x1F for v in values):
        raise InvalidArgument(f"interface devicePath: PCI slot out of range 00-1f in {path!r}")
    return values


def resolve(sysfs_root: str, slots: tuple[int, ...]) -> str | None:
    """The sysfs device directory for `slots`, or None while a bridge on the way is missing."""
    current = os.path.join(sysfs_root, "devices", ROOT_BUS)
    bus = "0000:00"
    for depth, slot in enumerate(slots):
        if depth > 0:
            try:
                buses = sorted(os.listdir(os.path.join(current, "pci_bus")))
            except OSError:
                return None
            if not buses:
                return None
            bus = buses[0]
        current = os.path.join(current, f"{bus}:{slot:02x}.0")
        if not os.path.isdir(current):
            return None
    return current


def netdev_at(sysfs_root: str, device_dir: str) -> str | None:
    """The name of a network interface whose sysfs device lies under `device_dir`."""
    class_net = os.path.join(sysfs_root, "class", "net")
    prefix = os.path.realpath(device_dir) + os.sep
    try:
        names = sorted(os.listdir(class_net))
    except OSError:
        return None
    for name in names:
        target = os.path.realpath(os.path.join(class_net, name))
        if target.startswith(prefix) and f"{os.sep}net{os.sep}" in target[len(prefix) - 1 :]:
            return name
    return None


async def wait_for_netdev(sysfs_root: str, pci_path: str, interval: float = 0.02) -> str:
    """The netdev name at `pci_path`, polling until it appears; the caller bounds the wait with
    `asyncio.timeout` (see `wait_for_netdev_until`)."""
    slots = parse_pci_path(pci_path)
    while True:
        device_dir = resolve(sysfs_root, slots)
        if device_dir is not None:
            name = netdev_at(sysfs_root, device_dir)
            if name is not None:
                return name
        await asyncio.sleep(interval)


async def wait_for_netdev_until(sysfs_root: str, pci_path: str, hotplug_timeout: float) -> str:
    """`wait_for_netdev` bounded by the configured hot-plug timeout (Kata's wording on expiry)."""
    parse_pci_path(pci_path)
    try:
        async with asyncio.timeout(hotplug_timeout):
            return await wait_for_netdev(sysfs_root, pci_path)
    except TimeoutError:
        raise DeadlineExceeded(
            f"Timeout after {hotplug_timeout:g} s waiting for uevent of the network interface "
            f"at PCI path {pci_path}"
        ) from None
