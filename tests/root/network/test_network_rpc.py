"""The real agent, inside network namespaces these tests create, configures NICs, routes and
neighbours through its RPCs; the result is checked from outside with pyroute2.

Each pod is a guest netns (where the agent runs, via `ip netns exec`) plus a peer netns holding
the other ends of the veth pairs; both are deleted in teardown. Nothing here touches the
machine's own interfaces, routes or iptables.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pyroute2 import AsyncIPRoute

from agent.rpc.pb import agent_pb2, types_pb2
from agent.rpc.status import Code, RpcError
from tests.root.network.netns import Pod
from tests.root.network.support import AgentInNetns, start_agent_in

V4, V6 = types_pb2.v4, types_pb2.v6
NUD_PERMANENT = 0x80


def mac(i: int) -> str:
    return f"02:00:5e:00:01:{i:02x}"


def iface(i: int, *, name: str | None = None, mtu: int = 1400) -> types_pb2.Interface:
    return types_pb2.Interface(
        name=name or f"eth{i}",
        hwAddr=mac(i),
        mtu=mtu,
        IPAddresses=[
            types_pb2.IPAddress(family=V4, address=f"10.{i}.0.2", mask="24"),
            types_pb2.IPAddress(family=V6, address=f"fd00:{i}::2", mask="64"),
        ],
    )


def routes_for(i: int) -> list[types_pb2.Route]:
    dev = f"eth{i}"
    out = [
        types_pb2.Route(
            dest=f"10.{i}.0.0/24", device=dev, source=f"10.{i}.0.2", scope=253, family=V4
        ),
        types_pb2.Route(dest=f"10.{100 + i}.0.0/16", gateway=f"10.{i}.0.1", device=dev, mtu=1300),
        types_pb2.Route(dest=f"fd01:{i}::/64", gateway=f"fd00:{i}::1", device=dev, family=V6),
    ]
    if i == 0:
        out.append(types_pb2.Route(gateway="10.0.0.1", device=dev, family=V4))
        out.append(types_pb2.Route(gateway="fd00:0::1", device=dev, family=V6))
    return out


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def make_pod() -> Iterator[Callable[[int], Pod]]:
    pods: list[Pod] = []

    def make(nics: int) -> Pod:
        pod = Pod.create()
        pods.append(pod)
        for i in range(nics):
            pod.add_nic(mac(i))
        return pod

    yield make
    for pod in pods:
        pod.delete()


@pytest.fixture
async def pod_agent(make_pod: Callable[[int], Pod]) -> AsyncIterator[Any]:
    """`(pod, agent)` factory: the agent runs inside the pod's guest netns."""
    started: list[AgentInNetns] = []

    async def make(nics: int) -> tuple[Pod, AgentInNetns]:
        pod = make_pod(nics)
        agent = await start_agent_in(pod.ns)
        started.append(agent)
        return pod, agent

    yield make
    for agent in started:
        await agent.stop()


# ---- helpers: the kernel state, read from outside -------------------------------------------


async def dump(ns: str, kind: str, **kwarg: Any) -> list[Any]:
    async with AsyncIPRoute(netns=ns) as ipr:
        return [m async for m in await getattr(ipr, kind)("dump", **kwarg)]


async def links(ns: str) -> dict[str, dict[str, Any]]:
    out = {}
    for m in await dump(ns, "link"):
        out[m.get("IFLA_IFNAME")] = {
            "index": m["index"],
            "mac": m.get("IFLA_ADDRESS"),
            "mtu": m.get("IFLA_MTU"),
            "up": bool(m["flags"] & 1),
            "noarp": bool(m["flags"] & 0x80),
        }
    return out


async def addresses(ns: str, name: str) -> set[str]:
    index = (await links(ns))[name]["index"]
    return {
        f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}"
        for m in await dump(ns, "addr")
        if m["index"] == index and not m.get("IFA_ADDRESS", "").startswith("fe80")
    }


async def routes(ns: str) -> set[tuple[Any, ...]]:
    """Main-table routes as (family, dst, gateway, dev, prefsrc, scope, proto, mtu)."""
    names = {v["index"]: k for k, v in (await links(ns)).items()}
    out = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        for m in await dump(ns, "route", family=family):
            if m.get("RTA_TABLE") != 254:
                continue
            dst = m.get("RTA_DST")
            if dst and dst.startswith("fe80"):
                continue
            metrics = m.get("RTA_METRICS")
            out.add(
                (
                    4 if family == socket.AF_INET else 6,
                    f"{dst}/{m['dst_len']}" if dst else "default",
                    m.get("RTA_GATEWAY"),
                    names.get(m.get("RTA_OIF")),
                    m.get("RTA_PREFSRC"),
                    m["scope"],
                    m["proto"],
                    (metrics.get("RTAX_MTU") if metrics else None) or 0,
                )
            )
    return out


async def neighbours(ns: str) -> dict[str, tuple[str, int]]:
    return {
        m.get("NDA_DST"): (m.get("NDA_LLADDR"), m["state"])
        for m in await dump(ns, "neigh")
        if m["state"] == NUD_PERMANENT
    }


def expected_routes(i: int) -> set[tuple[Any, ...]]:
    dev = f"eth{i}"
    out = {
        (4, f"10.{i}.0.0/24", None, dev, f"10.{i}.0.2", 253, 3, 0),
        (4, f"10.{100 + i}.0.0/16", f"10.{i}.0.1", dev, None, 0, 3, 1300),
        (
            6,
            str(ipaddress.ip_network(f"fd01:{i}::/64")),
            str(ipaddress.ip_address(f"fd00:{i}::1")),
            dev,
            None,
            0,
            3,
            0,
        ),
    }
    if i == 0:
        out.add((4, "default", "10.0.0.1", dev, None, 0, 3, 0))
        out.add((6, "default", "fd00::1", dev, None, 0, 3, 0))
    return out


async def configure(agent: AgentInNetns, nics: int) -> agent_pb2.Routes:
    for i in range(nics):
        got = await agent.call(
            "UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface(i))
        )
        assert got.name == f"eth{i}"
    wanted = [r for i in range(nics) for r in routes_for(i)]
    done: agent_pb2.Routes = await agent.call(
        "UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=wanted))
    )
    return done


async def expect_error(agent: AgentInNetns, method: str, req: Any, code: Code, text: str) -> str:
    with pytest.raises(RpcError) as info:
        await agent.call(method, req)
    assert info.value.code == code, str(info.value)
    assert text in info.value.message, info.value.message
    return info.value.message


# ---- tests ---------------------------------------------------------------------------------


async def test_one_nic_interface_routes_neighbours(pod_agent: Any) -> None:
    pod, agent = await pod_agent(1)
    req = agent_pb2.UpdateInterfaceRequest(interface=iface(0))
    got = await agent.call("UpdateInterface", req)
    assert (got.name, got.hwAddr, got.mtu) == ("eth0", mac(0), 1400)
    addrs = {f"{a.address}/{a.mask}" for a in got.IPAddresses}
    assert {a for a in addrs if not a.startswith("fe80:")} == {"10.0.0.2/24", "fd00::2/64"}

    seen = await links(pod.ns)
    assert "tap0" not in seen
    assert seen["eth0"]["mac"] == mac(0)
    assert seen["eth0"]["mtu"] == 1400
    assert seen["eth0"]["up"]
    assert not seen["eth0"]["noarp"]
    assert await addresses(pod.ns, "eth0") == {"10.0.0.2/24", "fd00::2/64"}

    wanted = routes_for(0)
    got_routes = await agent.call(
        "UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=wanted))
    )
    assert await routes(pod.ns) >= expected_routes(0)
    reported = {(r.dest, r.gateway, r.device, r.family) for r in got_routes.Routes}
    assert ("", "10.0.0.1", "eth0", V4) in reported
    assert ("10.100.0.0/16", "10.0.0.1", "eth0", V4) in reported
    assert ("fd01::/64", "fd00::1", "eth0", V6) in reported

    neigh = agent_pb2.AddARPNeighborsRequest(
        neighbors=agent_pb2.ARPNeighbors(
            ARPNeighbors=[
                types_pb2.ARPNeighbor(
                    toIPAddress=types_pb2.IPAddress(family=V4, address="10.0.0.9"),
                    device="eth0",
                    lladdr="02:00:5e:00:00:09",
                ),
                types_pb2.ARPNeighbor(
                    toIPAddress=types_pb2.IPAddress(family=V6, address="fd00::9"),
                    device="eth0",
                    lladdr="02:00:5e:00:00:0a",
                    state=NUD_PERMANENT,
                ),
            ]
        )
    )
    await agent.call("AddARPNeighbors", neigh)
    assert await neighbours(pod.ns) == {
        "10.0.0.9": ("02:00:5e:00:00:09", NUD_PERMANENT),
        "fd00::9": ("02:00:5e:00:00:0a", NUD_PERMANENT),
    }

    listed = await agent.call("ListInterfaces", agent_pb2.ListInterfacesRequest())
    by_name = {i.name: i for i in listed.Interfaces}
    assert set(by_name) == {"lo", "eth0"}
    assert by_name["eth0"].hwAddr == mac(0)
    assert by_name["eth0"].mtu == 1400
    listed_routes = await agent.call("ListRoutes", agent_pb2.ListRoutesRequest())
    assert {(r.dest, r.gateway) for r in listed_routes.Routes} == {
        (r.dest, r.gateway) for r in got_routes.Routes
    }


async def test_eight_nics(pod_agent: Any) -> None:
    pod, agent = await pod_agent(8)
    await configure(agent, 8)
    seen = await links(pod.ns)
    assert sorted(n for n in seen if n != "lo") == [f"eth{i}" for i in range(8)]
    for i in range(8):
        assert seen[f"eth{i}"]["mac"] == mac(i)
        assert seen[f"eth{i}"]["up"]
        v6 = ipaddress.ip_address(f"fd00:{i}::2")
        assert await addresses(pod.ns, f"eth{i}") == {f"10.{i}.0.2/24", f"{v6}/64"}
    assert await routes(pod.ns) >= set().union(*(expected_routes(i) for i in range(8)))


async def test_rename_swaps_with_the_link_holding_the_name(pod_agent: Any) -> None:
    pod, agent = await pod_agent(2)
    await agent.call(
        "UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface(0, name="tap1"))
    )
    seen = await links(pod.ns)
    assert seen["tap1"]["mac"] == mac(0)
    assert seen["tap0"]["mac"] == mac(1)


async def test_noarp_flag(pod_agent: Any) -> None:
    pod, agent = await pod_agent(1)
    wanted = iface(0)
    wanted.raw_flags = 0x80
    await agent.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=wanted))
    assert (await links(pod.ns))["eth0"]["noarp"]


async def test_unknown_mac_is_link_not_found_and_changes_nothing(pod_agent: Any) -> None:
    pod, agent = await pod_agent(1)
    before = await links(pod.ns)
    wanted = iface(0)
    wanted.hwAddr = "02:00:5e:00:09:99"
    wanted.name = "nosuch"
    await expect_error(
        agent,
        "UpdateInterface",
        agent_pb2.UpdateInterfaceRequest(interface=wanted),
        Code.NOT_FOUND,
        "Link not found (Address: 02:00:5e:00:09:99",
    )
    assert await links(pod.ns) == before


@pytest.mark.parametrize(
    ("address", "mask", "text"),
    [
        ("10.0.0.256", "24", "invalid IP address '10.0.0.256'"),
        ("10.0.0.2", "33", "prefix length 33 out of range 0-32"),
        ("fd00::2", "200", "prefix length 200 out of range 0-128"),
    ],
)
async def test_malformed_address_changes_nothing(
    pod_agent: Any, address: str, mask: str, text: str
) -> None:
    pod, agent = await pod_agent(1)
    await agent.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface(0)))
    before = (await links(pod.ns), await addresses(pod.ns, "eth0"))
    wanted = iface(0, name="renamed", mtu=1300)
    wanted.IPAddresses.append(types_pb2.IPAddress(address=address, mask=mask))
    await expect_error(
        agent,
        "UpdateInterface",
        agent_pb2.UpdateInterfaceRequest(interface=wanted),
        Code.INVALID_ARGUMENT,
        text,
    )
    assert (await links(pod.ns), await addresses(pod.ns, "eth0")) == before


async def test_route_errors_leave_the_routes_as_they_were(pod_agent: Any) -> None:
    pod, agent = await pod_agent(1)
    await configure(agent, 1)
    before = await routes(pod.ns)

    def req(*rs: types_pb2.Route) -> agent_pb2.UpdateRoutesRequest:
        return agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=list(rs)))

    ok = types_pb2.Route(dest="10.50.0.0/16", gateway="10.0.0.1", device="eth0")
    await expect_error(
        agent,
        "UpdateRoutes",
        req(ok, types_pb2.Route(dest="10.51.0.0/16", gateway="10.0.0.1", device="eth9")),
        Code.NOT_FOUND,
        "Link not found (Name: eth9)",
    )
    await expect_error(
        agent,
        "UpdateRoutes",
        req(ok, types_pb2.Route(dest="10.52.0.0/16", gateway="192.168.77.1", device="eth0")),
        Code.FAILED_PRECONDITION,
        "gateway 192.168.77.1 is not reachable on eth0",
    )
    await expect_error(
        agent,
        "UpdateRoutes",
        req(ok, types_pb2.Route(dest="10.53.0.0/33", device="eth0")),
        Code.INVALID_ARGUMENT,
        "routes[1].dest: invalid prefix '10.53.0.0/33'",
    )
    # Passes validation, refused by the kernel (a gateway route cannot have scope link): the
    # route the same request had already installed is taken out again, and the default route it
    # replaced is put back.
    await expect_error(
        agent,
        "UpdateRoutes",
        req(
            ok,
            types_pb2.Route(gateway="10.0.0.3", device="eth0"),
            types_pb2.Route(dest="10.54.0.0/16", gateway="10.0.0.1", device="eth0", scope=253),
        ),
        Code.FAILED_PRECONDITION,
        "add route 10.54.0.0/16 via 10.0.0.1 dev eth0: Network is unreachable (ENETUNREACH)",
    )
    await expect_error(
        agent, "UpdateRoutes", agent_pb2.UpdateRoutesRequest(), Code.INVALID_ARGUMENT, "missing"
    )
    assert await routes(pod.ns) == before


async def test_neighbour_on_missing_device(pod_agent: Any) -> None:
    pod, agent = await pod_agent(1)
    bad = types_pb2.ARPNeighbor(
        toIPAddress=types_pb2.IPAddress(address="10.0.0.9"), device="eth7", lladdr=mac(9)
    )
    await expect_error(
        agent,
        "AddARPNeighbors",
        agent_pb2.AddARPNeighborsRequest(neighbors=agent_pb2.ARPNeighbors(ARPNeighbors=[bad])),
        Code.NOT_FOUND,
        "Link not found (Name: eth7)",
    )
    assert await neighbours(pod.ns) == {}


async def test_two_agents_in_two_namespaces_at_once(pod_agent: Any) -> None:
    (pod_a, agent_a), (pod_b, agent_b) = await asyncio.gather(pod_agent(2), pod_agent(2))
    await asyncio.gather(configure(agent_a, 2), configure(agent_b, 2))
    for pod in (pod_a, pod_b):
        assert await addresses(pod.ns, "eth1") == {"10.1.0.2/24", "fd00:1::2/64"}
        assert await routes(pod.ns) >= expected_routes(0) | expected_routes(1)


def iptables_save(ns: str, binary: str = "iptables-save") -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, binary], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


async def test_iptables_round_trip_and_bad_payload(pod_agent: Any) -> None:
    pod, agent = await pod_agent(0)
    rules = b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.9.9.9/32 -j DROP\nCOMMIT\n"
    rules6 = b"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s fd00::9/128 -j DROP\nCOMMIT\n"
    await agent.call("SetIPTables", agent_pb2.SetIPTablesRequest(data=rules))
    await agent.call("SetIPTables", agent_pb2.SetIPTablesRequest(is_ipv6=True, data=rules6))
    got = await agent.call("GetIPTables", agent_pb2.GetIPTablesRequest())
    assert b"-A INPUT -s 10.9.9.9/32 -j DROP" in got.data
    got6 = await agent.call("GetIPTables", agent_pb2.GetIPTablesRequest(is_ipv6=True))
    assert b"-A INPUT -s fd00::9/128 -j DROP" in got6.data
    assert "-A INPUT -s 10.9.9.9/32 -j DROP" in iptables_save(pod.ns)
    assert "-A INPUT -s fd00::9/128 -j DROP" in iptables_save(pod.ns, "ip6tables-save")

    before = iptables_save(pod.ns).splitlines()[1:-1]  # without the timestamped comments
    await expect_error(
        agent,
        "SetIPTables",
        agent_pb2.SetIPTablesRequest(data=b"*filter\n-A NOSUCHCHAIN -j DROP\nCOMMIT\n"),
        Code.INVALID_ARGUMENT,
        "iptables-restore exited with status",
    )
    assert iptables_save(pod.ns).splitlines()[1:-1] == before


async def test_ipv6_addresses_and_routes_skipped_when_the_guest_has_ipv6_disabled(
    make_pod: Callable[[int], Pod],
) -> None:
    pod = make_pod(1)
    await asyncio.to_thread(
        subprocess.run,
        ["ip", "netns", "exec", pod.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
        check=True,
        timeout=30,
    )
    agent = await start_agent_in(pod.ns)
    try:
        await configure(agent, 1)
        assert await addresses(pod.ns, "eth0") == {"10.0.0.2/24"}
        assert {r for r in await routes(pod.ns) if r[0] == 6} == set()
        assert {r for r in expected_routes(0) if r[0] == 4} <= await routes(pod.ns)
    finally:
        await agent.stop()


async def test_nic_that_never_appears_at_its_pci_path_times_out(
    make_pod: Callable[[int], Pod],
) -> None:
    pod = make_pod(1)
    agent = await start_agent_in(pod.ns, args=("--hotplug-timeout", "1"))
    try:
        before = await links(pod.ns)
        wanted = iface(0)
        wanted.devicePath = "1f"  # no NIC of this netns is there (sysfs hides other netns' NICs)
        message = await expect_error(
            agent,
            "UpdateInterface",
            agent_pb2.UpdateInterfaceRequest(interface=wanted),
            Code.DEADLINE_EXCEEDED,
            "PCI path 1f",
        )
        assert "Timeout" in message
        assert await links(pod.ns) == before
    finally:
        await agent.stop()


async def test_link_not_found_then_found_once_the_nic_is_plugged(pod_agent: Any) -> None:
    """The shim retries UpdateInterface on "Link not found" while the NIC is being hot-plugged."""
    pod, agent = await pod_agent(0)
    req = agent_pb2.UpdateInterfaceRequest(interface=iface(0))
    await expect_error(agent, "UpdateInterface", req, Code.NOT_FOUND, "Link not found")
    pod.add_nic(mac(0))
    got = await agent.call("UpdateInterface", req)
    assert got.name == "eth0"
    assert (await links(pod.ns))["eth0"]["mac"] == mac(0)


async def test_onlink_flag_and_ipv6_source_prefix(pod_agent: Any) -> None:
    pod, agent = await pod_agent(1)
    await agent.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface(0)))
    wanted = [
        # gateway outside every subnet of eth0: only accepted with RTNH_F_ONLINK
        types_pb2.Route(dest="10.77.0.0/16", gateway="192.168.200.1", device="eth0", flags=4),
        types_pb2.Route(dest="fd09::/64", source="fd00::/64", device="eth0", family=V6),
    ]
    done = await agent.call(
        "UpdateRoutes", agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=wanted))
    )
    reported = {(r.dest, r.gateway, r.source, r.flags) for r in done.Routes}
    assert ("10.77.0.0/16", "192.168.200.1", "", 4) in reported
    assert ("fd09::/64", "", "fd00::/64", 0) in reported
    kernel = {
        (m.get("RTA_DST"), m.get("RTA_SRC"), m["src_len"], m["flags"] & 4)
        for family in (socket.AF_INET, socket.AF_INET6)
        for m in await dump(pod.ns, "route", family=family)
        if m.get("RTA_TABLE") == 254
    }
    assert ("10.77.0.0", None, 0, 4) in kernel
    assert ("fd09::", "fd00::", 64, 0) in kernel


async def test_kernel_refusal_mid_update_rolls_the_link_back(pod_agent: Any) -> None:
    """Valid syntax the kernel refuses (a multicast address on an interface): the address added
    before it is removed again, and name, MTU and up state are as they were."""
    pod, agent = await pod_agent(1)
    await agent.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface(0)))
    before = (await links(pod.ns), await addresses(pod.ns, "eth0"))
    wanted = iface(0, name="renamed", mtu=1300)
    wanted.IPAddresses.append(types_pb2.IPAddress(address="10.0.0.5", mask="24"))
    wanted.IPAddresses.append(types_pb2.IPAddress(address="ff02::5", mask="128"))
    await expect_error(
        agent,
        "UpdateInterface",
        agent_pb2.UpdateInterfaceRequest(interface=wanted),
        Code.INVALID_ARGUMENT,
        "add address ff02::5/128 to eth0: Cannot assign requested address (EADDRNOTAVAIL)",
    )
    assert (await links(pod.ns), await addresses(pod.ns, "eth0")) == before


async def test_list_calls_at_once_are_all_answered(pod_agent: Any) -> None:
    """The kernel runs one dump per netlink socket at a time (EBUSY for a second): concurrent
    ListInterfaces and ListRoutes take turns on the agent's socket."""
    _pod, agent = await pod_agent(2)
    await configure(agent, 2)
    calls = [agent.call("ListInterfaces", agent_pb2.ListInterfacesRequest()) for _ in range(4)]
    calls += [agent.call("ListRoutes", agent_pb2.ListRoutesRequest()) for _ in range(4)]
    replies = await asyncio.gather(*calls)
    for listed in replies[:4]:
        assert {"lo", "eth0", "eth1"} <= {i.name for i in listed.Interfaces}
    for listed in replies[4:]:
        assert "10.100.0.0/16" in {r.dest for r in listed.Routes}
