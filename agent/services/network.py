"""Network use cases: UpdateInterface, UpdateRoutes, ListInterfaces, ListRoutes, AddARPNeighbors,
GetIPTables, SetIPTables. (The guest resolv.conf is written by CreateSandbox through
`agent.network.dns`; `lo` is brought up by `agent.boot.pid1` without netlink.)

Each mutating call reads the kernel state, builds a plan (which validates the whole request), then
applies it; calls that change links, routes or neighbours are serialised by one lock so that two
plans never interleave. pyroute2 is loaded on the first call that needs netlink, not before.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from agent import spawn
from agent.errors import DeadlineExceeded
from agent.network import interfaces, pcinet, routes
from agent.network.iptables import IPTables
from agent.network.model import ARPNeighbor, Interface, Route
from agent.network.netlink import Netlink
from agent.spawn import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPaths:
    """Filesystem roots the service reads or writes (parameters so tests can use temp dirs)."""

    run_dir: str = "/run/kata-containers"  # state root (no network file lives there yet)
    sysfs_root: str = "/sys"
    proc_sys_root: str = "/proc/sys"


class NetworkService:
    def __init__(
        self,
        *,
        hotplug_timeout: float,
        paths: NetworkPaths | None = None,
        netlink: Netlink | None = None,
        run: Runner | None = None,
        nic_by_pci_path: Callable[[str], Awaitable[str]] | None = None,
    ) -> None:
        self._hotplug_timeout = hotplug_timeout
        self._paths = paths or NetworkPaths()
        self._nl = netlink or Netlink()
        self._run = run
        self._nic_by_pci_path = nic_by_pci_path
        self._lock = asyncio.Lock()

    @property
    def netlink(self) -> Netlink:
        return self._nl

    def close(self) -> None:
        self._nl.close()

    async def warm(self) -> None:
        """Load what the first netlink call would (pyroute2, on its thread): for a preload."""
        await self._nl.open()

    def ipv6_enabled(self, link_name: str) -> bool:
        """False when the guest has no IPv6 or it is disabled globally or on the link."""
        base = os.path.join(self._paths.proc_sys_root, "net", "ipv6", "conf")
        if not os.path.isdir(base):
            return False
        for conf in ("all", link_name):
            try:
                with open(os.path.join(base, conf, "disable_ipv6")) as f:
                    if f.read().strip() == "1":
                        return False
            except OSError:
                continue
        return True

    # ---- interfaces --------------------------------------------------------------------------

    async def update_interface(self, wanted: Interface) -> Interface:
        pci_netdev = None
        if wanted.device_path:
            pci_netdev = await self._wait_for_nic(wanted.device_path)
        async with self._lock:
            links = await self._nl.links()
            addresses = await self._nl.addresses()
            the_plan = interfaces.plan(
                links, addresses, wanted, ipv6_enabled=self.ipv6_enabled, pci_netdev=pci_netdev
            )
            for skipped in the_plan.skipped:
                log.info("IPv6 disabled in the guest: address %s skipped", skipped)
            await interfaces.apply(self._nl, the_plan)
            link = await self._nl.link(the_plan.link.index)
            return interfaces.to_interface(link, await self._nl.addresses(link.index), wanted)

    async def _wait_for_nic(self, pci_path: str) -> str:
        """The netdev at `pci_path`: through the devices layer's uevent-backed lookup when the
        agent wired one in (`agent.devices.lookup.DeviceLookup.net_by_pci_path`), else by polling
        sysfs; both bounded by the hot-plug timeout."""
        if self._nic_by_pci_path is None:
            return await pcinet.wait_for_netdev_until(
                self._paths.sysfs_root, pci_path, self._hotplug_timeout
            )
        try:
            async with asyncio.timeout(self._hotplug_timeout):
                return await self._nic_by_pci_path(pci_path)
        except TimeoutError:
            raise DeadlineExceeded(
                f"Timeout after {self._hotplug_timeout:g} s waiting for uevent of the network "
                f"interface at PCI path {pci_path}"
            ) from None

    async def list_interfaces(self) -> list[Interface]:
        links = await self._nl.links()
        addresses = await self._nl.addresses()
        return [interfaces.to_interface(link, addresses, Interface()) for link in links]

    # ---- routes and neighbours ---------------------------------------------------------------

    async def update_routes(self, wanted: Sequence[Route]) -> list[Route]:
        async with self._lock:
            links = await self._nl.links()
            before = await routes.main_table(self._nl)
            the_plan = routes.plan(
                wanted,
                links,
                await self._nl.addresses(),
                before,
                ipv6_enabled=self.ipv6_enabled,
            )
            for skipped in the_plan.skipped:
                log.info("IPv6 disabled in the guest: route %s skipped", skipped.describe())
            await routes.apply(self._nl, the_plan, before)
            return routes.to_routes(await routes.main_table(self._nl), links)

    async def list_routes(self) -> list[Route]:
        links = await self._nl.links()
        return routes.to_routes(await routes.main_table(self._nl), links)

    async def add_arp_neighbors(self, neighbors: Sequence[ARPNeighbor]) -> None:
        async with self._lock:
            ops = routes.plan_neighbors(neighbors, await self._nl.links())
            await routes.apply_neighbors(self._nl, ops)

    # ---- iptables ----------------------------------------------------------------------------

    def _iptables(self) -> IPTables:
        return IPTables(self._run or spawn.run)

    async def get_iptables(self, is_ipv6: bool) -> bytes:
        return await self._iptables().get(is_ipv6)

    async def set_iptables(self, is_ipv6: bool, data: bytes) -> bytes:
        return await self._iptables().set(is_ipv6, data)
