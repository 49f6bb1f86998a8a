"""LazyAgentServicer: the same methods as AgentServicer, each area loaded on its first call."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.lazy_servicer import AREAS, LazyAgentServicer
from agent.services import Services

REPO = Path(__file__).resolve().parents[3]


def _mixin_methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if n[:1].isupper() and inspect.iscoroutinefunction(v)}


def test_areas_match_the_mixins_of_agent_servicer() -> None:
    import importlib

    from agent.rpc.agent_servicer import AgentServicer

    mixins = {
        c for c in AgentServicer.__mro__[1:] if c.__module__.startswith("agent.rpc.handlers.")
    }
    listed = {getattr(importlib.import_module(a.module), a.mixin) for a in AREAS.values()}
    assert listed == mixins
    for area in AREAS.values():
        cls = getattr(importlib.import_module(area.module), area.mixin)
        assert set(area.methods) == _mixin_methods(cls), area.module
    every = [m for a in AREAS.values() for m in a.methods]
    assert len(every) == len(set(every))
    assert set(every) == {
        n for n in dir(AgentServicer) if n[:1].isupper() and callable(getattr(AgentServicer, n))
    }


def test_stubs_are_async_methods_named_as_the_contract() -> None:
    from agent.rpc.dispatch import AGENT_SERVICE, service_methods

    contract = set(service_methods(AGENT_SERVICE))
    for area in AREAS.values():
        for name in area.methods:
            assert name in contract
            stub = getattr(LazyAgentServicer, name)
            assert inspect.iscoroutinefunction(stub)
            assert stub.__name__ == name


def test_importing_the_lazy_servicer_loads_no_area() -> None:
    code = (
        "import sys, agent.rpc.lazy_servicer\n"
        "bad = [m for m in sys.modules if m.startswith(('agent.rpc.handlers.', 'agent.sandbox',"
        " 'agent.network', 'oci', 'agent.services.'))]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


class _Guest:
    def __init__(self) -> None:
        self.calls: list[Any] = []


async def test_first_call_builds_the_area_once_and_delegates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent.rpc.handlers import guest as guest_handlers

    services = Services(config=None)  # type: ignore[arg-type]
    builds: list[str] = []

    def build() -> None:
        builds.append("guest")
        services.guest = _Guest()  # type: ignore[assignment]

    services.lazy(("guest",), ("agent.metrics",), build)
    seen: list[tuple[object, object]] = []

    async def fake_details(self: Any, req: Any) -> str:
        seen.append((self.services.guest, req))
        return "reply"

    monkeypatch.setattr(guest_handlers.GuestHandlers, "GetGuestDetails", fake_details)
    servicer = LazyAgentServicer(services)
    assert not services.built("guest")
    replies = await asyncio.gather(*(servicer.GetGuestDetails(i) for i in range(5)))  # type: ignore[attr-defined]
    assert replies == ["reply"] * 5
    assert builds == ["guest"]
    assert [req for _, req in seen] == list(range(5))
    assert all(g is services.guest for g, _ in seen)
    assert services.built("guest")
    assert services.modules_of(("guest",)) == ()


def test_services_lazy_builds_siblings_together_and_retries_after_a_failure() -> None:
    services = Services(config=None)  # type: ignore[arg-type]
    attempts: list[int] = []

    def build() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("spawner did not start")
        services.sandbox = "sb"  # type: ignore[assignment]
        services.stdio = "io"  # type: ignore[assignment]

    services.lazy(("sandbox", "stdio"), ("m1", "m2"), build)
    assert services.modules_of(("sandbox", "network")) == ("m1", "m2")
    with pytest.raises(OSError, match="spawner"):
        _ = services.sandbox
    assert services.sandbox == "sb"  # type: ignore[comparison-overlap]
    assert services.stdio == "io"  # type: ignore[comparison-overlap]
    assert len(attempts) == 2
    with pytest.raises(AttributeError, match="network"):
        _ = services.network


def test_synchronous_variants_match_the_mixins_and_wait_for_the_area(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``Area.now`` lists exactly the mixin's ``try_`` methods; the lazy one answers None (take
    the async stub, which loads the area) until the area is loaded, then delegates."""
    import importlib

    from agent.rpc.dispatch import NOW_PREFIX

    for area in AREAS.values():
        cls = getattr(importlib.import_module(area.module), area.mixin)
        variants = {n[len(NOW_PREFIX) :] for n in vars(cls) if n.startswith(NOW_PREFIX)}
        assert set(area.now) == variants, area.module
        assert set(area.now) <= set(area.methods)

    from agent.rpc.handlers import containers

    seen: list[object] = []

    def fake_try(self: Any, req: Any) -> str:
        seen.append(req)
        return "at once"

    monkeypatch.setattr(containers.ContainerHandlers, "try_ReadStdout", fake_try)
    servicer = LazyAgentServicer(Services(config=None))  # type: ignore[arg-type]
    assert servicer.try_ReadStdout("req") is None  # type: ignore[attr-defined]
    assert seen == []
    servicer._loaded["containers"] = containers.ContainerHandlers.__new__(
        containers.ContainerHandlers
    )
    assert servicer.try_ReadStdout("req") == "at once"  # type: ignore[attr-defined]
    assert seen == ["req"]


# -- loads in the background (preload), shared loads, failures -----------------------------------


def test_area_names_of_the_configuration_are_the_areas() -> None:
    from agent.config import AREA_NAMES, GUEST_PRELOAD

    assert set(AREA_NAMES) == set(AREAS)
    assert set(GUEST_PRELOAD) <= set(AREAS)


class _Imports:
    """Stands in for ``_import_all``: records each area's import (by its handler module), can
    hold one back until released and fail the next N imports of an area."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.hold: dict[str, threading.Event] = {}
        self.entered: dict[str, threading.Event] = {}
        self.failures: dict[str, int] = {}

    def __call__(self, modules: tuple[str, ...]) -> None:
        area = next(n for n, a in AREAS.items() if a.module == modules[0])
        self.started.append(area)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            self.entered.setdefault(area, threading.Event()).set()
            hold = self.hold.get(area)
            if hold is not None:
                assert hold.wait(30)
            if self.failures.get(area):
                self.failures[area] -= 1
                raise ImportError(f"no module named {area}_broken")
        finally:
            self.running -= 1

    async def until_entered(self, area: str) -> None:
        event = self.entered.setdefault(area, threading.Event())
        await asyncio.to_thread(event.wait, 30)


def _fake_services() -> tuple[Services, list[str]]:
    """Services whose every area field is built by a recording builder."""
    services = Services(config=None)  # type: ignore[arg-type]
    builds: list[str] = []
    for name, area in AREAS.items():
        fields = area.services

        def build(name: str = name, fields: tuple[str, ...] = fields) -> None:
            builds.append(name)
            for f in fields:
                setattr(services, f, f"{f} of {name}")

        if fields:
            services.lazy(fields, (), build)
    return services, builds


@pytest.fixture
def imports(monkeypatch: pytest.MonkeyPatch) -> _Imports:
    from agent.rpc import lazy_servicer
    from agent.rpc.handlers import containers, guest, network

    fake = _Imports()
    monkeypatch.setattr(lazy_servicer, "_import_all", fake)

    async def reply(self: Any, req: Any) -> tuple[str, Any]:
        return ("served", req)

    for cls, method in (
        (containers.ContainerHandlers, "CreateSandbox"),
        (guest.GuestHandlers, "GetGuestDetails"),
        (network.NetworkHandlers, "UpdateInterface"),
    ):
        monkeypatch.setattr(cls, method, reply)
    return fake


async def test_preload_loads_the_areas_in_order_without_a_call(imports: _Imports) -> None:
    services, builds = _fake_services()
    servicer = LazyAgentServicer(services)
    await servicer.preload(["containers", "guest"])
    assert imports.started == ["containers", "guest"]
    assert builds == ["containers", "guest"]
    assert servicer.loaded("containers")
    assert servicer.loaded("guest")
    assert not servicer.loaded("network")
    assert await servicer.CreateSandbox("req") == ("served", "req")  # type: ignore[attr-defined]
    await servicer.preload(["containers", "guest"])  # loaded: nothing happens again
    assert imports.started == ["containers", "guest"]


async def test_calls_racing_the_preload_wait_for_its_load(imports: _Imports) -> None:
    """Calls of an area being preloaded wait for that load: one import, one build, every call
    served; a call of another area queues behind it and goes before the rest of the preload."""
    services, builds = _fake_services()
    servicer = LazyAgentServicer(services)
    imports.hold["containers"] = release = threading.Event()
    preload = asyncio.create_task(servicer.preload(["containers", "guest"]))
    await imports.until_entered("containers")
    calls = [asyncio.create_task(servicer.CreateSandbox(i)) for i in range(3)]  # type: ignore[attr-defined]
    other = asyncio.create_task(servicer.UpdateInterface("net"))  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    assert not any(c.done() for c in [*calls, other])
    release.set()
    assert [await c for c in calls] == [("served", i) for i in range(3)]
    assert await other == ("served", "net")
    await preload
    assert imports.started == ["containers", "network", "guest"]
    assert builds == ["containers", "network", "guest"]
    assert imports.most_at_once == 1  # one import thread at a time


async def test_a_caller_that_gives_up_leaves_the_load_running(imports: _Imports) -> None:
    services, builds = _fake_services()
    servicer = LazyAgentServicer(services)
    imports.hold["guest"] = release = threading.Event()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await servicer.GetGuestDetails("first")  # type: ignore[attr-defined]
    release.set()
    assert await servicer.GetGuestDetails("second") == ("served", "second")  # type: ignore[attr-defined]
    assert imports.started == ["guest"]
    assert builds == ["guest"]


async def test_a_failed_preload_is_logged_and_the_next_call_loads_again(
    imports: _Imports, caplog: pytest.LogCaptureFixture
) -> None:
    services, builds = _fake_services()
    servicer = LazyAgentServicer(services)
    imports.failures["guest"] = 1
    await servicer.preload(["guest", "containers"])  # no exception: the agent goes on
    assert servicer.loaded("containers")
    assert not servicer.loaded("guest")
    failed = [r for r in caplog.records if r.getMessage() == "area not loaded"]
    assert [(r.area, r.by) for r in failed] == [("guest", "preload")]  # type: ignore[attr-defined]
    assert "guest_broken" in failed[0].cause  # type: ignore[attr-defined]
    assert await servicer.GetGuestDetails("r") == ("served", "r")  # type: ignore[attr-defined]
    assert imports.started == ["guest", "containers", "guest"]
    assert builds == ["containers", "guest"]


async def test_a_call_waiting_for_a_failed_preload_tries_once_itself(imports: _Imports) -> None:
    from agent.errors import Internal

    services, _ = _fake_services()
    servicer = LazyAgentServicer(services)
    imports.hold["guest"] = release = threading.Event()
    imports.failures["guest"] = 1
    preload = asyncio.create_task(servicer.preload(["guest"]))
    await imports.until_entered("guest")
    call = asyncio.create_task(servicer.GetGuestDetails("r"))  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    release.set()
    assert await call == ("served", "r")  # the preload failed, the call's own load did not
    await preload
    assert imports.started == ["guest", "guest"]

    # Both fail: the call gets a clear error; the next call loads again and is served.
    imports.entered.clear()
    services, _ = _fake_services()
    servicer = LazyAgentServicer(services)
    imports.started.clear()
    imports.failures["guest"] = 2
    imports.hold["guest"] = release = threading.Event()
    preload = asyncio.create_task(servicer.preload(["guest"]))
    await imports.until_entered("guest")
    call = asyncio.create_task(servicer.GetGuestDetails("r"))  # type: ignore[attr-defined]
    await asyncio.sleep(0.05)
    release.set()
    with pytest.raises(Internal) as info:
        await call
    assert str(info.value) == (
        "grpc.AgentService: cannot load the guest area: ImportError: no module named guest_broken"
    )
    await preload
    assert await servicer.GetGuestDetails("again") == ("served", "again")  # type: ignore[attr-defined]
    assert imports.started == ["guest", "guest", "guest"]


async def test_a_call_whose_own_load_fails_gets_the_error_once(imports: _Imports) -> None:
    from agent.errors import Internal
    from agent.rpc.status import Code, to_status

    services, builds = _fake_services()
    servicer = LazyAgentServicer(services)
    imports.failures["containers"] = 1
    with pytest.raises(Internal) as info:
        await servicer.CreateSandbox("r")  # type: ignore[attr-defined]
    code, message = to_status(info.value, "/grpc.AgentService/CreateSandbox")
    assert code == Code.INTERNAL
    assert message.startswith("grpc.AgentService: cannot load the containers area: ImportError")
    assert imports.started == ["containers"]  # no retry within the call
    assert await servicer.CreateSandbox("r") == ("served", "r")  # type: ignore[attr-defined]
    assert builds == ["containers"]


async def test_a_failing_build_is_a_failed_load(
    imports: _Imports, caplog: pytest.LogCaptureFixture
) -> None:
    """The area's services are built after its import (the lifecycle starts the engine's
    spawner): a builder that raises fails the load the same way, and is retried."""
    services = Services(config=None)  # type: ignore[arg-type]
    attempts: list[int] = []

    def build() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError(24, "Too many open files")
        services.guest = "guest"  # type: ignore[assignment]

    services.lazy(("guest",), (), build)
    servicer = LazyAgentServicer(services)
    await servicer.preload(["guest"])
    assert not servicer.loaded("guest")
    failed = [r for r in caplog.records if r.getMessage() == "area not loaded"]
    assert [r.cause for r in failed] == ["OSError: [Errno 24] Too many open files"]  # type: ignore[attr-defined]
    assert await servicer.GetGuestDetails("r") == ("served", "r")  # type: ignore[attr-defined]
    assert len(attempts) == 2


async def test_a_service_warms_up_within_its_load(imports: _Imports) -> None:
    """A service with ``warm`` (the network's: pyroute2 and its thread) is warmed as part of its
    area's load, under the one-import-at-a-time lock, once."""
    services, _ = _fake_services()
    warmed: list[bool] = []

    class Network:
        async def warm(self) -> None:
            warmed.append(servicer._import_lock.locked())

    services.network = Network()  # type: ignore[assignment]
    servicer = LazyAgentServicer(services)
    await asyncio.gather(servicer.preload(["network"]), servicer.UpdateInterface("i"))  # type: ignore[attr-defined]
    assert warmed == [True]


async def test_the_preload_starts_an_area_only_while_no_call_is_served(
    imports: _Imports, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call being served keeps the preload's next area waiting (an import would compete with
    it); long-polls parked on a process (ReadStdout, WaitProcess, ...) do not."""
    from agent.rpc.handlers import containers

    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(self: Any, req: Any) -> str:
        entered.set()
        await release.wait()
        return "created"

    async def parked(self: Any, req: Any) -> str:
        await asyncio.Event().wait()
        return "never"

    monkeypatch.setattr(containers.ContainerHandlers, "CreateContainer", slow)
    monkeypatch.setattr(containers.ContainerHandlers, "WaitProcess", parked)
    services, _ = _fake_services()
    servicer = LazyAgentServicer(services)
    call = asyncio.create_task(servicer.CreateContainer("c"))  # type: ignore[attr-defined]
    waiting = asyncio.create_task(servicer.WaitProcess("w"))  # type: ignore[attr-defined]
    await entered.wait()
    preload = asyncio.create_task(servicer.preload(["guest", "network"]))
    await asyncio.sleep(0.05)
    assert imports.started == ["containers"]  # the call's own area only
    assert not preload.done()
    release.set()
    assert await call == "created"
    await preload  # WaitProcess is still parked: it does not count
    assert imports.started == ["containers", "guest", "network"]
    assert not waiting.done()
    waiting.cancel()
