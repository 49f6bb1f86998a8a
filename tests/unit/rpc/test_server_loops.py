"""The ttrpc server in-process, on both the default loop and uvloop, over every transport that
works without a VM: a unix socket (the loop's own transport), a socketpair and a pty (FdTransport,
what vsock connections and serial ports use)."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from agent.rpc.client import TtrpcClient
from agent.rpc.dispatch import Dispatcher
from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.server import TtrpcServer
from agent.rpc.status import Code, RpcError
from agent.rpc.transport import FdTransport


class Servicer:
    def __init__(self) -> None:
        self.cancelled = 0
        self.release = asyncio.Event()

    async def Check(self, req: health_pb2.CheckRequest) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def GetOOMEvent(self, req: agent_pb2.GetOOMEventRequest) -> agent_pb2.OOMEvent:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return agent_pb2.OOMEvent(container_id="c1")

    async def GetGuestDetails(self, req: Any) -> Any:
        return "not a message"


def _run(loop_name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = None
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


LOOPS = ["asyncio", "uvloop"]


async def _exercise(client: TtrpcClient, servicer: Servicer) -> None:
    parked = [
        asyncio.ensure_future(client.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
        for _ in range(10)
    ]
    for _ in range(3):
        resp = await client.health.Check(health_pb2.CheckRequest(), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    servicer.release.set()
    results = await asyncio.wait_for(asyncio.gather(*parked), 10)
    assert {r.container_id for r in results} == {"c1"}
    with pytest.raises(RpcError) as info:
        await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=10)
    assert info.value.code == Code.INTERNAL
    assert "handler returned str" in info.value.message
    with pytest.raises(RpcError) as info:
        await client.agent.CreateContainer(agent_pb2.CreateContainerRequest(), timeout=10)
    assert info.value.code == Code.UNIMPLEMENTED


@pytest.mark.parametrize("loop_name", LOOPS)
def test_unix_listener(loop_name: str) -> None:
    async def main() -> None:
        servicer = Servicer()
        server = TtrpcServer(Dispatcher({"grpc.Health": servicer, "grpc.AgentService": servicer}))
        with tempfile.TemporaryDirectory(prefix="kagu-", dir="/tmp") as d:
            await server.listen(f"unix://{d}/s.sock")
            client = await TtrpcClient.connect(f"unix://{d}/s.sock")
            await _exercise(client, servicer)
            servicer.release.clear()
            pending = asyncio.ensure_future(
                client.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest())
            )
            await client.health.Check(health_pb2.CheckRequest(), timeout=10)
            await client.close()
            with pytest.raises(RpcError):
                await pending
            async with asyncio.timeout(10):
                while servicer.cancelled < 1:  # noqa: ASYNC110 - cancellation is async
                    await asyncio.sleep(0.01)
            await server.close()
            assert server.stats.connections == 0

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_fd_transport_over_socketpair(loop_name: str) -> None:
    async def main() -> None:
        servicer = Servicer()
        server = TtrpcServer(Dispatcher({"grpc.Health": servicer, "grpc.AgentService": servicer}))
        a, b = socket.socketpair()
        FdTransport(a.detach(), server.protocol_factory("pair")(), is_socket=True)
        client = TtrpcClient.from_fd(b.detach(), is_socket=True)
        await _exercise(client, servicer)
        await client.close()

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_serial_listener_on_a_pty(loop_name: str) -> None:
    async def main() -> None:
        servicer = Servicer()
        server = TtrpcServer(Dispatcher({"grpc.Health": servicer, "grpc.AgentService": servicer}))
        master, slave = os.openpty()
        name = os.ttyname(slave)
        os.close(slave)
        await server.listen(f"serial://{name}")
        async with asyncio.timeout(10):
            while server.stats.connections < 1:  # noqa: ASYNC110 - the port opens async
                await asyncio.sleep(0.01)
        client = TtrpcClient.from_fd(master, is_socket=False)
        await _exercise(client, servicer)
        await client.close()
        await server.close()

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_fd_transport_large_writes_and_backpressure(loop_name: str) -> None:
    """A 3 MiB response through a socketpair whose reader is slow: FdTransport buffers, pauses the
    protocol and drains completely."""

    class Big:
        async def GetDiagnosticData(self, req: Any) -> Any:
            return agent_pb2.GetDiagnosticDataResponse(data="y" * (3 << 20))

    async def main() -> None:
        server = TtrpcServer(Dispatcher({"grpc.AgentService": Big()}))
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        FdTransport(a.detach(), server.protocol_factory("pair")(), is_socket=True)
        client = TtrpcClient.from_fd(b.detach(), is_socket=True)
        results = await asyncio.gather(
            *(
                client.agent.GetDiagnosticData(agent_pb2.GetDiagnosticDataRequest(), timeout=30)
                for _ in range(3)
            )
        )
        assert all(len(r.data) == 3 << 20 for r in results)
        await client.close()

    _run(loop_name, main)


def test_client_refuses_to_send_more_than_4_mib() -> None:
    async def main() -> None:
        server = TtrpcServer(Dispatcher({}))
        left, right = socket.socketpair()
        FdTransport(left.detach(), server.protocol_factory("pair")(), is_socket=True)
        client = TtrpcClient.from_fd(right.detach(), is_socket=True)
        with pytest.raises(RpcError) as info:
            await client.agent.CopyFile(agent_pb2.CopyFileRequest(data=b"x" * (4 << 20)))
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        assert "exceeds maximum message size of 4194304" in info.value.message
        await client.close()

    _run("asyncio", main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_serial_stream_new_host_session_on_stream_one(loop_name: str) -> None:
    """On a serial port the guest may not see a quick host reconnect: a Request on stream 1
    again starts a new session, cancelling the previous host's calls without answering them."""

    async def main() -> None:
        servicer = Servicer()
        server = TtrpcServer(Dispatcher({"grpc.Health": servicer, "grpc.AgentService": servicer}))
        a, b = socket.socketpair()
        protocol = server.protocol_factory("serial", shared_stream=True)()
        FdTransport(a.detach(), protocol, is_socket=True)
        first = TtrpcClient.from_fd(os.dup(b.fileno()), is_socket=True)
        parked = [
            asyncio.ensure_future(first.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
            for _ in range(2)
        ]  # streams 1 and 3
        await first.health.Check(health_pb2.CheckRequest(), timeout=10)  # stream 5
        # The "host" goes away without the guest noticing; a new one reuses the same stream.
        first._transport.pause_reading()  # the old host reads no more
        second = TtrpcClient.from_fd(b.detach(), is_socket=True)
        resp = await second.health.Check(health_pb2.CheckRequest(), timeout=10)  # stream 1
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        async with asyncio.timeout(10):
            while servicer.cancelled < 2:  # noqa: ASYNC110 - cancellation is async
                await asyncio.sleep(0.01)
        servicer.release.set()
        resp = await second.health.Check(health_pb2.CheckRequest(), timeout=10)  # stream 3
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert not second._protocol.stray_frames
        for p in parked:
            p.cancel()
        await second.close()
        await first.close()

    _run(loop_name, main)
