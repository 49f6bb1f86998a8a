"""apply(): ops run in order; a failing op undoes the completed ones in reverse."""

from __future__ import annotations

import ipaddress

import pytest

from agent.errors import FailedPrecondition, InvalidArgument
from agent.network import interfaces, routes
from agent.network.model import Interface, IPAddress, KernelRoute, Link, Route
from tests.unit.network.fakes import FakeNetlink

ETH = Link(2, "veth9", "02:00:00:00:00:01", 1500, 0x1003, 68, 65535)


async def test_interface_failure_rolls_back_completed_ops() -> None:
    nl = FakeNetlink([ETH], fail_on="configure", error=InvalidArgument("configure: boom"))
    wanted = Interface(
        name="eth0", hw_addr=ETH.mac, addresses=(IPAddress.parse("10.0.0.2", "24", "t"),), mtu=1400
    )
    p = interfaces.plan([ETH], [], wanted, ipv6_enabled=lambda _n: True)
    with pytest.raises(InvalidArgument, match="boom"):
        await interfaces.apply(nl, p)  # type: ignore[arg-type]
    names = [c[0] for c in nl.calls]
    assert names == [
        "set_link",  # down
        "replace_address",
        "set_link",  # configure (fails)
        "delete_address",  # undo add
        "set_link",  # undo down: up again
    ]
    assert nl.calls[-1][1] == (2, {"flags": 1, "change": 1})


def kroute(dst: str, gw: str | None = None, oif: int = 2, proto: int = 3) -> KernelRoute:
    return KernelRoute(
        family=4,
        table=254,
        dst=ipaddress.ip_network(dst),
        oif=oif,
        gateway=ipaddress.ip_address(gw) if gw else None,
        proto=proto,
    )


async def test_route_failure_restores_the_main_table() -> None:
    kept = kroute("10.0.0.0/24", proto=2)
    replaced = kroute("10.7.0.0/16", "10.0.0.1")
    nl = FakeNetlink(
        [ETH],
        routes=[kept, replaced],
        fail_on="10.8.0.0/16",
        error=FailedPrecondition("add route: Network is unreachable (ENETUNREACH)"),
    )
    wanted = [
        Route(
            family=4,
            device="veth9",
            dest=ipaddress.ip_network("10.7.0.0/16"),
            gateway=ipaddress.ip_address("10.0.0.254"),
        ),
        Route(
            family=4,
            device="veth9",
            dest=ipaddress.ip_network("10.8.0.0/16"),
            gateway=ipaddress.ip_address("10.0.0.1"),
        ),
    ]
    before = await routes.main_table(nl)  # type: ignore[arg-type]
    p = routes.plan(wanted, [ETH], [], before)
    with pytest.raises(FailedPrecondition):
        await routes.apply(nl, p, before)  # type: ignore[arg-type]
    assert sorted(map(str, nl.routes_)) == sorted(map(str, [kept, replaced]))
