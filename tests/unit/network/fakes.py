"""A recording fake of `agent.network.netlink.Netlink` for the apply/rollback unit tests."""

from __future__ import annotations

from typing import Any

from agent.errors import AgentError
from agent.network.model import IPAddress, KernelRoute, Link, LinkAddress


class FakeNetlink:
    def __init__(
        self,
        links: list[Link] | None = None,
        routes: list[KernelRoute] | None = None,
        fail_on: str | None = None,
        error: AgentError | None = None,
    ) -> None:
        self.links_ = list(links or [])
        self.routes_ = list(routes or [])
        self.calls: list[tuple[str, Any]] = []
        self.fail_on = fail_on
        self.error = error

    def _record(self, name: str, arg: Any, step: str = "") -> None:
        self.calls.append((name, arg))
        if self.fail_on is not None and self.fail_on in step:
            assert self.error is not None
            raise self.error

    async def links(self) -> list[Link]:
        return list(self.links_)

    async def addresses(self, index: int | None = None) -> list[LinkAddress]:
        return []

    async def set_link(self, link: Link, *, step: str | None = None, **kw: Any) -> None:
        self._record("set_link", (link.index, kw), step or "")

    async def replace_address(self, link: Link, address: IPAddress) -> None:
        self._record("replace_address", (link.index, str(address)), f"add address {address}")

    async def delete_address(self, link: Link, address: IPAddress) -> None:
        self._record("delete_address", (link.index, str(address)))

    async def routes(self, family: int, table: int | None = None) -> list[KernelRoute]:
        return [r for r in self.routes_ if r.family == family]

    async def replace_route(self, route: KernelRoute, step: str) -> None:
        self._record("replace_route", route, step)
        self.routes_ = [r for r in self.routes_ if not _same_key(r, route)] + [route]

    async def delete_route(self, route: KernelRoute, step: str) -> None:
        self._record("delete_route", route, step)
        self.routes_ = [r for r in self.routes_ if r != route]


def _same_key(a: KernelRoute, b: KernelRoute) -> bool:
    return (a.family, a.table, a.dst, a.src, a.tos, a.priority) == (
        b.family,
        b.table,
        b.dst,
        b.src,
        b.tos,
        b.priority,
    )
