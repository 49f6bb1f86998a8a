"""grpc.AgentService with each area imported on the area's first call (idle memory).

``AgentServicer`` (``agent.rpc.agent_servicer``) composes every area's handler mixin, which imports
every area's services, converters and subsystems (the OCI engine, netlink, metrics, ...): memory
an idle agent never uses (docs/performance.md). ``LazyAgentServicer`` answers the same methods
with small stubs; the first call of an area imports that area's handler module and services in a
worker thread (the loop keeps serving meanwhile), then every call of the area goes straight to
the area's handlers.

``AREAS`` names each area's methods, so the stubs exist before the area is imported (the dispatcher
binds methods when AgentService comes up). ``tests/unit/rpc/test_lazy_servicer.py`` checks that
the table matches the mixins of ``AgentServicer`` exactly.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.rpc.dispatch import NOW_PREFIX
from agent.rpc.handlers import HandlerBase
from agent.services import Services


@dataclass(frozen=True, slots=True)
class Area:
    module: str  # the handler mixin's module
    mixin: str  # the handler mixin's class name
    methods: tuple[str, ...]
    services: tuple[str, ...] = ()  # Services fields the area uses, built on its first call
    now: tuple[str, ...] = ()  # methods with a synchronous variant (agent.rpc.dispatch.NowHandler)


AREAS: dict[str, Area] = {
    "containers": Area(
        "agent.rpc.handlers.containers",
        "ContainerHandlers",
        (
            "CloseStdin",
            "CreateContainer",
            "CreateSandbox",
            "DestroySandbox",
            "ExecProcess",
            "GetOOMEvent",
            "PauseContainer",
            "ReadStderr",
            "ReadStdout",
            "RemoveContainer",
            "ResumeContainer",
            "SignalProcess",
            "StartContainer",
            "StatsContainer",
            "TtyWinResize",
            "UpdateContainer",
            "WaitProcess",
            "WriteStdin",
        ),
        ("sandbox", "containers", "processes", "stdio"),
        ("ReadStderr", "ReadStdout"),
    ),
    "guest": Area(
        "agent.rpc.handlers.guest",
        "GuestHandlers",
        ("CopyFile", "GetGuestDetails", "GetMetrics", "ReseedRandomDev", "SetGuestDateTime"),
        ("guest",),
    ),
    "storage": Area(
        "agent.rpc.handlers.storage",
        "StorageHandlers",
        (
            "AddSwap",
            "AddSwapPath",
            "GetVolumeStats",
            "MemAgentCompactSet",
            "MemAgentMemcgSet",
            "MemHotplugByProbe",
            "OnlineCPUMem",
            "RemoveStaleVirtiofsShareMounts",
            "ResizeVolume",
            "UpdateEphemeralMounts",
        ),
        ("hardware",),
    ),
    "policy": Area("agent.rpc.handlers.policy", "PolicyHandlers", ("SetPolicy",), ("policy",)),
    "network": Area(
        "agent.rpc.handlers.network",
        "NetworkHandlers",
        (
            "AddARPNeighbors",
            "GetIPTables",
            "ListInterfaces",
            "ListRoutes",
            "SetIPTables",
            "UpdateInterface",
            "UpdateRoutes",
        ),
        ("network",),
    ),
}


class LazyAgentServicer(HandlerBase):
    """Every method of ``AREAS`` as a stub that loads its area once, then delegates."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._loaded: dict[str, HandlerBase] = {}
        self._loading: dict[str, asyncio.Lock] = {}

    async def area(self, name: str) -> HandlerBase:
        """The handlers of area ``name``, importing the area (in a worker thread) and building
        its services on first use. Concurrent first calls wait for the same load."""
        handlers = self._loaded.get(name)
        if handlers is not None:
            return handlers
        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:
            handlers = self._loaded.get(name)
            if handlers is None:
                spec = AREAS[name]
                modules = (spec.module, *self.services.modules_of(spec.services))
                await asyncio.to_thread(_import_all, modules)
                for field in spec.services:  # build them on the loop (some start helpers)
                    getattr(self.services, field)
                cls = getattr(importlib.import_module(spec.module), spec.mixin)
                handlers = cls.__new__(cls)
                handlers.services = self.services
                self._loaded[name] = handlers
        return handlers


def _import_all(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def _stub(area: str, method: str) -> Callable[[LazyAgentServicer, Any], Awaitable[Any]]:
    async def call(self: LazyAgentServicer, req: Any) -> Any:
        handlers = await self.area(area)
        return await getattr(handlers, method)(req)

    call.__name__ = call.__qualname__ = method
    return call


def _now_stub(area: str, method: str) -> Callable[[LazyAgentServicer, Any], Any]:
    """The synchronous variant: None (take the async stub, which loads the area) until the area
    is loaded, then the area's own."""
    name = NOW_PREFIX + method

    def call(self: LazyAgentServicer, req: Any) -> Any:
        handlers = self._loaded.get(area)
        if handlers is None:
            return None
        return getattr(handlers, name)(req)

    call.__name__ = call.__qualname__ = name
    return call


for _area_name, _area in AREAS.items():
    for _method in _area.methods:
        setattr(LazyAgentServicer, _method, _stub(_area_name, _method))
    for _method in _area.now:
        setattr(LazyAgentServicer, NOW_PREFIX + _method, _now_stub(_area_name, _method))
del _area_name, _area, _method
