"""Serial phase 0 (agent.rpc.early_serial): Check answered on an open port before asyncio runs,
then the asyncio serial listener adopts the port with what phase 0 buffered; nothing lost or
answered twice. A socketpair stands in for the virtio-serial port (a byte stream that reads EOF
and polls POLLHUP once the host end is gone)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from agent.rpc import early_serial, early_wire, framing
from agent.rpc.dispatch import Dispatcher
from agent.rpc.health_servicer import HealthServicer
from agent.rpc.pb import health_pb2, request_pb2
from agent.rpc.server import TtrpcServer

ADDRESS = "serial:///dev/virtio-ports/test.channel"


def _request(service: str, method: str, payload: bytes = b"") -> bytes:
    return request_pb2.Request(service=service, method=method, payload=payload).SerializeToString()


CHECK = _request("grpc.Health", "Check", health_pb2.CheckRequest().SerializeToString())


def _recv_frames(sock: socket.socket, count: int) -> dict[int, request_pb2.Response]:
    parser = framing.FrameParser()
    got: dict[int, request_pb2.Response] = {}
    while len(got) < count:
        chunk = sock.recv(65536)
        assert chunk, "port closed"
        for event in parser.feed(chunk):
            assert isinstance(event, framing.Frame)
            assert event.type == framing.TYPE_RESPONSE
            assert event.stream_id not in got, f"stream {event.stream_id} answered twice"
            got[event.stream_id] = request_pb2.Response.FromString(event.data)
    return got


class _Phase0:
    """The early server on the guest end of a socketpair, in a thread (PID 1's main thread)."""

    def __init__(self) -> None:
        self.host, guest = socket.socketpair()
        self.host.settimeout(10)
        guest.setblocking(False)
        self.handover = early_serial.SerialHandover(ADDRESS, "/nonexistent", guest.detach())
        self.done = threading.Event()
        self.started = threading.Event()
        self.result: list[early_serial.SerialHandover] = []

        def start() -> threading.Event:
            self.started.set()
            return self.done

        self.thread = threading.Thread(
            target=lambda: self.result.append(
                early_serial.EarlySerialServer(self.handover).serve(start)
            )
        )
        self.thread.start()

    def finish(self) -> early_serial.SerialHandover:
        self.done.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        return self.result[0]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (CHECK, True),
        (_request("grpc.Health", "Version"), False),
        (_request("grpc.AgentService", "Check"), False),
        (b"\xff\xff", False),
        (b"", False),
    ],
)
def test_is_plain_check(body: bytes, expected: bool) -> None:
    assert early_wire.is_plain_check(body) is expected


def test_check_answered_then_port_adopted_without_loss() -> None:
    p = _Phase0()
    try:
        p.host.sendall(framing.encode(1, framing.TYPE_REQUEST, CHECK))
        got = _recv_frames(p.host, 1)
        assert health_pb2.HealthCheckResponse.FromString(got[1].payload).status == 1
        assert p.started.wait(10)
        # A request phase 0 cannot answer, a Check behind it and half a frame: all buffered.
        version = _request("grpc.Health", "Version", health_pb2.CheckRequest().SerializeToString())
        tail = framing.encode(7, framing.TYPE_REQUEST, CHECK)
        p.host.sendall(
            framing.encode(3, framing.TYPE_REQUEST, version)
            + framing.encode(5, framing.TYPE_REQUEST, CHECK)
            + tail[:6]
        )
        p.host.settimeout(0.3)
        with pytest.raises(TimeoutError):
            p.host.recv(1)  # nothing more is answered in phase 0
        p.host.settimeout(10)
    finally:
        handover = p.finish()
    assert handover.answered == 1
    assert handover.connected
    assert handover.fd is not None

    async def phase1() -> None:
        server = TtrpcServer(Dispatcher({"grpc.Health": HealthServicer()}))
        await server.listen(ADDRESS, serial=handover)
        loop = asyncio.get_running_loop()
        p.host.setblocking(False)
        await loop.sock_sendall(p.host, tail[6:])
        got = await asyncio.wait_for(loop.run_in_executor(None, _blocking_recv, p.host, 3), 20)
        assert set(got) == {3, 5, 7}
        assert health_pb2.VersionCheckResponse.FromString(got[3].payload).grpc_version == "0.0.1"
        # the same session goes on with the asyncio server
        await loop.sock_sendall(p.host, framing.encode(9, framing.TYPE_REQUEST, CHECK))
        got = await asyncio.wait_for(loop.run_in_executor(None, _blocking_recv, p.host, 1), 20)
        assert set(got) == {9}
        await server.close()

    with asyncio.Runner() as runner:
        runner.run(phase1())
    p.host.close()


def _blocking_recv(sock: socket.socket, count: int) -> dict[int, request_pb2.Response]:
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        return _recv_frames(sock, count)
    finally:
        sock.setblocking(False)


def test_hang_up_discards_the_sessions_partial_input() -> None:
    p = _Phase0()
    try:
        p.host.sendall(framing.encode(1, framing.TYPE_REQUEST, CHECK))
        _recv_frames(p.host, 1)
        p.host.sendall(framing.encode(3, framing.TYPE_REQUEST, CHECK)[:5])
        p.host.close()  # the host goes away with half a frame sent
        deadline = threading.Event()
        for _ in range(200):  # until phase 0 has seen the hang-up
            if not p.handover.connected:
                break
            deadline.wait(0.01)
    finally:
        handover = p.finish()
    assert handover.answered == 1
    assert not handover.connected
    assert handover.inbuf == b""
    handover.close()
    assert handover.fd is None


@pytest.mark.parametrize(
    "frame",
    [
        framing.encode(2, framing.TYPE_REQUEST, CHECK),  # even stream id
        framing.encode(1, framing.TYPE_DATA, b""),  # not a request
        framing.encode(1, framing.TYPE_REQUEST, CHECK, flags=framing.FLAG_REMOTE_OPEN),
        framing.encode(1, framing.TYPE_REQUEST, _request("grpc.AgentService", "GetMetrics")),
    ],
)
def test_unanswerable_frames_stop_early_service(frame: bytes) -> None:
    p = _Phase0()
    data = frame + framing.encode(9, framing.TYPE_REQUEST, CHECK)
    before = time.monotonic()
    try:
        p.host.sendall(data)
        p.host.settimeout(0.3)
        with pytest.raises(TimeoutError):
            p.host.recv(1)
    finally:
        handover = p.finish()
    assert handover.answered == 0
    assert bytes(handover.inbuf) == data  # left intact for the real server
    assert handover.held_since is not None  # phase 1 logs how long it waited
    assert before <= handover.held_since <= time.monotonic()
    handover.close()
    p.host.close()
