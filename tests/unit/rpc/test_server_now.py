"""The ttrpc server's synchronous path: a handler's ``try_<Method>`` variant answers without a task
when it can; otherwise the call takes the async handler, with the same statuses either way."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from agent.errors import NotFound
from agent.rpc import framing
from agent.rpc.client import TtrpcClient
from agent.rpc.dispatch import Dispatcher
from agent.rpc.encoded import PreEncoded, bytes_field
from agent.rpc.pb import agent_pb2, request_pb2
from agent.rpc.server import TtrpcServer
from agent.rpc.status import Code, RpcError
from agent.rpc.transport import FdTransport

LOOPS = ["asyncio", "uvloop"]
_RESP = agent_pb2.ReadStreamResponse


class Streams:
    """ReadStdout answers at once from ``ready`` (no task: checked), else parks in the async
    handler until ``arrive``; container "gone" is NOT_FOUND, "bad" returns the wrong type."""

    def __init__(self) -> None:
        self.ready: list[bytes] = []
        self.now_calls = 0
        self.async_calls: list[agent_pb2.ReadStreamRequest] = []
        self.arrived = asyncio.Event()
        self.park = True  # False: the async handler answers from ``ready`` at once

    def try_ReadStdout(self, req: agent_pb2.ReadStreamRequest) -> Any:
        assert asyncio.current_task() is None  # answered from the protocol callback, no task
        self.now_calls += 1
        if req.container_id == "gone":
            raise NotFound("container gone not found")
        if req.container_id == "bad":
            return agent_pb2.WriteStreamResponse(len=1)
        if not self.ready:
            return None
        return bytes_field(_RESP, 1, self.ready.pop(0))

    async def ReadStdout(
        self, req: agent_pb2.ReadStreamRequest
    ) -> PreEncoded[agent_pb2.ReadStreamResponse]:
        assert asyncio.current_task() is not None
        self.async_calls.append(req)
        if self.park:
            await self.arrived.wait()
            self.arrived.clear()
        return bytes_field(_RESP, 1, self.ready.pop(0))


def _run(loop_name: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    factory = None
    if loop_name == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def _read(cid: str = "c1", n: int = 100) -> agent_pb2.ReadStreamRequest:
    return agent_pb2.ReadStreamRequest(container_id=cid, exec_id="e1", len=n)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_answered_at_once_or_parked_in_the_async_handler(loop_name: str) -> None:
    async def main() -> None:
        streams = Streams()
        server = TtrpcServer(Dispatcher({"grpc.AgentService": streams}))
        with tempfile.TemporaryDirectory(prefix="kagu-", dir="/tmp") as d:
            await server.listen(f"unix://{d}/s.sock")
            client = await TtrpcClient.connect(f"unix://{d}/s.sock")
            streams.ready.append(b"there already")
            resp = await client.agent.ReadStdout(_read(), timeout=10)
            assert resp.data == b"there already"
            assert (streams.now_calls, streams.async_calls) == (1, [])
            # Nothing there: the call parks in the async handler, which gets the decoded request.
            parked = asyncio.ensure_future(client.agent.ReadStdout(_read(n=77)))
            async with asyncio.timeout(10):
                while not streams.async_calls:  # noqa: ASYNC110 - the call arrives async
                    await asyncio.sleep(0.01)
            assert streams.async_calls[0].len == 77
            streams.ready.append(b"later")
            streams.arrived.set()
            assert (await asyncio.wait_for(parked, 10)).data == b"later"
            calls_before = server.stats.calls
            # Errors raised or returned by the synchronous variant: the statuses of the async path.
            with pytest.raises(RpcError) as info:
                await client.agent.ReadStdout(_read("gone"), timeout=10)
            assert info.value.code == Code.NOT_FOUND
            assert info.value.message == "container gone not found"
            with pytest.raises(RpcError) as info:
                await client.agent.ReadStdout(_read("bad"), timeout=10)
            assert info.value.code == Code.INTERNAL
            assert "handler returned WriteStreamResponse" in info.value.message
            code, message, _ = await client.call_raw(
                "grpc.AgentService", "ReadStdout", b"\xff\xff", timeout=10
            )
            assert code == Code.INVALID_ARGUMENT
            assert "cannot decode grpc.ReadStreamRequest" in message
            assert server.stats.calls == calls_before + 3
            # An empty reply (EOF) also goes out at once.
            streams.ready.append(b"")
            assert (await client.agent.ReadStdout(_read(), timeout=10)).data == b""
            await client.close()
            await server.close()

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_no_synchronous_answers_while_the_peer_does_not_read(loop_name: str) -> None:
    """Answers pile up in the transport while the client does not read: once writing is paused,
    calls take the async path (which waits for the peer), so the buffer stays bounded."""
    count, size = 24, 256 << 10

    async def main() -> None:
        streams = Streams()
        streams.ready = [bytes([i]) * size for i in range(count)]
        streams.park = False
        server = TtrpcServer(Dispatcher({"grpc.AgentService": streams}))
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        FdTransport(a.detach(), server.protocol_factory("pair")(), is_socket=True)
        body = request_pb2.Request(
            service="grpc.AgentService",
            method="ReadStdout",
            payload=_read(n=size).SerializeToString(),
        ).SerializeToString()
        b.sendall(b"".join(framing.encode(1 + 2 * i, 1, body) for i in range(count)))
        async with asyncio.timeout(10):
            while streams.now_calls + len(streams.async_calls) < count:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # The first calls were answered at once, the rest (writing paused) by the async handler
        # without trying the synchronous path.
        assert 0 < streams.now_calls < count
        assert streams.now_calls + len(streams.async_calls) == count
        # Now read everything: every call is answered, each exactly once, with its own bytes.
        loop = asyncio.get_running_loop()
        b.setblocking(False)
        parser = framing.FrameParser()
        frames: list[framing.Frame] = []
        async with asyncio.timeout(30):
            while len(frames) < count:
                chunk = await loop.sock_recv(b, 1 << 20)
                assert chunk
                frames += [f for f in parser.feed(chunk) if isinstance(f, framing.Frame)]
        assert sorted(f.stream_id for f in frames) == [1 + 2 * i for i in range(count)]
        seen = set()
        for frame in frames:
            resp = request_pb2.Response.FromString(frame.data)
            assert resp.status.code == 0
            data = _RESP.FromString(resp.payload).data
            assert len(data) == size
            assert data == data[:1] * size
            seen.add(data[0])
        assert seen == set(range(count))
        b.close()

    _run(loop_name, main)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_frames_after_a_failed_synchronous_reply_are_dropped(loop_name: str) -> None:
    """A reply written from data_received fails (the peer shut its reading side) and closes the
    connection at once (FdTransport): the frames still in that chunk must not start calls that
    nobody would ever cancel."""

    async def main() -> None:
        streams = Streams()
        streams.ready.append(b"x" * 1000)
        server = TtrpcServer(Dispatcher({"grpc.AgentService": streams}))
        a, b = socket.socketpair()
        conn = server.protocol_factory("pair")()
        FdTransport(a.detach(), conn, is_socket=True)
        body = request_pb2.Request(
            service="grpc.AgentService", method="ReadStdout", payload=_read().SerializeToString()
        ).SerializeToString()
        b.sendall(framing.encode(1, 1, body) + framing.encode(3, 1, body))
        b.shutdown(socket.SHUT_RD)
        await asyncio.wait_for(conn.closed, 10)
        await asyncio.sleep(0)  # a task created for stream 3 would have started by now
        assert streams.now_calls == 1
        assert streams.async_calls == []
        b.close()

    _run(loop_name, main)
