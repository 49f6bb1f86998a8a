"""AgentService areas loaded in the background once the agent serves (``agent.preload_areas``):
loaded without a call, each once when calls race the preload, and a failed load neither ends the
agent nor hides its cause from the call that needed the area."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.status import Code, RpcError
from tests.support.agent import AgentProcess

Factory = Callable[..., AgentProcess]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _record(agent: AgentProcess, msg: str, **fields: object) -> dict[str, Any]:
    """The first log record ``msg`` with these fields (waits for it; the agent must live)."""
    async with asyncio.timeout(30):
        while True:
            for record in agent.logs():
                if record.get("msg") == msg and all(record.get(k) == v for k, v in fields.items()):
                    return record
            assert agent.alive(), agent.log_text()
            await asyncio.sleep(0.02)


def _loaded(agent: AgentProcess) -> list[tuple[str, str]]:
    return [(r["area"], r["by"]) for r in agent.logs() if r.get("msg") == "area loaded"]


async def test_areas_are_loaded_after_listen_without_a_call(agent_factory: Factory) -> None:
    agent = agent_factory(args=["--preload-areas", "containers,guest"])
    done = await _record(agent, "areas preloaded")
    assert done["areas"] == ["containers", "guest"]
    assert _loaded(agent) == [("containers", "preload"), ("guest", "preload")]
    # the containers area's lifecycle is built: the OCI engine's spawner runs, before any call
    assert len(_children(agent.pid)) == 1
    async with await agent.client() as client:
        details = await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=30)
        assert details.agent_details.version == "0.1.0"
    assert _loaded(agent) == [("containers", "preload"), ("guest", "preload")]  # nothing again


async def test_the_network_area_loads_pyroute2_ahead_of_its_first_call(
    agent_factory: Factory,
) -> None:
    agent = agent_factory(args=["--preload-areas", "network"])
    await _record(agent, "areas preloaded")
    assert any(r.get("msg") == "pyroute2 loaded" for r in agent.logs())
    assert _loaded(agent) == [("network", "preload")]
    async with await agent.client() as client:
        listed = await client.agent.ListInterfaces(agent_pb2.ListInterfacesRequest(), timeout=30)
    assert "lo" in {i.name for i in listed.Interfaces}


async def test_an_agent_on_a_unix_socket_stays_lazy_by_default(agent: AgentProcess) -> None:
    """auto: not a guest's channel, so no area is loaded (and no spawner started) until called."""
    await _record(agent, "announce")
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=30)
    assert _children(agent.pid) == []
    assert _loaded(agent) == []
    assert not any(r.get("msg") == "areas preloaded" for r in agent.logs())


async def test_calls_racing_the_preload_load_each_area_once(agent_factory: Factory) -> None:
    """Calls sent the moment AgentService answers, on two connections, while every area is being
    preloaded: all answered, and each area imported and built once."""
    agent = agent_factory(args=["--preload-areas", "all"])
    async with await agent.client() as one, await agent.client() as two:
        calls = [
            c.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=30)
            for c in (one, two, one, two)
        ] + [
            c.agent.ListInterfaces(agent_pb2.ListInterfacesRequest(), timeout=30)
            for c in (two, one)
        ]
        replies = await asyncio.gather(*calls)
    assert {r.agent_details.version for r in replies[:4]} == {"0.1.0"}
    assert all("lo" in {i.name for i in r.Interfaces} for r in replies[4:])
    await _record(agent, "areas preloaded")
    areas = [area for area, _ in _loaded(agent)]
    assert sorted(areas) == ["containers", "guest", "network", "policy", "storage"]
    assert not any(r.get("msg") == "area not loaded" for r in agent.logs())


async def test_a_failed_preload_leaves_the_agent_serving(agent_factory: Factory) -> None:
    """The preload's import fails: logged with its cause, the agent serves on, and the area's
    first call loads it again."""
    agent = agent_factory(
        test_servicer=True,
        args=["--preload-areas", "guest,network"],
        env={"KATA_TEST_AREA_FAILS": "guest:1"},
    )
    failed = await _record(agent, "area not loaded", area="guest")
    assert failed["by"] == "preload"
    assert failed["cause"] == "ImportError: test: the guest area does not import"
    assert "Traceback" in failed["error"]
    await _record(agent, "areas preloaded")
    assert _loaded(agent) == [("network", "preload")]
    async with await agent.client() as client:
        details = await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=30)
    assert details.agent_details.version == "0.1.0"
    assert _loaded(agent) == [("network", "preload"), ("guest", "call")]


async def test_a_call_whose_area_does_not_load_gets_the_cause(agent_factory: Factory) -> None:
    agent = agent_factory(
        test_servicer=True,
        args=["--preload-areas", "guest"],
        env={"KATA_TEST_AREA_FAILS": "guest:2"},
    )
    await _record(agent, "area not loaded", area="guest", by="preload")
    async with await agent.client() as client:
        with pytest.raises(RpcError) as info:
            await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=30)
        assert info.value.code == Code.INTERNAL
        assert info.value.message == (
            "grpc.AgentService: cannot load the guest area: ImportError: test: the guest area "
            "does not import"
        )
        details = await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=30)
    assert details.agent_details.version == "0.1.0"
    assert agent.alive()
