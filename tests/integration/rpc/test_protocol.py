"""The ttrpc server as a real agent process serves it (shared/kata-protocol/ttrpc.md)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable

import pytest

from agent.rpc import framing
from agent.rpc.client import TtrpcClient
from agent.rpc.pb import agent_pb2, health_pb2, request_pb2
from agent.rpc.status import Code, RpcError
from tests.support.agent import AgentProcess

Factory = Callable[..., AgentProcess]


@pytest.fixture
def test_agent(agent_factory: Factory) -> AgentProcess:
    return agent_factory(test_servicer=True)


async def test_check_and_version(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        check = await client.health.Check(health_pb2.CheckRequest(service="x"), timeout=5)
        version = await client.health.Version(health_pb2.CheckRequest())
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    assert version.grpc_version == "0.0.1"
    assert version.agent_version


def test_check_reply_bytes_match_the_spec(agent: AgentProcess) -> None:
    """The exact exchange of ttrpc.md §7 ("Smallest complete example")."""
    request = (
        bytes.fromhex("0000001a0000000101000a0b")
        + b"grpc.Health"
        + bytes.fromhex("1205")
        + b"Check"
        + bytes.fromhex("2080d88ee16f")
    )
    assert agent.socket_path is not None
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(agent.socket_path))
        sock.sendall(request)
        reply = _recv_exactly(sock, 16)
    assert reply == bytes.fromhex("00000006000000010200") + bytes.fromhex("0a0012020801")


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} bytes")
        data += chunk
    return data


async def test_unknown_service_and_method(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        code, msg, _ = await client.call_raw("grpc.NoSuchService", "Check", b"")
        assert (code, msg) == (Code.INVALID_ARGUMENT, "grpc.NoSuchService service does not exist")
        code, msg, _ = await client.call_raw("grpc.AgentService", "NoSuchMethod", b"")
        assert code == Code.UNIMPLEMENTED
        assert "NoSuchMethod" in msg


async def test_contract_method_without_handler_is_unimplemented(test_agent: AgentProcess) -> None:
    async with await test_agent.client() as client:
        with pytest.raises(RpcError) as info:
            await client.agent.SetPolicy(agent_pb2.SetPolicyRequest(policy="x"))
    assert info.value.code == Code.UNIMPLEMENTED
    assert info.value.message == "/grpc.AgentService/SetPolicy is not implemented by this agent"


async def test_every_contract_method_is_registered(agent: AgentProcess) -> None:
    """No contract method answers "method does not exist": each is served or UNIMPLEMENTED.
    (Empty requests; methods that act are only the ones that reject an empty request.)"""
    safe = {
        "GetGuestDetails",
        "GetMetrics",
        "ListInterfaces",
        "ListRoutes",
        "MemAgentMemcgSet",
        "MemAgentCompactSet",
        "ResizeVolume",
        "SetPolicy",
        "GetDiagnosticData",
    }
    async with await agent.client() as client:
        for name in sorted(safe):
            code, msg, _ = await client.call_raw("grpc.AgentService", name, b"", timeout=30)
            assert "does not exist" not in msg, (name, code, msg)
    assert agent.alive()


async def test_hundred_parked_calls_while_check_answers(test_agent: AgentProcess) -> None:
    client = await test_agent.client()
    parked = [
        asyncio.ensure_future(client.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
        for _ in range(100)
    ]
    await asyncio.sleep(0)
    for _ in range(20):
        resp = await client.health.Check(health_pb2.CheckRequest(), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    assert not any(p.done() for p in parked)
    # A second connection is served too.
    async with await test_agent.client() as other:
        await other.health.Check(health_pb2.CheckRequest(), timeout=10)
    # The client goes away: every parked handler is cancelled in the agent.
    await client.close()
    results = await asyncio.gather(*parked, return_exceptions=True)
    assert all(isinstance(r, RpcError) and r.code == Code.UNAVAILABLE for r in results)
    await _wait_for_log(test_agent, "parked call cancelled", 100)
    async with await test_agent.client() as again:
        await again.health.Check(health_pb2.CheckRequest(), timeout=10)


async def _wait_for_log(agent: AgentProcess, msg: str, count: int) -> None:
    """Poll the agent's log file (another process: there is no event to await)."""
    async with asyncio.timeout(30):
        while sum(1 for r in agent.logs() if r.get("msg") == msg) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_deadline_exceeded_and_connection_survives(test_agent: AgentProcess) -> None:
    async with await test_agent.client() as client:
        code, msg, _ = await client.call_raw("grpc.AgentService", "GetOOMEvent", b"", timeout=0.3)
        assert code == Code.DEADLINE_EXCEEDED
        assert "GetOOMEvent" in msg
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    await _wait_for_log(test_agent, "parked call cancelled", 1)


async def test_every_rpc_logged_at_debug_with_duration(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=5)
    async with asyncio.timeout(30):
        while True:
            rpcs = [
                r
                for r in agent.logs()
                if r.get("msg") == "rpc" and r.get("path") == "/grpc.Health/Check"
            ]
            if rpcs:
                break
            await asyncio.sleep(0.05)
    rec = rpcs[0]
    assert rec["path"] == "/grpc.Health/Check"
    assert rec["level"] == "DEBG"
    assert rec["subsystem"] == "rpc"
    assert isinstance(rec["duration_us"], int)
    assert {"ts", "msg", "name", "pid", "source"} <= rec.keys()


# -- malformed input -----------------------------------------------------------------------------


async def test_even_stream_id_rejected(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        env = request_pb2.Request(service="grpc.Health", method="Check").SerializeToString()
        resp = await client.request_frame(env, stream_id=2, wait=10)
        assert resp.status.code == Code.INVALID_ARGUMENT
        assert "must be odd" in resp.status.message
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_undecodable_envelope_and_payload(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        resp = await client.request_frame(b"\xff\xff\xff", wait=10)
        assert resp.status.code == Code.INVALID_ARGUMENT
        assert "unmarshal request error" in resp.status.message
        code, msg, _ = await client.call_raw(
            "grpc.AgentService", "GetGuestDetails", b"\x0a\xff\xff\xff\xff", timeout=10
        )
        assert code == Code.INVALID_ARGUMENT
        assert "grpc.GuestDetailsRequest" in msg
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_data_frames_and_streaming_rejected(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        resp = await client.request_frame(b"", frame_type=framing.TYPE_DATA, wait=10)
        assert resp.status.code == Code.INVALID_ARGUMENT
        env = request_pb2.Request(service="grpc.Health", method="Check").SerializeToString()
        resp = await client.request_frame(env, flags=framing.FLAG_REMOTE_OPEN, wait=10)
        assert resp.status.code == Code.UNIMPLEMENTED
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_unknown_frame_type_ignored(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        client.send_raw(framing.encode(7, 9, b"whatever"))
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_duplicate_in_flight_stream_id(test_agent: AgentProcess) -> None:
    async with await test_agent.client() as client:
        env = request_pb2.Request(service="grpc.AgentService", method="GetOOMEvent")
        client.send_raw(framing.encode(101, framing.TYPE_REQUEST, env.SerializeToString()))
        resp = await client.request_frame(env.SerializeToString(), stream_id=101, wait=10)
        assert resp.status.code == Code.INVALID_ARGUMENT
        assert "already active" in resp.status.message


async def test_oversized_request_frame(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        big = b"\0" * (framing.MAX_MESSAGE + 1)
        resp = await client.request_frame(big, wait=60)
        assert resp.status.code == Code.RESOURCE_EXHAUSTED
        assert "exceeds maximum message size of 4194304" in resp.status.message
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_largest_request_frame_accepted(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        payload = agent_pb2.CopyFileRequest(
            path="/nowhere", data=b"\0" * (framing.MAX_MESSAGE - 200)
        )
        code, msg, _ = await client.call_raw(
            "grpc.AgentService", "CopyFile", payload.SerializeToString(), timeout=30
        )
        assert code == Code.PERMISSION_DENIED, msg  # decoded and handled, not refused


async def test_oversized_response_replaced_by_error(test_agent: AgentProcess) -> None:
    async with await test_agent.client() as client:
        ok = await client.agent.GetDiagnosticData(
            agent_pb2.GetDiagnosticDataRequest(container_id=str(1 << 20)), timeout=30
        )
        assert len(ok.data) == 1 << 20
        with pytest.raises(RpcError) as info:
            await client.agent.GetDiagnosticData(
                agent_pb2.GetDiagnosticDataRequest(container_id=str(5 << 20)), timeout=30
            )
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_truncated_frame_then_disconnect(agent: AgentProcess) -> None:
    assert agent.socket_path is not None
    for partial in (b"\x00\x00", struct.pack(">IIBB", 100, 1, 1, 0) + b"abc"):
        _, writer = await asyncio.open_unix_connection(str(agent.socket_path))
        writer.write(partial)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_garbage_does_not_disturb_other_connections(agent: AgentProcess) -> None:
    good = await agent.client()
    try:
        assert agent.socket_path is not None
        for seed in range(20):
            await _send_garbage(str(agent.socket_path), os.urandom(1000 + seed * 997))
            await good.health.Check(health_pb2.CheckRequest(), timeout=10)
        await good.health.Check(health_pb2.CheckRequest(), timeout=10)
    finally:
        await good.close()
    assert agent.alive()


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _send_garbage(path: str, data: bytes) -> None:
    """Send ``data``, shut down our side and read until the agent closes the connection too."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(data)
    writer.write_eof()
    await writer.drain()
    async with asyncio.timeout(30):
        while await reader.read(65536):
            pass
    writer.close()
    await writer.wait_closed()


async def _garbage_round(path: str, rounds: int) -> None:
    for i in range(rounds):
        # random bytes, a valid header announcing a huge frame, and a half frame
        await _send_garbage(
            path,
            os.urandom(4096)
            + struct.pack(">IIBB", 0xFFFFFFF0, 2 * i + 1, 1, 0)
            + os.urandom(1024)
            + struct.pack(">IIBB", 50, 3, 1, 0)
            + b"x",
        )


async def test_fds_and_memory_do_not_grow_under_garbage(agent: AgentProcess) -> None:
    assert agent.socket_path is not None
    path = str(agent.socket_path)
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    await _garbage_round(path, 50)  # warm-up: allocator pools, lazy imports
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    fds_before, rss_before = _fd_count(agent.pid), _rss_kib(agent.pid)
    await _garbage_round(path, 300)
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    # every garbage connection is closed by now: give the agent a moment to notice EOFs
    async with asyncio.timeout(30):
        while _fd_count(agent.pid) > fds_before:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.05)
    growth = _rss_kib(agent.pid) - rss_before
    assert growth < 4096, f"agent RSS grew by {growth} KiB over 300 garbage connections"


async def test_client_against_closed_agent_fails_cleanly(agent_factory: Factory) -> None:
    agent = agent_factory()
    client = await agent.client()
    agent.stop()
    with pytest.raises(RpcError) as info:
        await client.health.Check(health_pb2.CheckRequest(), timeout=5)
    assert info.value.code == Code.UNAVAILABLE
    await client.close()


async def test_abstract_socket(agent_factory: Factory) -> None:
    agent = agent_factory(address="unix-abstract")
    assert agent.address.startswith("unix://@")
    async with await TtrpcClient.connect(agent.address) as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_agent_service_calls_during_start_up_wait_for_it(agent_factory: Factory) -> None:
    """Two-phase start-up: Check answers as soon as the socket listens; AgentService calls made
    that early wait for the AgentService stack instead of failing."""
    from tests.support.agent import check_once

    agent = agent_factory(wait=False)
    assert agent.socket_path is not None
    async with asyncio.timeout(60):
        while not check_once(str(agent.socket_path)):  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.005)
    async with await agent.client() as client:
        details, check = await asyncio.gather(
            client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=60),
            client.health.Check(health_pb2.CheckRequest(), timeout=60),
        )
    assert details.agent_details.version == "0.1.0"
    assert check.status == health_pb2.HealthCheckResponse.SERVING


async def test_memory_bounded_under_a_flood_of_large_parked_calls(test_agent: AgentProcess) -> None:
    """40 parked calls of 3 MiB each (120 MiB) on one connection: the agent stops reading that
    connection past 64 MiB in flight instead of buffering it all, and keeps serving others."""
    async with await test_agent.client() as other:
        await other.health.Check(health_pb2.CheckRequest(), timeout=10)
    rss_before = _rss_kib(test_agent.pid)
    assert test_agent.socket_path is not None
    _, writer = await asyncio.open_unix_connection(str(test_agent.socket_path))
    big = request_pb2.Request(
        service="grpc.AgentService",
        method="GetOOMEvent",
        metadata=[request_pb2.KeyValue(key="pad", value="x" * (3 << 20))],
    ).SerializeToString()
    for i in range(40):
        writer.write(framing.encode(2 * i + 1, framing.TYPE_REQUEST, big))
    flood = asyncio.ensure_future(writer.drain())  # will not complete: the agent stops reading
    try:
        async with await test_agent.client() as other:
            for _ in range(5):
                await other.health.Check(health_pb2.CheckRequest(), timeout=10)
        await _wait_for_log(test_agent, "connection paused", 1)
        growth_mib = (_rss_kib(test_agent.pid) - rss_before) / 1024
        assert growth_mib < 100, f"agent RSS grew by {growth_mib:.0f} MiB"
    finally:
        flood.cancel()
        writer.transport.abort()
    await _wait_for_log(test_agent, "parked call cancelled", 20)
    async with await test_agent.client() as other:
        await other.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_sigterm_shuts_down_cleanly_with_calls_in_flight(test_agent: AgentProcess) -> None:
    client = await test_agent.client()
    parked = [
        asyncio.ensure_future(client.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
        for _ in range(10)
    ]
    await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    status = await asyncio.to_thread(test_agent.stop)
    assert status == 0, test_agent.log_text()
    results = await asyncio.gather(*parked, return_exceptions=True)
    assert all(isinstance(r, RpcError) for r in results)
    await client.close()
    msgs = [r.get("msg") for r in test_agent.logs()]
    assert "shutting down" in msgs
    assert not [r for r in test_agent.logs() if r.get("level") in ("ERRO", "CRIT")]
