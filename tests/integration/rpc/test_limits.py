"""Connection limits of a real agent (agent.rpc.server ConnectionLimits): a connection stalled
inside a frame is closed, partial frames of many connections cannot hold more than the memory
bound, connections beyond the cap are refused, and the live connection is served throughout."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from agent.rpc.pb import agent_pb2, request_pb2
from tests.support.agent import AgentProcess, check_on

Factory = Callable[..., AgentProcess]
HEADER = struct.Struct(">IIBB")


def _connect(agent: AgentProcess) -> socket.socket:
    assert agent.socket_path is not None
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(agent.socket_path))
    return sock


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def _stall(sock: socket.socket, frame_len: int, send: int) -> int:
    """Announce a frame of ``frame_len`` bytes and send ``send`` of them (as far as the agent
    reads), then stop; returns how many body bytes went out."""
    sock.sendall(HEADER.pack(frame_len, 1, 1, 0))
    sock.setblocking(False)
    sent = 0
    chunk = b"\0" * 65536
    last_progress = time.monotonic()
    while sent < send and time.monotonic() - last_progress < 0.3:  # the agent stopped reading
        try:
            sent += sock.send(chunk[: min(len(chunk), send - sent)])
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break  # evicted meanwhile
    sock.setblocking(True)
    return sent


@pytest.fixture
def socks() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def test_stalled_frame_is_closed_and_others_served(
    agent_factory: Factory, socks: list[socket.socket]
) -> None:
    agent = agent_factory(args=["--idle-frame-timeout", "1"])
    live = _connect(agent)
    stalled = _connect(agent)
    socks += [live, stalled]
    stalled.sendall(HEADER.pack(100, 1, 1, 0) + b"\x0a\x0bgrpc.He")  # then nothing more
    assert check_on(live)
    assert _closed_by_peer(stalled, within=30)
    assert check_on(live)
    assert any(
        r.get("msg") == "closing connection: no progress inside a frame" for r in agent.logs()
    )


def test_idle_between_frames_is_fine(agent_factory: Factory, socks: list[socket.socket]) -> None:
    """Only a stall inside a frame counts: a connection quiet between calls stays open."""
    agent = agent_factory(args=["--idle-frame-timeout", "1"])
    sock = _connect(agent)
    socks.append(sock)
    assert check_on(sock)
    assert not _closed_by_peer(sock, within=2.5)
    sock.settimeout(10)
    assert check_on(sock)


def test_connections_beyond_the_cap_are_refused(
    agent_factory: Factory, socks: list[socket.socket]
) -> None:
    agent = agent_factory(args=["--max-connections", "3"])
    first = [_connect(agent) for _ in range(3)]
    socks += first
    assert all(check_on(s) for s in first)
    extra = _connect(agent)  # the kernel accepts; the agent closes it at once
    socks.append(extra)
    assert _closed_by_peer(extra, within=30)
    assert all(check_on(s) for s in first)
    first[0].close()
    deadline = time.monotonic() + 30
    while True:  # the slot is free once the agent has seen the close
        again = _connect(agent)
        socks.append(again)
        if check_on(again) or time.monotonic() > deadline:
            break
    assert check_on(again)
    assert any(r.get("msg") == "connection refused: too many connections" for r in agent.logs())


def _copy_file_frame(size: int) -> bytes:
    """A CopyFile request frame of about ``size`` bytes (the runtime sends 1 MiB chunks)."""
    req = agent_pb2.CopyFileRequest(path="/nonexistent/x", file_size=size, data=b"y" * size)
    body = request_pb2.Request(
        service="grpc.AgentService", method="CopyFile", payload=req.SerializeToString()
    ).SerializeToString()
    return HEADER.pack(len(body), 3, 1, 0) + body


def test_partial_frames_are_bounded_and_the_live_connection_served(
    agent_factory: Factory, socks: list[socket.socket]
) -> None:
    """16 connections each stop 17 bytes short of a 4 MiB frame with a 2 MiB budget: the agent
    stops reading them once the budget is spent, a live connection's 1 MiB call still completes
    (the oldest stalled frames are evicted for it), and Check answers throughout. The memory
    figure with 64 stalled connections is measured by bench/soak.py --stalled."""
    agent = agent_factory(args=["--frame-memory-limit", "2M", "--idle-frame-timeout", "600"])
    live = _connect(agent)
    socks.append(live)
    assert check_on(live)
    stalled = []
    for _ in range(16):
        s = _connect(agent)
        socks.append(s)
        stalled.append(s)
        _stall(s, 4 << 20, (4 << 20) - 17)
    assert check_on(live)
    live.sendall(_copy_file_frame(1 << 20))
    live.settimeout(60)
    reply = b""
    while len(reply) < 10:
        chunk = live.recv(4096)
        assert chunk, "the live connection was closed"
        reply += chunk
    _length, sid, typ, _ = HEADER.unpack_from(reply)
    assert (sid, typ) == (3, 2)  # answered (PermissionDenied: the path is outside the share)
    msgs = [r.get("msg", "") for r in agent.logs()]
    assert "connection waits for frame memory" in msgs  # the budget stopped the reading
    assert any(m.startswith("closing connection: partial frame memory") for m in msgs)
    assert check_on(live)
