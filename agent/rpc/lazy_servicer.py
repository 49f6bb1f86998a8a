"""grpc.AgentService with each area imported on the area's first call, or in the background.

``AgentServicer`` (``agent.rpc.agent_servicer``) composes every area's handler mixin, which imports
every area's services, converters and subsystems (the OCI engine, netlink, metrics, ...): memory
an idle agent never uses (docs/performance.md). ``LazyAgentServicer`` answers the same methods
with small stubs; the first call of an area imports that area's handler module and services in a
worker thread (the loop keeps serving meanwhile), then every call of the area goes straight to
the area's handlers. ``preload`` loads areas the same way before anyone calls them (a guest's
agent: ``agent.config.areas_to_preload``), so the runtime's first calls do not wait for imports.
It starts an area only while no AgentService call is being served (long-polls parked on a
process do not count): an import competes with a call for the GIL and, on a one-vCPU guest, the
CPU, so a call that is already running is not made slower by a load it did not ask for.

One load per area at a time: a call of an area that is loading waits for that load, whoever
started it. Areas import one after the other (a lock), never in two threads at once: the import
system can hand a thread a partly executed module when two threads import modules that import
each other, and the loop would share the GIL with two importers instead of one. A failed load is
logged and not remembered: the call that waited gets an ``Internal`` error naming the area and the
cause, and the next call loads again (a call that waited for a failed preload tries once itself).

``AREAS`` names each area's methods, so the stubs exist before the area is imported (the dispatcher
binds methods when AgentService comes up). ``tests/unit/rpc/test_lazy_servicer.py`` checks that
the table matches the mixins of ``AgentServicer`` exactly.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.errors import Internal
from agent.rpc.dispatch import NOW_PREFIX
from agent.rpc.handlers import HandlerBase
from agent.services import Services

log = logging.getLogger(__name__)

#: Long-polls that wait for a process (its output, its exit, an OOM) for as long as it lives: a
#: call parked there does not keep the preload waiting.
PARKED = frozenset({"GetOOMEvent", "ReadStderr", "ReadStdout", "WaitProcess"})


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
        # area -> (the load in progress, who started it: "call" or "preload")
        self._loading: dict[str, tuple[asyncio.Task[HandlerBase], str]] = {}
        self._import_lock = asyncio.Lock()
        self._serving = 0  # calls in progress, PARKED ones aside
        self._idle = asyncio.Event()
        self._idle.set()

    def loaded(self, name: str) -> bool:
        return name in self._loaded

    async def area(self, name: str) -> HandlerBase:
        """The handlers of area ``name``, importing the area (in a worker thread) and building
        its services on first use. Concurrent first calls wait for the same load."""
        handlers = self._loaded.get(name)
        if handlers is not None:
            return handlers
        loading = self._loading.get(name)
        try:
            return await self._wait(name, "call")
        except Internal:
            if loading is None or loading[1] != "preload":
                raise
        # The preload this call waited for failed: whatever stopped it may have passed.
        return await self._wait(name, "call")

    async def preload(self, names: Iterable[str]) -> None:
        """Load the areas ``names`` one after the other, before their first call, each once no
        call is being served (module docstring). A failure is logged and the next area is
        loaded; the failed area loads again on its first call."""
        t0 = time.perf_counter()
        loaded = []
        for name in names:
            await self._idle.wait()
            if name in self._loaded:
                continue
            try:
                await self._wait(name, "preload")
            except Internal:
                continue  # logged by _load
            loaded.append(name)
        log.info(
            "areas preloaded",
            extra={"areas": loaded, "ms": round((time.perf_counter() - t0) * 1e3, 1)},
        )

    async def _wait(self, name: str, by: str) -> HandlerBase:
        """Join the load of ``name`` in progress, or start one; a caller that goes away (its
        deadline, its client) leaves the load running for the others."""
        handlers = self._loaded.get(name)
        if handlers is not None:
            return handlers
        loading = self._loading.get(name)
        if loading is None:
            loading = (asyncio.get_running_loop().create_task(self._load(name, by)), by)
            self._loading[name] = loading
        return await asyncio.shield(loading[0])

    async def _load(self, name: str, by: str) -> HandlerBase:
        spec = AREAS[name]
        try:
            async with self._import_lock:
                t0 = time.perf_counter()
                modules = (spec.module, *self.services.modules_of(spec.services))
                await asyncio.to_thread(_import_all, modules)
                t1 = time.perf_counter()
                for field in spec.services:  # build them on the loop (some start helpers)
                    service = getattr(self.services, field)
                    warm = getattr(service, "warm", None)
                    if warm is not None:  # what it would load on first use (pyroute2)
                        await warm()
                cls = getattr(importlib.import_module(spec.module), spec.mixin)
                handlers: HandlerBase = cls.__new__(cls)
                handlers.services = self.services
                self._loaded[name] = handlers
        except Exception as err:
            cause = f"{type(err).__name__}: {err}"
            log.error(  # the traceback goes to "error": which import failed, and where
                "area not loaded", exc_info=True, extra={"area": name, "by": by, "cause": cause}
            )
            raise Internal(f"grpc.AgentService: cannot load the {name} area: {cause}") from err
        finally:
            del self._loading[name]
        log.info(
            "area loaded",
            extra={
                "area": name,
                "by": by,
                "import_ms": round((t1 - t0) * 1e3, 1),
                "build_ms": round((time.perf_counter() - t1) * 1e3, 1),
            },
        )
        return handlers


def _import_all(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def _stub(area: str, method: str) -> Callable[[LazyAgentServicer, Any], Awaitable[Any]]:
    async def call(self: LazyAgentServicer, req: Any) -> Any:
        handlers = await self.area(area)
        return await getattr(handlers, method)(req)

    async def serving(self: LazyAgentServicer, req: Any) -> Any:
        self._serving += 1
        self._idle.clear()
        try:
            return await call(self, req)
        finally:
            self._serving -= 1
            if not self._serving:
                self._idle.set()

    stub = call if method in PARKED else serving
    stub.__name__ = stub.__qualname__ = method
    return stub


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
