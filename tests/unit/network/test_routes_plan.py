"""routes.plan(): validation of the whole request and the kernel's ordering rules."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from agent.errors import FailedPrecondition, InvalidArgument, NotFound
from agent.network import routes
from agent.network.model import (
    RTNH_F_ONLINK,
    RTPROT_BOOT,
    IPAddress,
    KernelRoute,
    Link,
    LinkAddress,
    Route,
)

ETH = Link(2, "eth0", "02:00:00:00:00:01", 1500, 0x1003)
ETH1 = Link(3, "eth1", "02:00:00:00:00:02", 1500, 0x1003)
ADDRS = [
    LinkAddress(2, IPAddress.parse("10.0.0.2", "24", "t")),
    LinkAddress(2, IPAddress.parse("fd00::2", "64", "t")),
]


def R(dest: str | None = None, gw: str | None = None, dev: str = "eth0", **kw: object) -> Route:
    net = ipaddress.ip_network(dest) if dest else None
    gwa = ipaddress.ip_address(gw) if gw else None
    fam = (net or gwa).version if (net or gwa) else 4  # type: ignore[union-attr]
    return Route(family=fam, device=dev, dest=net, gateway=gwa, **kw)  # type: ignore[arg-type]


def plan(
    wanted: list[Route], existing: Sequence[KernelRoute] = (), v6: bool = True
) -> routes.RoutePlan:
    return routes.plan(wanted, [ETH, ETH1], ADDRS, list(existing), ipv6_enabled=lambda _n: v6)


def test_routes_without_gateway_go_first_in_request_order() -> None:
    wanted = [
        R(None, "10.0.0.1"),
        R("192.168.5.0/24", dev="eth1", scope=253),
        R("10.9.0.0/16", "192.168.5.1", dev="eth1"),
        R("10.0.0.0/24", scope=253),
    ]
    p = plan(wanted)
    assert [op.route for op in p.ops] == [wanted[1], wanted[3], wanted[0], wanted[2]]
    k = p.ops[0].kernel
    assert (k.table, k.proto, k.type, k.scope, k.oif) == (254, RTPROT_BOOT, 1, 253, 3)


def test_missing_device_is_link_not_found() -> None:
    with pytest.raises(NotFound, match=r"routes\[0\].*Link not found \(Name: eth7\)"):
        plan([R("10.1.0.0/16", dev="eth7")])


@pytest.mark.parametrize("gw", ["10.9.9.9", "fd01::1"])
def test_unreachable_gateway_is_rejected(gw: str) -> None:
    with pytest.raises(FailedPrecondition, match=f"gateway {gw} is not reachable on eth0"):
        plan([R(None, "10.0.0.1"), R(None, gw)])


def test_gateway_reachable_through_route_of_same_request_or_kernel_or_onlink() -> None:
    plan([R("10.0.0.1/32", "10.200.0.1", flags=RTNH_F_ONLINK)])
    plan([R(None, "172.16.0.1"), R("172.16.0.0/30", scope=253)])
    existing = [KernelRoute(family=4, table=254, dst=ipaddress.ip_network("172.17.0.0/30"), oif=2)]
    plan([R(None, "172.17.0.1")], existing=existing)
    plan([R(None, "fe80::1")])
    with pytest.raises(FailedPrecondition):
        plan([R(None, "172.17.0.1", dev="eth1")], existing=existing)


def test_preferred_source_must_be_a_guest_address() -> None:
    plan([R("10.0.0.0/24", prefsrc=ipaddress.ip_address("10.0.0.2"))])
    with pytest.raises(InvalidArgument, match=r"preferred source 10\.0\.0\.3 is not an address"):
        plan([R("10.0.0.0/24", prefsrc=ipaddress.ip_address("10.0.0.3"))])


def test_ipv6_routes_skipped_when_ipv6_disabled() -> None:
    v6 = R(None, "fd00::1")
    p = plan([R(None, "10.0.0.1"), v6], v6=False)
    assert len(p.ops) == 1
    assert p.skipped == (v6,)


def test_neighbor_on_missing_device() -> None:
    from agent.network.model import ARPNeighbor

    n = ARPNeighbor(ipaddress.ip_address("10.0.0.9"), "eth5", "02:00:00:00:00:09")
    with pytest.raises(NotFound, match=r"neighbors\[0\].*Link not found \(Name: eth5\)"):
        routes.plan_neighbors([n], [ETH])
