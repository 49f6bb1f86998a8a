"""A thin async adapter over pyroute2's AsyncIPRoute: the only module that uses pyroute2.

pyroute2 is slow to import and large (docs/performance.md), so it is imported on first use
(``agent.imports.import_async_iproute``), never at agent start-up, on the adapter's own thread
(pyroute2 cannot run on uvloop; see `_NetlinkThread`). The adapter
speaks the model of `agent.network.model` and turns `NetlinkError` into `agent.errors` with a
message naming the step and the errno: this is the OS→domain edge for networking.

The socket is opened without multicast groups: the agent only sends requests and reads their
answers, so no event can pile up in the receive buffer.

Tests may inject an `AsyncIPRoute`-like object (for instance one built in another network
namespace with `AsyncIPRoute(netns=...)`, or on pyroute2's `IPEngine` mock) through `ipr=`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import threading
from typing import Any, Protocol

from agent import imports
from agent.errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from agent.network.model import (
    IPAddress,
    KernelRoute,
    Link,
    LinkAddress,
)

log = logging.getLogger(__name__)

# Next-hop flags a route request may carry (RTNH_F_PERVASIVE, RTNH_F_ONLINK); the others the kernel
# reports (RTNH_F_LINKDOWN, RTNH_F_DEAD, ...) are state and refused in a request.
_NEXTHOP_FLAGS = 0x2 | 0x4

_ERRNO_CLASS: dict[int, type[AgentError]] = {
    errno.ENODEV: NotFound,
    errno.ENOENT: NotFound,
    errno.ESRCH: NotFound,
    errno.EADDRNOTAVAIL: InvalidArgument,
    errno.EEXIST: AlreadyExists,
    errno.EINVAL: InvalidArgument,
    errno.ERANGE: InvalidArgument,
    errno.EAFNOSUPPORT: InvalidArgument,
    errno.ENETUNREACH: FailedPrecondition,
    errno.EHOSTUNREACH: FailedPrecondition,
    errno.ENETDOWN: FailedPrecondition,
    errno.EBUSY: FailedPrecondition,
    errno.EPERM: PermissionDenied,
    errno.EACCES: PermissionDenied,
    errno.ENOBUFS: Unavailable,
    errno.EAGAIN: Unavailable,
}


def to_agent_error(step: str, err: BaseException) -> AgentError:
    """`step: strerror (ENAME)` as the domain error matching the errno."""
    code = getattr(err, "code", None)
    if not isinstance(code, int):
        code = getattr(err, "errno", None)
    if isinstance(code, int) and code > 0:
        name = errno.errorcode.get(code, str(code))
        cls = _ERRNO_CLASS.get(code, Internal)
        return cls(f"{step}: {os.strerror(code)} ({name})")
    return Internal(f"{step}: {err}")


class RouteSocket(Protocol):
    """What the adapter needs of pyroute2's AsyncIPRoute (so tests can hand in another)."""

    async def link(self, command: str, **kwarg: Any) -> Any: ...
    async def addr(self, command: str, **kwarg: Any) -> Any: ...
    async def route(self, command: str, **kwarg: Any) -> Any: ...
    async def neigh(self, command: str, **kwarg: Any) -> Any: ...
    def close(self) -> Any: ...


class _NetlinkThread:
    """A plain asyncio loop on its own thread, where pyroute2 lives.

    pyroute2 opens its netlink socket with `loop.create_datagram_endpoint`, which uvloop (the
    agent's loop) refuses for AF_NETLINK ("cannot open a UDP handle, invalid family 16";
    svinota/pyroute2#1335, MagicStack/uvloop#676). So pyroute2 runs on a standard selector loop
    in one daemon thread; calls cross over with `run_coroutine_threadsafe`, which costs tens of
    microseconds, and the agent's loop never blocks. The thread is started on first use, and the
    import of pyroute2 happens there too.
    """

    def __init__(self) -> None:
        self.loop = asyncio.SelectorEventLoop()
        self.ipr: Any = None
        self._thread = threading.Thread(target=self._run, name="netlink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def open(self) -> None:
        self.ipr = imports.import_async_iproute()(groups=0)
        log.debug("pyroute2 loaded")

    def close(self) -> None:
        async def shutdown() -> None:
            if self.ipr is not None:
                self.ipr.close()

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


class Netlink:
    """rtnetlink in the agent's network namespace. Create once; `close()` at shutdown.

    Without `ipr`, pyroute2 is loaded on first use and runs on its own thread (see
    `_NetlinkThread`); an injected `ipr` is used on the caller's loop (tests).
    """

    def __init__(self, ipr: RouteSocket | None = None) -> None:
        self._ipr = ipr
        self._thread: _NetlinkThread | None = None
        self._lock = asyncio.Lock()
        # The kernel runs one dump at a time per netlink socket: a second one fails with EBUSY.
        self._dump_lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._ipr is not None or self._thread is not None

    async def open(self) -> None:
        """Load pyroute2 and start its thread now, rather than on the first call."""
        if self._ipr is None:
            await self._start_thread()

    async def _start_thread(self) -> _NetlinkThread:
        if self._thread is None:
            async with self._lock:
                if self._thread is None:
                    worker = _NetlinkThread()
                    try:
                        await asyncio.wrap_future(
                            asyncio.run_coroutine_threadsafe(worker.open(), worker.loop)
                        )
                    except BaseException:
                        await asyncio.to_thread(worker.close)
                        raise
                    self._thread = worker
        return self._thread

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._thread is not None:
            self._thread.close()
            self._thread = None

    async def _call(self, step: str, method: str, command: str, **kwarg: Any) -> Any:
        if command == "dump":
            async with self._dump_lock:
                return await self._request(step, method, command, **kwarg)
        return await self._request(step, method, command, **kwarg)

    async def _request(self, step: str, method: str, command: str, **kwarg: Any) -> Any:
        async def call(ipr: Any) -> Any:
            result = await getattr(ipr, method)(command, **kwarg)
            if command == "dump":
                return [msg async for msg in result]
            return result

        try:
            if self._ipr is not None:
                return await call(self._ipr)
            worker = await self._start_thread()
            return await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(call(worker.ipr), worker.loop)
            )
        except AgentError:
            raise
        except Exception as err:
            if type(err).__name__ == "NetlinkError" or isinstance(err, OSError):
                raise to_agent_error(step, err) from err
            raise

    # ---- links -------------------------------------------------------------------------------

    async def links(self) -> list[Link]:
        return [_link(m) for m in await self._call("list links", "link", "dump")]

    async def link(self, index: int) -> Link:
        msgs = await self._call(f"get link {index}", "link", "get", index=index)
        return _link(msgs[0])

    async def set_link(
        self,
        link: Link,
        *,
        name: str | None = None,
        mac: str | None = None,
        mtu: int | None = None,
        flags: int = 0,
        change: int = 0,
        step: str | None = None,
    ) -> None:
        """One RTM_NEWLINK for `link`: the name, MAC, MTU and the `change` bits of `flags`."""
        kwarg: dict[str, Any] = {"index": link.index}
        if name is not None:
            kwarg["ifname"] = name
        if mac is not None:
            kwarg["address"] = mac
        if mtu is not None:
            kwarg["mtu"] = mtu
        if change:
            kwarg["flags"] = flags
            kwarg["change"] = change
        await self._call(step or f"set link {link.name}", "link", "set", **kwarg)

    # ---- addresses ---------------------------------------------------------------------------

    async def addresses(self, index: int | None = None) -> list[LinkAddress]:
        kwarg: dict[str, Any] = {}
        if index is not None:
            kwarg["index"] = index
        msgs = await self._call("list addresses", "addr", "dump", **kwarg)
        out = []
        for m in msgs:
            addr = m.get("IFA_ADDRESS") if m["family"] == socket.AF_INET6 else m.get("IFA_LOCAL")
            addr = addr or m.get("IFA_ADDRESS")
            if not addr:
                continue
            out.append(
                LinkAddress(m["index"], IPAddress(ipaddress.ip_address(addr), m["prefixlen"]))
            )
        return [a for a in out if index is None or a.index == index]

    async def replace_address(self, link: Link, address: IPAddress) -> None:
        await self._call(
            f"add address {address} to {link.name}",
            "addr",
            "replace",
            index=link.index,
            address=str(address.address),
            prefixlen=address.prefix_len,
            family=_af(address.family),
        )

    async def delete_address(self, link: Link, address: IPAddress) -> None:
        await self._call(
            f"delete address {address} from {link.name}",
            "addr",
            "del",
            index=link.index,
            address=str(address.address),
            prefixlen=address.prefix_len,
            family=_af(address.family),
        )

    # ---- routes ------------------------------------------------------------------------------

    async def routes(self, family: int, table: int | None = None) -> list[KernelRoute]:
        msgs = await self._call(f"list IPv{family} routes", "route", "dump", family=_af(family))
        routes = [_route(m) for m in msgs]
        return [r for r in routes if table is None or r.table == table]

    async def replace_route(self, route: KernelRoute, step: str) -> None:
        await self._call(step, "route", "replace", **_route_kwarg(route))

    async def delete_route(self, route: KernelRoute, step: str) -> None:
        await self._call(step, "route", "del", **_route_kwarg(route))

    # ---- neighbours --------------------------------------------------------------------------

    async def replace_neighbor(
        self,
        *,
        index: int,
        address: ipaddress.IPv4Address | ipaddress.IPv6Address,
        lladdr: str,
        state: int,
        flags: int,
        step: str,
    ) -> None:
        kwarg: dict[str, Any] = {
            "ifindex": index,
            "dst": str(address),
            "family": _af(address.version),
            "state": state,
            "flags": flags,
        }
        if lladdr:
            kwarg["lladdr"] = lladdr
        await self._call(step, "neigh", "replace", **kwarg)


def _af(family: int) -> int:
    return socket.AF_INET6 if family == 6 else socket.AF_INET


def _link(m: Any) -> Link:
    return Link(
        index=m["index"],
        name=m.get("IFLA_IFNAME") or "",
        mac=(m.get("IFLA_ADDRESS") or "").lower(),
        mtu=m.get("IFLA_MTU") or 0,
        flags=m["flags"],
        min_mtu=m.get("IFLA_MIN_MTU") or 0,
        max_mtu=m.get("IFLA_MAX_MTU") or 0,
    )


def _route(m: Any) -> KernelRoute:
    family = 6 if m["family"] == socket.AF_INET6 else 4
    dst = m.get("RTA_DST")
    src = m.get("RTA_SRC")
    gateway = m.get("RTA_GATEWAY")
    prefsrc = m.get("RTA_PREFSRC")
    mtu = 0
    metrics = m.get("RTA_METRICS")
    if metrics is not None:
        mtu = metrics.get("RTAX_MTU") or 0
    table = m.get("RTA_TABLE") or m["table"]
    return KernelRoute(
        family=family,
        table=table,
        dst=ipaddress.ip_network(f"{dst}/{m['dst_len']}", strict=False) if dst else None,
        oif=m.get("RTA_OIF"),
        gateway=ipaddress.ip_address(gateway) if gateway else None,
        src=ipaddress.ip_network(f"{src}/{m['src_len']}", strict=False) if src else None,
        prefsrc=ipaddress.ip_address(prefsrc) if prefsrc else None,
        scope=m["scope"],
        proto=m["proto"],
        type=m["type"],
        flags=m["flags"] & _NEXTHOP_FLAGS,
        mtu=mtu,
        priority=m.get("RTA_PRIORITY") or 0,
        tos=m["tos"],
    )


def _route_kwarg(r: KernelRoute) -> dict[str, Any]:
    kwarg: dict[str, Any] = {
        "family": _af(r.family),
        "table": r.table,
        "proto": r.proto,
        "type": r.type,
        "scope": r.scope,
        "tos": r.tos,
        "dst_len": r.dst.prefixlen if r.dst is not None else 0,
    }
    if r.dst is not None:
        kwarg["dst"] = str(r.dst.network_address)
    if r.oif is not None:
        kwarg["oif"] = r.oif
    if r.gateway is not None:
        kwarg["gateway"] = str(r.gateway)
    if r.src is not None:
        kwarg["src"] = str(r.src.network_address)
        kwarg["src_len"] = r.src.prefixlen
    if r.prefsrc is not None:
        kwarg["prefsrc"] = str(r.prefsrc)
    if r.priority:
        kwarg["priority"] = r.priority
    if r.flags:
        kwarg["flags"] = r.flags
    if r.mtu:
        kwarg["metrics"] = {"mtu": r.mtu}
    return kwarg
