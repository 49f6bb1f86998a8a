"""interfaces.plan(): which link, which ops, in which order; validation before any change."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.errors import InvalidArgument, NotFound
from agent.network import interfaces
from agent.network.interfaces import AddAddress, Configure, Rename, SetMac, SetUp
from agent.network.model import IFF_NOARP, IFF_UP, Interface, IPAddress, Link, LinkAddress

LO = Link(1, "lo", "00:00:00:00:00:00", 65536, 0x8)
ETH = Link(2, "veth9", "02:00:00:00:00:01", 1500, 0x1002, 68, 65535)
OTHER = Link(3, "eth0", "02:00:00:00:00:02", 1500, 0x1003, 68, 65535)


def addr(text: str) -> IPAddress:
    a, m = text.split("/")
    return IPAddress.parse(a, m, "test")


def plan(
    wanted: Interface,
    links: Sequence[Link] = (LO, ETH, OTHER),
    addresses: Sequence[LinkAddress] = (),
    v6: bool = True,
    pci: str | None = None,
) -> interfaces.InterfacePlan:
    return interfaces.plan(
        list(links), list(addresses), wanted, ipv6_enabled=lambda _n: v6, pci_netdev=pci
    )


def test_found_by_mac_ops_in_kata_order() -> None:
    p = plan(
        Interface(
            name="net1",
            hw_addr="02:00:00:00:00:01",
            addresses=(addr("10.0.0.2/24"), addr("fd00::2/64")),
            mtu=1400,
        )
    )
    assert p.link == ETH
    assert p.ops == (
        AddAddress(ETH, addr("10.0.0.2/24"), existed=False),
        AddAddress(ETH, addr("fd00::2/64"), existed=False),
        Configure(ETH, "net1", 1400, noarp=False),
    )
    assert p.describe()[-1] == "configure link veth9: name net1 mtu 1400 arp on up"


def test_up_link_is_brought_down_first_and_noarp_from_raw_flags() -> None:
    p = plan(Interface(hw_addr="02:00:00:00:00:02", raw_flags=IFF_NOARP | IFF_UP))
    assert p.ops == (SetUp(OTHER, "eth0", up=False), Configure(OTHER, None, None, noarp=True))


def test_found_by_name_then_mac_is_set() -> None:
    p = plan(Interface(name="veth9", hw_addr="02:aa:00:00:00:09"))
    assert p.link == ETH
    assert p.ops[0] == SetMac(ETH, "02:aa:00:00:00:09")


def test_pci_netdev_wins_and_gets_the_mac() -> None:
    p = plan(Interface(hw_addr="02:aa:00:00:00:09", device_path="02/00"), pci="eth0")
    assert p.link == OTHER
    assert SetMac(OTHER, "02:aa:00:00:00:09") in p.ops


def test_unknown_mac_and_name_is_link_not_found() -> None:
    with pytest.raises(NotFound, match=r"^Link not found \(Address: 02:00:00:00:00:99"):
        plan(Interface(name="nosuch", hw_addr="02:00:00:00:00:99"))


def test_name_taken_by_another_link_is_swapped_via_temp_name() -> None:
    p = plan(Interface(name="eth0", hw_addr="02:00:00:00:00:01"))
    assert p.ops == (
        SetUp(OTHER, "eth0", up=False),
        Rename(OTHER, "eth0", "eth0_temp"),
        Configure(ETH, "eth0", None, noarp=False),
        Rename(OTHER, "eth0_temp", "veth9"),
        SetUp(OTHER, "veth9", up=True),
    )


def test_long_name_uses_a_short_temp_name() -> None:
    long = Link(4, "abcdefghijklmn", "02:00:00:00:00:04", 1500, 0x1002)
    p = plan(Interface(name="abcdefghijklmn", hw_addr=ETH.mac), links=(ETH, long))
    renames = [op for op in p.ops if isinstance(op, Rename)]
    assert renames[0].new == "kt4_temp"


def test_ipv6_skipped_when_disabled() -> None:
    p = plan(
        Interface(hw_addr=ETH.mac, addresses=(addr("10.0.0.2/24"), addr("fd00::2/64"))), v6=False
    )
    assert [op.address for op in p.ops if isinstance(op, AddAddress)] == [addr("10.0.0.2/24")]
    assert p.skipped == (addr("fd00::2/64"),)


def test_existing_address_is_marked_so_rollback_keeps_it() -> None:
    p = plan(
        Interface(hw_addr=ETH.mac, addresses=(addr("10.0.0.2/24"),)),
        addresses=[LinkAddress(2, addr("10.0.0.2/24"))],
    )
    assert AddAddress(ETH, addr("10.0.0.2/24"), existed=True) in p.ops


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        (Interface(hw_addr=ETH.mac, mtu=70000), "MTU 70000 out of range 68-65535"),
        (Interface(hw_addr=ETH.mac, name="a" * 16), "invalid interface name"),
        (Interface(hw_addr=ETH.mac, name="a/b"), "invalid interface name"),
        (Interface(), "neither hwAddr nor name"),
    ],
)
def test_invalid_requests_are_rejected_before_any_op(wanted: Interface, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        plan(wanted)
