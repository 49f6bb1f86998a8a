"""UpdateRoutes, ListRoutes and AddARPNeighbors: plan as data, then apply.

`plan()` is pure. It validates the whole request against the kernel's links, addresses and
main-table routes (every device exists, families agree, every gateway is reachable on its device,
every preferred source is an address of the guest) and orders the routes the kernel needs them in:
routes without a gateway first (they make the gateways reachable), then the others, each group in
request order. Every route goes into the main table with replace semantics, protocol `boot`, type
unicast, the request's scope and next-hop flags, and the MTU metric when non-zero. Nothing is
deleted: routes the request does not name stay.

`apply()` installs them; if the kernel refuses one, the main table is put back as it was before the
request (routes this request created are deleted, routes it replaced are restored).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent.errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from agent.network.model import (
    RT_TABLE_MAIN,
    RTN_UNICAST,
    RTNH_F_ONLINK,
    RTPROT_BOOT,
    ARPNeighbor,
    KernelRoute,
    Link,
    LinkAddress,
    Route,
)
from agent.network.netlink import Netlink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplaceRoute:
    route: Route
    kernel: KernelRoute

    def describe(self) -> str:
        return f"replace route {self.route.describe()}"


@dataclass(frozen=True, slots=True)
class RoutePlan:
    ops: tuple[ReplaceRoute, ...]
    skipped: tuple[Route, ...] = ()

    def describe(self) -> list[str]:
        return [op.describe() for op in self.ops]


def _link_by_name(links: Sequence[Link], name: str, what: str) -> Link:
    for link in links:
        if link.name == name:
            return link
    if not name:
        raise InvalidArgument(f"{what}: no device given")
    raise NotFound(f"{what}: Link not found (Name: {name})")


def _gateway_reachable(
    route: Route,
    link: Link,
    addresses: Sequence[LinkAddress],
    connected: Sequence[Route],
    existing: Sequence[KernelRoute],
) -> bool:
    gw = route.gateway
    assert gw is not None
    if route.flags & RTNH_F_ONLINK:
        return True
    if gw.version == 6 and gw.is_link_local:
        return True
    for a in addresses:
        if a.index == link.index and a.address.family == gw.version and gw in a.address.network:
            return True
    for r in connected:
        if r.device == route.device and r.family == gw.version and (r.dest is None or gw in r.dest):
            return True
    for k in existing:
        if (
            k.oif == link.index
            and k.gateway is None
            and k.family == gw.version
            and (k.dst is None or gw in k.dst)
        ):
            return True
    return False


def plan(
    routes: Sequence[Route],
    links: Sequence[Link],
    addresses: Sequence[LinkAddress],
    existing: Sequence[KernelRoute],
    *,
    ipv6_enabled: Callable[[str], bool] = lambda _name: True,
) -> RoutePlan:
    """Validate `routes` against the kernel state and order them (no effect)."""
    skipped: list[Route] = []
    wanted: list[tuple[Route, Link]] = []
    for i, route in enumerate(routes):
        what = f"routes[{i}] ({route.describe()})"
        link = _link_by_name(links, route.device, what)
        if route.family == 6 and not ipv6_enabled(link.name):
            skipped.append(route)
            continue
        if route.prefsrc is not None and not any(
            a.address.address == route.prefsrc for a in addresses
        ):
            raise InvalidArgument(
                f"{what}: preferred source {route.prefsrc} is not an address of this guest"
            )
        wanted.append((route, link))

    connected = [r for r, _ in wanted if r.gateway is None]
    for route, link in wanted:
        if route.gateway is not None and not _gateway_reachable(
            route, link, addresses, connected, existing
        ):
            raise FailedPrecondition(
                f"route {route.describe()}: gateway {route.gateway} is not reachable on "
                f"{route.device} (no address or route without gateway on {route.device} covers "
                "it; set the onlink flag to force it)"
            )

    ordered = [w for w in wanted if w[0].gateway is None] + [
        w for w in wanted if w[0].gateway is not None
    ]
    ops = tuple(ReplaceRoute(r, to_kernel(r, link)) for r, link in ordered)
    return RoutePlan(ops, tuple(skipped))


def to_kernel(route: Route, link: Link) -> KernelRoute:
    return KernelRoute(
        family=route.family,
        table=RT_TABLE_MAIN,
        dst=route.dest,
        oif=link.index,
        gateway=route.gateway,
        src=route.source,
        prefsrc=route.prefsrc,
        scope=route.scope,
        proto=RTPROT_BOOT,
        type=RTN_UNICAST,
        flags=route.flags,
        mtu=route.mtu,
    )


async def main_table(nl: Netlink) -> list[KernelRoute]:
    return [*await nl.routes(4, RT_TABLE_MAIN), *await nl.routes(6, RT_TABLE_MAIN)]


async def apply(nl: Netlink, the_plan: RoutePlan, before: Sequence[KernelRoute]) -> None:
    """Install the routes in order; on failure restore the main table to `before` and re-raise."""
    try:
        for op in the_plan.ops:
            log.debug("%s", op.describe())
            try:
                await nl.replace_route(op.kernel, f"add route {op.route.describe()}")
            except AlreadyExists:
                continue
    except AgentError as err:
        log.warning("update routes failed: %s; restoring the main table", err)
        await _restore(nl, before)
        raise


async def _restore(nl: Netlink, before: Sequence[KernelRoute]) -> None:
    try:
        now = await main_table(nl)
        for route in now:
            if route not in before:
                await _quietly(nl.delete_route(route, f"rollback: delete route {route}"))
        now = await main_table(nl)
        for route in before:
            if route not in now:
                await _quietly(nl.replace_route(route, f"rollback: restore route {route}"))
    except AgentError as err:
        log.error("restoring the main table failed: %s", err)


async def _quietly(step: Awaitable[None]) -> None:
    try:
        await step
    except AgentError as err:
        log.error("%s", err)


def to_routes(kernel: Sequence[KernelRoute], links: Sequence[Link]) -> list[Route]:
    """Main-table kernel routes as the model (the device by name)."""
    names = {link.index: link.name for link in links}
    out = []
    for k in kernel:
        if k.table != RT_TABLE_MAIN:
            continue
        out.append(
            Route(
                family=k.family,
                device=names.get(k.oif, "") if k.oif is not None else "",
                dest=k.dst,
                gateway=k.gateway,
                source=k.src,
                prefsrc=k.prefsrc,
                scope=k.scope,
                flags=k.flags,
                mtu=k.mtu,
            )
        )
    return out


# ---- ARP neighbours ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplaceNeighbor:
    neighbor: ARPNeighbor
    index: int

    def describe(self) -> str:
        return f"add ARP neighbor {self.neighbor.describe()}"


def plan_neighbors(
    neighbors: Sequence[ARPNeighbor], links: Sequence[Link]
) -> tuple[ReplaceNeighbor, ...]:
    ops = []
    for i, n in enumerate(neighbors):
        link = _link_by_name(links, n.device, f"neighbors[{i}] ({n.describe()})")
        ops.append(ReplaceNeighbor(n, link.index))
    return tuple(ops)


async def apply_neighbors(nl: Netlink, ops: Sequence[ReplaceNeighbor]) -> None:
    for op in ops:
        n = op.neighbor
        await nl.replace_neighbor(
            index=op.index,
            address=n.address,
            lladdr=n.lladdr,
            state=n.state,
            flags=n.flags,
            step=f"Failed to {op.describe()}",
        )
