"""Network bench: UpdateInterface + UpdateRoutes for a pod with 1 and 8 NICs, and the agent's RSS
before and after pyroute2 is first used.

    .venv/bin/python bench/network.py [--iterations 20]

For each pod size a real agent runs inside a fresh network namespace (`ip netns exec`), with veth
pairs whose other ends sit in a second namespace (nothing touches the machine's own network).
One round is what the Go shim sends at sandbox start: one UpdateInterface per NIC (IPv4 + IPv6
address, MTU, rename), then one UpdateRoutes (per NIC a link route with preferred source, a
gateway route with an MTU and an IPv6 gateway route, plus the IPv4 and IPv6 default routes).
Between rounds the namespace is put back from outside (routes deleted, addresses flushed, links
down and renamed back), so every round does the full work. Times are wall-clock at the client,
RPC round trips included. RSS is the agent's VmRSS after start-up (Check answered, no network
call yet) and after the first round (pyroute2 imported, its thread and socket up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyroute2 import AsyncIPRoute  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402

from agent.rpc.pb import agent_pb2, types_pb2  # noqa: E402
from tests.root.network.netns import Pod  # noqa: E402
from tests.root.network.support import AgentInNetns, start_agent_in  # noqa: E402

RTPROT_BOOT = 3


def mac(i: int) -> str:
    return f"02:00:5e:00:02:{i:02x}"


def interface(i: int) -> types_pb2.Interface:
    return types_pb2.Interface(
        name=f"eth{i}",
        hwAddr=mac(i),
        mtu=1450,
        IPAddresses=[
            types_pb2.IPAddress(family=types_pb2.v4, address=f"10.{i}.0.2", mask="24"),
            types_pb2.IPAddress(family=types_pb2.v6, address=f"fd00:{i}::2", mask="64"),
        ],
    )


def routes(nics: int) -> list[types_pb2.Route]:
    out = []
    for i in range(nics):
        dev = f"eth{i}"
        out += [
            types_pb2.Route(dest=f"10.{i}.0.0/24", device=dev, source=f"10.{i}.0.2", scope=253),
            types_pb2.Route(
                dest=f"10.{100 + i}.0.0/16", gateway=f"10.{i}.0.1", device=dev, mtu=1400
            ),
            types_pb2.Route(
                dest=f"fd01:{i}::/64", gateway=f"fd00:{i}::1", device=dev, family=types_pb2.v6
            ),
        ]
    out.append(types_pb2.Route(gateway="10.0.0.1", device="eth0"))
    out.append(types_pb2.Route(gateway="fd00::1", device="eth0", family=types_pb2.v6))
    return out


async def one_round(agent: AgentInNetns, nics: int) -> float:
    start = time.perf_counter()
    for i in range(nics):
        await agent.call(
            "UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=interface(i))
        )
    await agent.call(
        "UpdateRoutes",
        agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=routes(nics))),
    )
    return time.perf_counter() - start


async def reset(pod: Pod, nics: int) -> None:
    """Undo a round from outside the agent: routes, addresses, names, MTU, up."""
    async with AsyncIPRoute(netns=pod.ns) as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in [m async for m in await ipr.route("dump", family=family)]:
                if r["proto"] == RTPROT_BOOT and r.get("RTA_TABLE") == 254:
                    with contextlib.suppress(NetlinkError):  # gone with an earlier one
                        await ipr.route("del", **_route_key(r, family))
        links = {m.get("IFLA_IFNAME"): m["index"] async for m in await ipr.link("dump")}
        for i in range(nics):
            index = links[f"eth{i}"]
            await ipr.link("set", index=index, flags=0, change=1)
            for a in [m async for m in await ipr.addr("dump", index=index)]:
                addr = a.get("IFA_LOCAL") or a.get("IFA_ADDRESS")
                if a["index"] == index and not addr.startswith("fe80"):
                    await ipr.addr("del", index=index, address=addr, prefixlen=a["prefixlen"])
            await ipr.link("set", index=index, ifname=f"tap{i}", mtu=1500)


def _route_key(r: object, family: int) -> dict[str, object]:
    m = r  # a pyroute2 rtmsg
    key: dict[str, object] = {
        "family": family,
        "table": 254,
        "dst_len": m["dst_len"],  # type: ignore[index]
        "tos": m["tos"],  # type: ignore[index]
    }
    for attr, name in (("RTA_DST", "dst"), ("RTA_PRIORITY", "priority"), ("RTA_OIF", "oif")):
        value = m.get(attr)  # type: ignore[attr-defined]
        if value is not None:
            key[name] = value
    return key


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def bench(nics: int, iterations: int) -> dict[str, float]:
    with Pod.create("knb") as pod:
        for i in range(nics):
            pod.add_nic(mac(i))
        agent = await start_agent_in(pod.ns, log_level="warn")
        try:
            rss_before = rss_kib(agent.process.pid)
            first = await one_round(agent, nics)
            rss_after = rss_kib(agent.process.pid)
            times = []
            for _ in range(iterations):
                await reset(pod, nics)
                times.append(await one_round(agent, nics))
        finally:
            await agent.stop()
    return {
        "nics": nics,
        "first_ms": first * 1000,
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--iterations", type=int, default=20)
    args = parser.parse_args()
    print(f"UpdateInterface x N + UpdateRoutes, {args.iterations} rounds after a first one")
    for nics in (1, 8):
        r = await bench(nics, args.iterations)
        print(
            f"{nics} NIC(s): median {r['median_ms']:.1f} ms "
            f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f}; first round {r['first_ms']:.1f} ms)"
            f" | agent RSS {r['rss_before_kib'] / 1024:.1f} MiB before pyroute2, "
            f"{r['rss_after_kib'] / 1024:.1f} MiB after "
            f"(+{(r['rss_after_kib'] - r['rss_before_kib']) / 1024:.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
