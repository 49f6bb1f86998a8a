"""UpdateInterface: bring one link to the requested state, as a plan of small ops, then apply.

`plan()` is pure: given the kernel's links and addresses and the request, it finds the link
(by MAC, else by name — then its MAC is set — or the netdev at the request's PCI path), validates
the whole request and returns the ordered ops. `apply()` walks them through the netlink adapter;
when one fails, the ops already done are undone in reverse, so a link that was configured stays as
it was. The order is Kata's:

1. bring the link down (if up);
2. set its MAC (only when it was found by name or by PCI path and the MAC differs);
3. add each address with replace semantics (IPv6 skipped when the guest has IPv6 disabled;
   addresses already on the link are kept);
4. if another link holds the requested name, take it down and rename it to a temporary name;
5. name, MTU, ARP flag (IFF_NOARP from `raw_flags`) and up, in one request;
6. give the other link our old name (the swap) and bring it back up if it was up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.errors import AgentError, InvalidArgument, NotFound
from agent.network.model import (
    IFF_NOARP,
    IFF_UP,
    IFNAMSIZ,
    Interface,
    IPAddress,
    Link,
    LinkAddress,
    check_link_name,
)
from agent.network.netlink import Netlink

log = logging.getLogger(__name__)


# ---- ops ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetUp:
    """Bring `link` up or down (the link's name at that point is `name`)."""

    link: Link
    name: str
    up: bool

    def describe(self) -> str:
        return f"set link {self.name} {'up' if self.up else 'down'}"

    async def apply(self, nl: Netlink) -> None:
        await nl.set_link(
            self.link, flags=IFF_UP if self.up else 0, change=IFF_UP, step=self.describe()
        )

    async def undo(self, nl: Netlink) -> None:
        await nl.set_link(
            self.link, flags=0 if self.up else IFF_UP, change=IFF_UP, step=f"undo {self.describe()}"
        )


@dataclass(frozen=True, slots=True)
class SetMac:
    link: Link
    mac: str

    def describe(self) -> str:
        return f"set MAC of {self.link.name} to {self.mac}"

    async def apply(self, nl: Netlink) -> None:
        await nl.set_link(self.link, mac=self.mac, step=self.describe())

    async def undo(self, nl: Netlink) -> None:
        await nl.set_link(self.link, mac=self.link.mac, step=f"undo {self.describe()}")


@dataclass(frozen=True, slots=True)
class AddAddress:
    link: Link
    address: IPAddress
    existed: bool

    def describe(self) -> str:
        return f"add address {self.address} to {self.link.name}"

    async def apply(self, nl: Netlink) -> None:
        await nl.replace_address(self.link, self.address)

    async def undo(self, nl: Netlink) -> None:
        if not self.existed:
            await nl.delete_address(self.link, self.address)


@dataclass(frozen=True, slots=True)
class Rename:
    """Rename a link that is down (from `old` to `new`)."""

    link: Link
    old: str
    new: str

    def describe(self) -> str:
        return f"rename link {self.old} to {self.new}"

    async def apply(self, nl: Netlink) -> None:
        await nl.set_link(self.link, name=self.new, step=self.describe())

    async def undo(self, nl: Netlink) -> None:
        await nl.set_link(self.link, name=self.old, step=f"undo {self.describe()}")


@dataclass(frozen=True, slots=True)
class Configure:
    """Name, MTU, ARP and up in one RTM_NEWLINK, as Kata does; `link` holds the old values."""

    link: Link
    name: str | None
    mtu: int | None
    noarp: bool

    def describe(self) -> str:
        parts = [f"configure link {self.link.name}:"]
        if self.name is not None:
            parts.append(f"name {self.name}")
        if self.mtu is not None:
            parts.append(f"mtu {self.mtu}")
        parts.append(f"arp {'off' if self.noarp else 'on'} up")
        return " ".join(parts)

    async def apply(self, nl: Netlink) -> None:
        await nl.set_link(
            self.link,
            name=self.name,
            mtu=self.mtu,
            flags=IFF_UP | (IFF_NOARP if self.noarp else 0),
            change=IFF_UP | IFF_NOARP,
            step=self.describe(),
        )

    async def undo(self, nl: Netlink) -> None:
        step = f"undo {self.describe()}"
        await nl.set_link(self.link, flags=0, change=IFF_UP, step=step)
        await nl.set_link(
            self.link,
            name=self.link.name if self.name is not None else None,
            mtu=self.link.mtu if self.mtu is not None else None,
            flags=self.link.flags & IFF_NOARP,
            change=IFF_NOARP,
            step=step,
        )


Op = SetUp | SetMac | AddAddress | Rename | Configure


@dataclass(frozen=True, slots=True)
class InterfacePlan:
    link: Link
    ops: tuple[Op, ...]
    skipped: tuple[IPAddress, ...] = ()

    def describe(self) -> list[str]:
        return [op.describe() for op in self.ops]


# ---- planning (pure) ---------------------------------------------------------------------------


def find_link(
    links: Sequence[Link], wanted: Interface, pci_netdev: str | None = None
) -> tuple[Link, str | None]:
    """The link to configure and the MAC to set on it (None: keep its MAC)."""
    if pci_netdev is not None:
        for link in links:
            if link.name == pci_netdev:
                mac = wanted.hw_addr if wanted.hw_addr and wanted.hw_addr != link.mac else None
                return link, mac
        raise NotFound(
            f"Link not found (PCI path {wanted.device_path}: netdev {pci_netdev} is not in "
            "this network namespace)"
        )
    if wanted.hw_addr:
        for link in links:
            if link.mac == wanted.hw_addr:
                return link, None
    if wanted.name:
        for link in links:
            if link.name == wanted.name:
                mac = wanted.hw_addr if wanted.hw_addr and wanted.hw_addr != link.mac else None
                return link, mac
    if not wanted.hw_addr and not wanted.name:
        raise InvalidArgument("interface: neither hwAddr nor name given, cannot find the link")
    what = f"Address: {wanted.hw_addr}" if wanted.hw_addr else f"Name: {wanted.name}"
    if wanted.hw_addr and wanted.name:
        what += f", Name: {wanted.name}"
    raise NotFound(f"Link not found ({what})")


def _temp_name(name: str, taken: set[str], index: int) -> str:
    for candidate in (f"{name}_temp", f"kt{index}_temp", f"kt{index}"):
        if len(candidate.encode()) < IFNAMSIZ and candidate not in taken:
            return candidate
    raise InvalidArgument(f"no free temporary name to move link {name} aside")


def plan(
    links: Sequence[Link],
    addresses: Sequence[LinkAddress],
    wanted: Interface,
    *,
    ipv6_enabled: Callable[[str], bool],
    pci_netdev: str | None = None,
) -> InterfacePlan:
    """Validate `wanted` against the kernel state and return the ops (no effect)."""
    link, new_mac = find_link(links, wanted, pci_netdev)
    ops: list[Op] = []

    name = wanted.name if wanted.name and wanted.name != link.name else None
    if name is not None:
        check_link_name(name, "interface name")
    mtu = wanted.mtu if wanted.mtu and wanted.mtu != link.mtu else None
    if mtu is not None and (
        (link.max_mtu and mtu > link.max_mtu) or (link.min_mtu and mtu < link.min_mtu)
    ):
        raise InvalidArgument(
            f"interface {link.name}: MTU {mtu} out of range {link.min_mtu}-{link.max_mtu}"
        )

    if link.up:
        ops.append(SetUp(link, link.name, up=False))
    if new_mac is not None:
        ops.append(SetMac(link, new_mac))

    present = {a.address for a in addresses if a.index == link.index}
    skipped: list[IPAddress] = []
    seen: set[IPAddress] = set()
    for address in wanted.addresses:
        if address.family == 6 and not ipv6_enabled(link.name):
            skipped.append(address)
            continue
        if address in seen:
            continue
        seen.add(address)
        ops.append(AddAddress(link, address, existed=address in present))

    other: Link | None = None
    if name is not None:
        other = next((x for x in links if x.name == name and x.index != link.index), None)
    if other is not None:
        temp = _temp_name(name or "", {x.name for x in links}, other.index)
        if other.up:
            ops.append(SetUp(other, other.name, up=False))
        ops.append(Rename(other, other.name, temp))
        ops.append(Configure(link, name, mtu, bool(wanted.raw_flags & IFF_NOARP)))
        ops.append(Rename(other, temp, link.name))
        if other.up:
            ops.append(SetUp(other, link.name, up=True))
    else:
        ops.append(Configure(link, name, mtu, bool(wanted.raw_flags & IFF_NOARP)))
    return InterfacePlan(link, tuple(ops), tuple(skipped))


# ---- applying ----------------------------------------------------------------------------------


async def apply(nl: Netlink, the_plan: InterfacePlan) -> None:
    """Run the ops in order; on failure undo the completed ones in reverse and re-raise."""
    done: list[Op] = []
    try:
        for op in the_plan.ops:
            log.debug("%s", op.describe())
            await op.apply(nl)
            done.append(op)
    except AgentError as err:
        log.warning("update interface %s failed: %s; rolling back", the_plan.link.name, err)
        for op in reversed(done):
            try:
                await op.undo(nl)
            except AgentError as undo_err:
                log.error("rollback of %r failed: %s", op.describe(), undo_err)
        raise


def to_interface(link: Link, addresses: Sequence[LinkAddress], echo: Interface) -> Interface:
    """The kernel's view of `link`, with the shim's own bookkeeping fields echoed from `echo`."""
    return Interface(
        name=link.name,
        hw_addr=link.mac,
        addresses=tuple(a.address for a in addresses if a.index == link.index),
        mtu=link.mtu,
        raw_flags=link.flags,
        device=echo.device,
        device_path=echo.device_path,
        type=echo.type,
    )


async def loopback_up(nl: Netlink) -> Link:
    """Bring `lo` up (the agent does this at start when it is PID 1)."""
    for link in await nl.links():
        if link.name == "lo":
            if not link.up:
                await nl.set_link(link, flags=IFF_UP, change=IFF_UP, step="set link lo up")
            return link
    raise NotFound("Link not found (Name: lo)")
