"""LazyAgentServicer: the same methods as AgentServicer, each area loaded on its first call."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
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
