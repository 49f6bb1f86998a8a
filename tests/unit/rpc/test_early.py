"""Start-up phase 0 (agent.rpc.early): Check answered before asyncio runs, then a lossless
handover of every connection to the asyncio server."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent.rpc import early, early_wire, framing
from agent.rpc.client import TtrpcClient
from agent.rpc.dispatch import Dispatcher
from agent.rpc.health_servicer import HealthServicer
from agent.rpc.pb import health_pb2, request_pb2
from agent.rpc.server import TtrpcServer


def _request(service: str, method: str, payload: bytes = b"", **kw: object) -> bytes:
    return request_pb2.Request(
        service=service,
        method=method,
        payload=payload,
        **kw,  # type: ignore[arg-type]
    ).SerializeToString()


def _recv_frame(sock: socket.socket) -> framing.Frame:
    parser = framing.FrameParser()
    while True:
        chunk = sock.recv(65536)
        assert chunk, "closed"
        events = parser.feed(chunk)
        if events:
            event = events[0]
            assert isinstance(event, framing.Frame)
            return event


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_request("grpc.Health", "Check"), True),
        (_request("grpc.Health", "Check", b"\x0a\x01x", timeout_nano=30_000_000_000), True),
        (
            _request("grpc.Health", "Check", metadata=[request_pb2.KeyValue(key="k", value="v")]),
            True,
        ),
        (_request("grpc.Health", "Version"), False),
        (_request("grpc.AgentService", "Check"), False),
        (b"\xff\xff", False),
        (b"\x0a\x50grpc", False),  # length past the end
        (b"", False),
    ],
)
def test_is_plain_check(body: bytes, expected: bool) -> None:
    assert early_wire.is_plain_check(body) is expected


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_phase0_answers_check_then_hands_everything_over(loop_name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kage-", dir="/tmp") as d:
        path = f"{d}/a.sock"
        listener = early.bind(f"unix://{path}")
        assert listener is not None
        done = threading.Event()
        result: list[early.Handover] = []
        thread = threading.Thread(
            target=lambda: result.append(early.EarlyServer(listener, "unix:///test").serve(done))
        )
        thread.start()
        try:
            client = socket.socket(socket.AF_UNIX)
            client.settimeout(10)
            client.connect(path)
            check = _request("grpc.Health", "Check")
            client.sendall(framing.encode(1, framing.TYPE_REQUEST, check))
            reply = _recv_frame(client)
            assert (reply.stream_id, reply.type) == (1, framing.TYPE_RESPONSE)
            resp = request_pb2.Response.FromString(reply.data)
            assert health_pb2.HealthCheckResponse.FromString(resp.payload).status == 1
            # Then a request phase 0 cannot answer, a Check behind it, and half a frame.
            details = _request(
                "grpc.Health", "Version", health_pb2.CheckRequest().SerializeToString()
            )
            tail = framing.encode(7, framing.TYPE_REQUEST, check)
            client.sendall(
                framing.encode(3, framing.TYPE_REQUEST, details)
                + framing.encode(5, framing.TYPE_REQUEST, check)
                + tail[:6]
            )
            closed = socket.socket(socket.AF_UNIX)
            closed.connect(path)
            closed.close()  # a connection that went away before the handover
        finally:
            done.set()
            thread.join(10)
        (handover,) = result
        assert handover.answered == 1

        async def phase1() -> None:
            server = TtrpcServer(Dispatcher({"grpc.Health": HealthServicer()}))
            await server.listen(f"unix://{path}", sock=handover.listener)
            await server.adopt(handover.connections)
            loop = asyncio.get_running_loop()
            client.setblocking(False)
            await loop.sock_sendall(client, tail[6:])
            got: dict[int, request_pb2.Response] = {}
            parser = framing.FrameParser()
            while len(got) < 3:
                for event in parser.feed(await loop.sock_recv(client, 65536)):
                    assert isinstance(event, framing.Frame)
                    got[event.stream_id] = request_pb2.Response.FromString(event.data)
            assert set(got) == {3, 5, 7}
            version = health_pb2.VersionCheckResponse.FromString(got[3].payload)
            assert version.grpc_version == "0.0.1"
            # The listener is served by asyncio now.
            async with await TtrpcClient.connect(f"unix://{path}") as fresh:
                await fresh.health.Check(health_pb2.CheckRequest(), timeout=10)
            client.close()
            await server.close()

        factory = None
        if loop_name == "uvloop":
            factory = pytest.importorskip("uvloop").new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(phase1())
        assert not Path(path).exists()  # removed by the asyncio listener's close


def test_serial_ports_have_no_phase_0() -> None:
    assert early.bind("serial:///dev/virtio-ports/x") is None


def test_unanswerable_frames_stop_early_service() -> None:
    with tempfile.TemporaryDirectory(prefix="kage-", dir="/tmp") as d:
        path = f"{d}/a.sock"
        listener = early.bind(f"unix://{path}")
        assert listener is not None
        done = threading.Event()
        result: list[early.Handover] = []
        thread = threading.Thread(
            target=lambda: result.append(early.EarlyServer(listener, "unix:///test").serve(done))
        )
        thread.start()
        check = _request("grpc.Health", "Check")
        frames = [
            framing.encode(2, framing.TYPE_REQUEST, check),  # even stream id
            framing.encode(1, framing.TYPE_DATA, b""),  # not a request
            framing.encode(1, framing.TYPE_REQUEST, check, flags=framing.FLAG_REMOTE_OPEN),
            framing.HEADER.pack(5 << 20, 1, 1, 0),  # oversized
            framing.HEADER.pack(4 << 20, 1, 1, 0),  # too big for a Check: never buffered here
            framing.encode(1, framing.TYPE_REQUEST, _request("grpc.AgentService", "GetMetrics")),
        ]
        socks = []
        before = time.monotonic()
        try:
            for data in frames:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                s.sendall(data + framing.encode(9, framing.TYPE_REQUEST, check))
                socks.append(s)
            # none of them is answered in phase 0: everything waits for the real server
            for s in socks:
                s.settimeout(0.3)
                with pytest.raises(TimeoutError):
                    s.recv(1)
        finally:
            done.set()
            thread.join(10)
            for s in socks:
                s.close()
        assert result[0].answered == 0
        result[0].listener.close()
        for conn in result[0].connections:
            conn.sock.close()
        assert all(not c.early for c in result[0].connections)
        # when the first of them was held (phase 1 logs how long it waited)
        held = [c.held_since for c in result[0].connections]
        assert all(h is not None and before <= h <= time.monotonic() for h in held)
        assert result[0].held_since == min(h for h in held if h is not None)
