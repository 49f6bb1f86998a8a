"""agent.rpc.convert_network: wire strings → model (malformed input named) and back."""

from __future__ import annotations

import ipaddress

import pytest

from agent.errors import InvalidArgument
from agent.network.model import NUD_PERMANENT
from agent.rpc import convert_network as conv
from agent.rpc.pb import types_pb2


def test_interface_round_trip() -> None:
    pb = types_pb2.Interface(
        name="eth0",
        hwAddr="02:AA:00:00:00:01",
        mtu=1450,
        raw_flags=0x80,
        devicePath="02/00",
        IPAddresses=[
            types_pb2.IPAddress(family=types_pb2.v4, address="10.0.0.2", mask="24"),
            types_pb2.IPAddress(family=types_pb2.v6, address="fd00::2", mask="64"),
        ],
    )
    iface = conv.interface_from_pb(pb)
    assert iface.hw_addr == "02:aa:00:00:00:01"
    assert [str(a) for a in iface.addresses] == ["10.0.0.2/24", "fd00::2/64"]
    back = conv.interface_to_pb(iface)
    assert back.IPAddresses[1].family == types_pb2.v6
    assert back.IPAddresses[0].mask == "24"
    assert back.hwAddr == "02:aa:00:00:00:01"


@pytest.mark.parametrize(
    ("address", "mask", "message"),
    [
        ("10.0.0.300", "24", "invalid IP address '10.0.0.300'"),
        ("10.0.0.2", "33", "prefix length 33 out of range 0-32"),
        ("fd00::2", "129", "prefix length 129 out of range 0-128"),
        ("10.0.0.2", "abc", "invalid mask 'abc'"),
    ],
)
def test_malformed_addresses(address: str, mask: str, message: str) -> None:
    pb = types_pb2.Interface(
        hwAddr="02:00:00:00:00:01",
        IPAddresses=[types_pb2.IPAddress(address=address, mask=mask)],
    )
    with pytest.raises(InvalidArgument, match=r"IPAddresses\[0\]: " + message):
        conv.interface_from_pb(pb)


def test_mask_variants() -> None:
    pb = types_pb2.Interface(
        hwAddr="02:00:00:00:00:01",
        IPAddresses=[
            types_pb2.IPAddress(address="10.0.0.2", mask="255.255.255.0"),
            types_pb2.IPAddress(address="10.0.0.3", mask=""),
        ],
    )
    assert [a.prefix_len for a in conv.interface_from_pb(pb).addresses] == [24, 32]


def test_bad_mac() -> None:
    with pytest.raises(InvalidArgument, match="hwAddr: invalid MAC address 'zz'"):
        conv.interface_from_pb(types_pb2.Interface(hwAddr="zz"))


def test_route_source_prefix_vs_preferred_source() -> None:
    r = conv.route_from_pb(types_pb2.Route(dest="10.0.0.0/24", device="eth0", source="10.0.0.2"), 0)
    assert r.prefsrc == ipaddress.ip_address("10.0.0.2")
    assert r.source is None
    r = conv.route_from_pb(types_pb2.Route(device="eth0", source="fd00::/64", gateway="fd00::1"), 0)
    assert r.source == ipaddress.ip_network("fd00::/64")
    assert r.family == 6
    assert r.dest is None


def test_route_family_from_addresses_and_output() -> None:
    r = conv.route_from_pb(
        types_pb2.Route(dest="fd01::/64", gateway="fd00::1", device="eth0", family=types_pb2.v4), 3
    )
    assert r.family == 6
    pb = conv.route_to_pb(r)
    assert (pb.dest, pb.gateway, pb.family) == ("fd01::/64", "fd00::1", types_pb2.v6)
    default = conv.route_to_pb(
        conv.route_from_pb(types_pb2.Route(gateway="10.0.0.1", device="e"), 0)
    )
    assert default.dest == ""


@pytest.mark.parametrize(
    ("pb", "message"),
    [
        (types_pb2.Route(dest="10.0.0.1/24", device="e"), r"routes\[2\]\.dest: invalid prefix"),
        (types_pb2.Route(dest="10.0.0.0/24", gateway="fd00::1", device="e"), "mixed IPv4 and IPv6"),
        (types_pb2.Route(dest="10.0.0.0/24"), r"routes\[2\]\.device: empty"),
        (types_pb2.Route(gateway="10.0.0", device="e"), "invalid IP address"),
        (types_pb2.Route(dest="10.0.0.0/24", device="e", scope=256), "scope: 256 out of range"),
    ],
)
def test_malformed_routes(pb: types_pb2.Route, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        conv.route_from_pb(pb, 2)


def test_neighbor_state_zero_is_permanent_and_bad_input() -> None:
    pb = types_pb2.ARPNeighbor(
        toIPAddress=types_pb2.IPAddress(address="10.0.0.9"),
        device="eth0",
        lladdr="02:00:00:00:00:09",
    )
    assert conv.neighbor_from_pb(pb, 0).state == NUD_PERMANENT
    with pytest.raises(InvalidArgument, match=r"neighbors\[1\]\.toIPAddress: missing"):
        conv.neighbor_from_pb(types_pb2.ARPNeighbor(device="eth0"), 1)
    with pytest.raises(InvalidArgument, match="lladdr: invalid MAC"):
        conv.neighbor_from_pb(
            types_pb2.ARPNeighbor(toIPAddress=pb.toIPAddress, device="e", lladdr="1:2:3"), 0
        )
