"""What an idle agent holds (idle RSS, bench/rpc.py measures the figure): no OpenSSL mapped, no
worker thread beyond the loop's executor, and each AgentService area loaded on its first call."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from tests.support.agent import AgentProcess


def _mapped_libraries(pid: int) -> set[str]:
    names = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6:
            names.add(Path(parts[5]).name)
    return names


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


async def _announced(agent: AgentProcess) -> dict[str, object]:
    """The 'announce' record: logged once start-up is complete (AgentService bound)."""
    async with asyncio.timeout(30):
        while True:
            for record in agent.logs():
                if record.get("msg") == "announce":
                    return record
            assert agent.alive(), agent.log_text()
            await asyncio.sleep(0.05)


def _ssl_libraries(names: set[str]) -> set[str]:
    return {n for n in names if n.startswith(("libssl", "libcrypto", "_ssl."))}


async def test_idle_agent_maps_no_openssl_and_runs_no_extra_thread(agent: AgentProcess) -> None:
    announce = await _announced(agent)
    if importlib.util.find_spec("uvloop") is not None:
        assert str(announce["loop"]).startswith("uvloop")  # uvloop still in use, without ssl
    assert _ssl_libraries(_mapped_libraries(agent.pid)) == set()
    # main + at most asyncio's executor worker (start-up imports ran there); no netlink thread
    assert _threads(agent.pid) <= 2


async def test_areas_load_on_first_call_and_answer(agent: AgentProcess) -> None:
    await _announced(agent)
    async with await agent.client() as client:
        calls = [
            client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=30)
            for _ in range(4)
        ]  # concurrent first calls of one area: one load, every call answered
        replies = await asyncio.gather(*calls)
        assert {r.agent_details.version for r in replies} == {"0.1.0"}
        assert _ssl_libraries(_mapped_libraries(agent.pid)) == set()  # guest area: no ssl
        interfaces = await client.agent.ListInterfaces(
            agent_pb2.ListInterfacesRequest(), timeout=30
        )
        assert "lo" in {i.name for i in interfaces.Interfaces}
        with pytest.raises(RpcError) as info:  # lifecycle area: loads, then a domain error
            await client.agent.WaitProcess(
                agent_pb2.WaitProcessRequest(container_id="nope", exec_id=""), timeout=30
            )
        assert info.value.code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT)
        assert "nope" in str(info.value)
    assert agent.alive()  # (the network area loads pyroute2, which imports ssl)
