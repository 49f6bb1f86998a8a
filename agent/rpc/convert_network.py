"""Pure translation between the wire's `types.Interface`/`Route`/`ARPNeighbor` and the network
model. Malformed strings raise `InvalidArgument` naming the field, before anything is changed.

Families: the address strings decide (the Rust agent ignores `IPAddress.family` too); the
request's `family` is only used when a route carries no address at all, and a route whose
addresses disagree is rejected. Output routes report a default route with an empty `dest` (what
UpdateRoutes accepts) and always fill `family`; the Rust agent's ListRoutes reports "0.0.0.0" /
"::1" for gateway routes and no family, which cannot be fed back.
"""

from __future__ import annotations

from agent.errors import InvalidArgument
from agent.network.model import (
    NUD_PERMANENT,
    ARPNeighbor,
    Interface,
    IPAddress,
    IPNet,
    Route,
    parse_ip,
    parse_mac,
    parse_network,
)
from agent.rpc.pb import types_pb2

_U32 = 0xFFFFFFFF


def _family(pb_family: int) -> int:
    return 6 if pb_family == types_pb2.v6 else 4


def _pb_family(family: int) -> types_pb2.IPFamily:
    return types_pb2.v6 if family == 6 else types_pb2.v4


def interface_from_pb(pb: types_pb2.Interface) -> Interface:
    what = f"interface {pb.name or pb.hwAddr}"
    addresses = tuple(
        IPAddress.parse(a.address, a.mask, f"{what}: IPAddresses[{i}]")
        for i, a in enumerate(pb.IPAddresses)
    )
    if pb.mtu > 0x7FFFFFFF:
        raise InvalidArgument(f"{what}: MTU {pb.mtu} out of range")
    return Interface(
        name=pb.name,
        hw_addr=parse_mac(pb.hwAddr, f"{what}: hwAddr") if pb.hwAddr else "",
        addresses=addresses,
        mtu=pb.mtu,
        raw_flags=pb.raw_flags,
        device=pb.device,
        device_path=pb.devicePath,
        type=pb.type,
    )


def interface_to_pb(iface: Interface) -> types_pb2.Interface:
    return types_pb2.Interface(
        device=iface.device,
        name=iface.name,
        IPAddresses=[
            types_pb2.IPAddress(
                family=_pb_family(a.family), address=str(a.address), mask=str(a.prefix_len)
            )
            for a in iface.addresses
        ],
        mtu=iface.mtu,
        hwAddr=iface.hw_addr,
        devicePath=iface.device_path,
        type=iface.type,
        raw_flags=iface.raw_flags & _U32,
    )


def route_from_pb(pb: types_pb2.Route, index: int) -> Route:
    what = f"routes[{index}]"
    dest = parse_network(pb.dest, f"{what}.dest") if pb.dest else None
    gateway = parse_ip(pb.gateway, f"{what}.gateway") if pb.gateway else None
    source: IPNet | None = None
    prefsrc = None
    if pb.source:
        if "/" in pb.source:
            source = parse_network(pb.source, f"{what}.source")
        else:
            prefsrc = parse_ip(pb.source, f"{what}.source")
    versions = {x.version for x in (dest, gateway, source, prefsrc) if x is not None}
    if len(versions) > 1:
        raise InvalidArgument(
            f"{what}: mixed IPv4 and IPv6 (dest {pb.dest!r}, gateway {pb.gateway!r}, "
            f"source {pb.source!r})"
        )
    family = versions.pop() if versions else _family(pb.family)
    if pb.scope > 255:
        raise InvalidArgument(f"{what}.scope: {pb.scope} out of range 0-255")
    if not pb.device:
        raise InvalidArgument(f"{what}.device: empty (the output device is required)")
    return Route(
        family=family,
        device=pb.device,
        dest=dest,
        gateway=gateway,
        source=source,
        prefsrc=prefsrc,
        scope=pb.scope,
        flags=pb.flags,
        mtu=pb.mtu,
    )


def route_to_pb(route: Route) -> types_pb2.Route:
    if route.source is not None:
        source = str(route.source)
    elif route.prefsrc is not None:
        source = str(route.prefsrc)
    else:
        source = ""
    return types_pb2.Route(
        dest=str(route.dest) if route.dest is not None else "",
        gateway=str(route.gateway) if route.gateway is not None else "",
        device=route.device,
        source=source,
        scope=route.scope,
        family=_pb_family(route.family),
        flags=route.flags,
        mtu=route.mtu,
    )


def neighbor_from_pb(pb: types_pb2.ARPNeighbor, index: int) -> ARPNeighbor:
    what = f"neighbors[{index}]"
    if not pb.HasField("toIPAddress") or not pb.toIPAddress.address:
        raise InvalidArgument(f"{what}.toIPAddress: missing")
    if not pb.device:
        raise InvalidArgument(f"{what}.device: empty")
    if not 0 <= pb.state <= 0xFFFF:
        raise InvalidArgument(f"{what}.state: {pb.state} out of range")
    if not 0 <= pb.flags <= 0xFF:
        raise InvalidArgument(f"{what}.flags: {pb.flags} out of range")
    return ARPNeighbor(
        address=parse_ip(pb.toIPAddress.address, f"{what}.toIPAddress"),
        device=pb.device,
        lladdr=parse_mac(pb.lladdr, f"{what}.lladdr") if pb.lladdr else "",
        state=pb.state or NUD_PERMANENT,
        flags=pb.flags,
    )
