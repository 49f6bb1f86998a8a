"""PCI paths (`02/00`, `20/00/02`) and addresses (`0000:00:02.0`), resolved against sysfs.

A PCI path lists the slot (and optional function) of each hop from a root bus: `02/00` is the
device in slot 0 behind the bridge in slot 2 of root bus 00. A first segment >= 0x20 in a path of
three or more segments names a pxb-pcie root bus (reference doc §3.2). Parsing is pure; resolution
reads sysfs under a root given as a parameter, so unit tests use a fake tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InvalidArgument, NotFound

PXB_ROOT_BUS_MIN = 0x20
_SLOT_RE = re.compile(r"^([0-9a-fA-F]{1,2})(?:\.([0-7]))?$")
_ADDR_RE = re.compile(r"^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")


@dataclass(frozen=True, slots=True)
class SlotFn:
    slot: int
    function: int = 0

    def __str__(self) -> str:
        return f"{self.slot:02x}.{self.function}"


@dataclass(frozen=True, slots=True)
class PciPath:
    root_bus: int
    hops: tuple[SlotFn, ...]

    def __str__(self) -> str:
        hops = "/".join(f"{h.slot:02x}" if h.function == 0 else str(h) for h in self.hops)
        return hops if self.root_bus == 0 else f"{self.root_bus:02x}/{hops}"

    @property
    def root_devpath(self) -> str:
        """sysfs devpath of the root bus (`/devices/pci0000:00`)."""
        return f"/devices/pci0000:{self.root_bus:02x}"


@dataclass(frozen=True, slots=True, order=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"


def _slot(text: str, whole: str) -> SlotFn:
    m = _SLOT_RE.match(text)
    if not m:
        raise InvalidArgument(f"invalid PCI path {whole!r}: bad slot {text!r}")
    slot = int(m.group(1), 16)
    if slot > 0x1F:
        raise InvalidArgument(f"invalid PCI path {whole!r}: slot {text!r} is above 1f")
    return SlotFn(slot, int(m.group(2) or 0))


def parse_path(text: str) -> PciPath:
    if not text or text.strip() != text:
        raise InvalidArgument(f"invalid PCI path {text!r}: empty or padded")
    parts = text.split("/")
    root = 0
    if len(parts) >= 3:
        try:
            first = int(parts[0], 16)
        except ValueError:
            first = -1
        if first >= PXB_ROOT_BUS_MIN and re.fullmatch(r"[0-9a-fA-F]{2}", parts[0]):
            root = first
            parts = parts[1:]
    return PciPath(root, tuple(_slot(p, text) for p in parts))


def path_from_slots(slots: list[int]) -> PciPath:
    """AddSwap's `PCIPath` (a list of slot numbers from root bus 00)."""
    if not slots:
        raise InvalidArgument("invalid PCI path []: no slots")
    for s in slots:
        if s > 0x1F:
            raise InvalidArgument(f"invalid PCI path {slots}: slot {s:#x} is above 1f")
    return PciPath(0, tuple(SlotFn(s) for s in slots))


def parse_address(text: str) -> PciAddress:
    m = _ADDR_RE.match(text.strip())
    if not m:
        raise InvalidArgument(f"invalid PCI address {text!r} (expected DDDD:BB:SS.F)")
    return PciAddress(
        int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16), int(m.group(4))
    )


def relpath(path: PciPath, sysfs: Path = Path("/sys")) -> str:
    """The device's devpath below the root bus: `/0000:00:02.0/0000:01:00.0`.

    Every hop but the last must be a bridge with exactly one child bus (`<dev>/pci_bus/DDDD:BB`).
    """
    root = sysfs / path.root_devpath.lstrip("/")
    bus = f"0000:{path.root_bus:02x}"
    rel = ""
    for i, hop in enumerate(path.hops):
        rel += f"/{bus}:{hop}"
        if i == len(path.hops) - 1:
            break
        buses_dir = root / rel.lstrip("/") / "pci_bus"
        try:
            children = sorted(p.name for p in buses_dir.iterdir())
        except FileNotFoundError:
            raise NotFound(
                f"PCI path {path}: {bus}:{hop} is not a bridge (no {buses_dir})"
            ) from None
        if len(children) != 1:
            raise NotFound(
                f"PCI path {path}: bridge {bus}:{hop} has {len(children)} child buses, expected 1"
            )
        bus = children[0]
    return rel


def devpath(path: PciPath, sysfs: Path = Path("/sys")) -> str:
    """Full devpath of the device (`/devices/pci0000:00/0000:00:02.0/0000:01:00.0`)."""
    return path.root_devpath + relpath(path, sysfs)


def address_of(devpath_: str) -> PciAddress:
    return parse_address(devpath_.rstrip("/").rsplit("/", 1)[-1])
