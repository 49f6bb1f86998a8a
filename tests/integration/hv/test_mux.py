"""The ttrpc multiplexer (hv.mux) in front of a real agent process: the agent's unix socket plays
the guest's one virtio-serial channel, clients connect to the mux's socket.

The test agent parks GetOOMEvent until its call is cancelled (it logs "parked call cancelled") and
answers GetDiagnosticData with int(container_id) bytes, so routing and isolation are visible.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.rpc import framing
from agent.rpc.client import TtrpcClient
from agent.rpc.pb import agent_pb2, health_pb2, request_pb2
from agent.rpc.status import Code, RpcError
from hv.mux import AgentMux
from tests.support.agent import AgentProcess


@pytest.fixture
def test_agent(agent_factory: object) -> AgentProcess:
    return agent_factory(test_servicer=True)  # type: ignore[operator,no-any-return]


@pytest.fixture
async def mux(test_agent: AgentProcess) -> AsyncIterator[AgentMux]:
    assert test_agent.socket_path is not None
    m = AgentMux(test_agent.socket_path, test_agent.workdir / "mux.sock", log_rpc=True, name="t")
    await m.connect()
    await m.listen()
    try:
        yield m
    finally:
        await m.close()


async def _client(mux: AgentMux) -> TtrpcClient:
    return await TtrpcClient.connect(f"unix://{mux.listen_path}", timeout=5)


def _diag(n: int) -> agent_pb2.GetDiagnosticDataRequest:
    return agent_pb2.GetDiagnosticDataRequest(container_id=str(n))


async def test_clients_with_the_same_stream_ids_get_their_own_replies(mux: AgentMux) -> None:
    """Three clients, each numbering its streams 1, 3, 5, ..., with 40 calls in flight at once:
    every reply reaches the call that asked for it (its size tells)."""
    clients = [await _client(mux) for _ in range(3)]
    try:
        sizes = {(c, i): 1 + 1000 * c + 37 * i for c in range(3) for i in range(40)}
        replies = await asyncio.gather(
            *(
                clients[c].agent.GetDiagnosticData(_diag(n), timeout=30)
                for (c, _i), n in sizes.items()
            )
        )
        assert [len(r.data) for r in replies] == list(sizes.values())
        check = await clients[2].health.Check(health_pb2.CheckRequest(), timeout=5)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for c in clients:
            await c.close()


async def test_a_disconnecting_client_cancels_nothing_of_the_others(
    mux: AgentMux, test_agent: AgentProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hv.rpc")
    a, b = await _client(mux), await _client(mux)
    parked_b = asyncio.ensure_future(b.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    parked_a = asyncio.ensure_future(a.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    await asyncio.sleep(0.3)
    await a.close()
    with pytest.raises(RpcError):
        await parked_a
    for _ in range(5):
        resp = await b.agent.GetDiagnosticData(_diag(5), timeout=10)
        assert resp.data == "xxxxx"
    assert not parked_b.done()
    await asyncio.sleep(0.3)
    assert not any(r.get("msg") == "parked call cancelled" for r in test_agent.logs())
    parked_b.cancel()
    await b.close()
    abandoned = [r for r in caplog.records if r.getMessage() == "rpc abandoned"]
    assert len(abandoned) >= 1
    assert {getattr(r, "method", None) for r in abandoned} == {"/grpc.AgentService/GetOOMEvent"}


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(framing.encode(2, framing.TYPE_REQUEST, b""), id="even-stream-id"),
        pytest.param(framing.encode(1, framing.TYPE_DATA, b"abc"), id="data-frame"),
        pytest.param(framing.encode(1, framing.TYPE_RESPONSE, b""), id="response-frame"),
        pytest.param(framing.encode(1, framing.TYPE_REQUEST, b"\xff\xff\xff"), id="bad-envelope"),
        pytest.param(struct.pack(">IIBB", 5 << 20, 1, 1, 0) + b"x" * 100, id="oversized"),
    ],
)
async def test_a_client_sending_garbage_is_cut_off_alone(
    mux: AgentMux, test_agent: AgentProcess, garbage: bytes
) -> None:
    good = await _client(mux)
    parked = asyncio.ensure_future(good.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_unix_connection(str(mux.listen_path))
    writer.write(garbage)
    await writer.drain()
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # cut off: nothing answered, connection closed
    writer.close()
    resp = await good.agent.GetDiagnosticData(_diag(3), timeout=10)
    assert resp.data == "xxx"
    assert not parked.done()
    # Nothing of the garbage reached the agent: its one connection (the channel) is intact.
    assert test_agent.alive()
    assert not any(r.get("msg") == "parked call cancelled" for r in test_agent.logs())
    parked.cancel()
    await good.close()


async def test_a_stream_id_already_in_flight_is_refused(mux: AgentMux) -> None:
    client = await _client(mux)
    env = request_pb2.Request(
        service="grpc.AgentService", method="GetOOMEvent", payload=b""
    ).SerializeToString()
    first = asyncio.ensure_future(client.request_frame(env, stream_id=7))
    await asyncio.sleep(0.2)
    second = await client.request_frame(env, stream_id=7, wait=10)
    assert second.status.code == Code.INVALID_ARGUMENT
    assert "stream id 7 is already active" in second.status.message
    assert not first.done()
    first.cancel()
    await client.close()


async def test_every_call_is_logged_with_connection_method_duration_status(
    mux: AgentMux, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hv.rpc")
    client = await _client(mux)
    await client.health.Check(health_pb2.CheckRequest(), timeout=5)
    with pytest.raises(RpcError):
        await client.agent.SetPolicy(agent_pb2.SetPolicyRequest(), timeout=5)
    await client.close()
    lines = [r for r in caplog.records if r.name == "hv.rpc" and r.getMessage() == "rpc"]
    assert [(r.method, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("/grpc.Health/Check", "OK"),
        ("/grpc.AgentService/SetPolicy", "UNIMPLEMENTED"),
    ]
    assert all(r.connection == lines[0].connection for r in lines)  # type: ignore[attr-defined]
    assert all(r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]


async def test_the_guest_going_away_fails_calls_and_closes_clients(
    agent_factory: object, tmp_path: Path
) -> None:
    agent: AgentProcess = agent_factory(test_servicer=True)  # type: ignore[operator]
    assert agent.socket_path is not None
    mux = AgentMux(agent.socket_path, agent.workdir / "mux.sock")
    await mux.connect()
    await mux.listen()
    client = await _client(mux)
    try:
        parked = asyncio.ensure_future(client.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
        await asyncio.sleep(0.2)
        agent.stop()
        with pytest.raises(RpcError) as err:
            await asyncio.wait_for(parked, 10)
        assert err.value.code == Code.UNAVAILABLE
        await asyncio.wait_for(mux.channel_lost, 10)
        await asyncio.wait_for(client.wait_closed(), 10)
        with pytest.raises(FileNotFoundError):
            await TtrpcClient.connect(f"unix://{mux.listen_path}", timeout=2)
    finally:
        await client.close()
        await mux.close()
    assert not mux.listen_path.exists()


async def test_the_mux_own_calls_and_wait_for_agent(mux: AgentMux) -> None:
    await mux.wait_for_agent(10)
    resp = await mux.call(
        "grpc.AgentService",
        "GetDiagnosticData",
        _diag(4),
        agent_pb2.GetDiagnosticDataResponse,
        timeout=10,
    )
    assert resp.data == "xxxx"
    with pytest.raises(RpcError) as err:
        await mux.call(
            "grpc.AgentService",
            "GetOOMEvent",
            agent_pb2.GetOOMEventRequest(),
            agent_pb2.OOMEvent,
            timeout=0.3,
        )
    assert err.value.code == Code.DEADLINE_EXCEEDED


async def test_the_agent_socket_is_for_its_owner_only(mux: AgentMux) -> None:
    assert mux.listen_path.stat().st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(mux.listen_path))  # and it serves
