"""Listeners and dialers other than a plain unix socket: serial ports, vsock, hybrid vsock, gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.rpc.client import TtrpcClient
from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.status import Code, RpcError
from tests.support.agent import AgentProcess

Factory = Callable[..., AgentProcess]


async def _wait_for_log(agent: AgentProcess, msg: str, count: int = 1) -> None:
    """Poll the agent's log file (another process: there is no event to await)."""
    async with asyncio.timeout(30):
        while sum(1 for r in agent.logs() if r.get("msg") == msg) < count:
            if not agent.alive():
                raise AssertionError(f"agent exited:\n{agent.log_text()}")
            await asyncio.sleep(0.05)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kagt-", dir="/tmp") as d:
        yield Path(d)


async def test_serial_port_over_a_pty(agent_factory: Factory) -> None:
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    try:
        agent = agent_factory(address=f"serial://{name}", wait=False)
        await _wait_for_log(agent, "serial port opened")
        client = TtrpcClient.from_fd(master, is_socket=False)
        master = -1
        try:
            resp = await client.health.Check(health_pb2.CheckRequest(), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            # binary payload with bytes a tty line discipline would mangle (\r, \n, ^C, ^D)
            details = await client.agent.GetGuestDetails(
                agent_pb2.GuestDetailsRequest(mem_block_size=True), timeout=10
            )
            assert details.agent_details.version
            data = bytes(range(256)) * 64
            with pytest.raises(RpcError) as info:
                await client.agent.CopyFile(
                    agent_pb2.CopyFileRequest(path="/\r\n\x03\x04", data=data), timeout=10
                )
            assert info.value.code == Code.PERMISSION_DENIED
        finally:
            await client.close()
        assert agent.alive()
    finally:
        if master >= 0:
            os.close(master)


async def test_serial_port_reopened_after_hangup(agent_factory: Factory, short_dir: Path) -> None:
    """The host side (here: a unix socket standing in for the VMM's chardev) disconnects; the
    agent cancels that session's calls and serves the next connection."""
    path = short_dir / "port.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        agent = agent_factory(address=f"serial://{path}", wait=False, test_servicer=True)
        for session in range(1, 4):
            async with asyncio.timeout(30):
                conn, _ = await loop.sock_accept(listener)
            client = TtrpcClient.from_fd(conn.detach(), is_socket=True)
            resp = await client.health.Check(health_pb2.CheckRequest(), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            # answered once the AgentService stack is loaded (two-phase start-up)
            code, _, _ = await client.call_raw("grpc.AgentService", "Probe", b"", timeout=60)
            assert code == Code.UNIMPLEMENTED
            parked = asyncio.ensure_future(client.agent.GetOOMEvent(agent_pb2.GetOOMEventRequest()))
            await client.health.Check(health_pb2.CheckRequest(), timeout=10)
            await client.close()  # host hangs up
            with contextlib.suppress(RpcError):
                await parked
            await _wait_for_log(agent, "parked call cancelled", session)
            await _wait_for_log(agent, "serial connection hung up", session)
        assert agent.alive()
    finally:
        listener.close()


def _vsock_available() -> bool:
    try:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s:
            s.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        return True
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _vsock_available(), reason="AF_VSOCK is not available on this host")
async def test_vsock_listener_binds_the_port(agent_factory: Factory) -> None:
    # Nothing can connect over vsock on this host (no loopback transport): check the agent holds
    # the port and keeps running.
    with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as probe:
        probe.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        port = probe.getsockname()[1]
    agent = agent_factory(address=f"vsock://-1:{port}", wait=False)
    await _wait_for_log(agent, "announce")
    with (
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as s,
        pytest.raises(OSError, match="Address already in use") as info,
    ):
        s.bind((socket.VMADDR_CID_ANY, port))
    assert info.value.errno == 98  # EADDRINUSE: the agent listens there
    assert agent.alive()


async def test_listen_failure_is_reported(agent_factory: Factory, short_dir: Path) -> None:
    blocker = short_dir / "not-a-dir"
    blocker.write_text("")
    agent = agent_factory(address=f"unix://{blocker}/agent.sock", wait=False)
    async with asyncio.timeout(30):
        while agent.alive():  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.05)
    assert agent.proc.returncode == 1
    assert "Not a directory" in agent.log_text()


async def _fake_vmm(listener: socket.socket, agent_sock: str, reply: bytes) -> None:
    """Accept one hybrid-vsock client, answer its CONNECT line, then splice to the agent."""
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(listener)
    line = b""
    while not line.endswith(b"\n"):
        line += await loop.sock_recv(conn, 1)
    assert line == b"CONNECT 1024\n"
    await loop.sock_sendall(conn, reply)
    if b"OK" not in reply:
        conn.close()
        return
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    up.setblocking(False)
    await loop.sock_connect(up, agent_sock)

    async def pump(a: socket.socket, b: socket.socket) -> None:
        while data := await loop.sock_recv(a, 65536):
            await loop.sock_sendall(b, data)
        b.shutdown(socket.SHUT_WR)

    await asyncio.gather(pump(conn, up), pump(up, conn), return_exceptions=True)
    conn.close()
    up.close()


async def test_hvsock_dial(agent: AgentProcess, short_dir: Path) -> None:
    path = short_dir / "clh.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.setblocking(False)
    try:
        vmm = asyncio.ensure_future(_fake_vmm(listener, str(agent.socket_path), b"OK 1073741824\n"))
        client = await TtrpcClient.connect(f"hvsock://{path}:1024", timeout=10)
        resp = await client.health.Check(health_pb2.CheckRequest(), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        await client.close()
        await asyncio.wait_for(vmm, 10)

        vmm = asyncio.ensure_future(_fake_vmm(listener, str(agent.socket_path), b"FAILURE\n"))
        with pytest.raises(ConnectionError, match="CONNECT 1024 refused: FAILURE"):
            await TtrpcClient.connect(f"hvsock://{path}:1024", timeout=10)
        await asyncio.wait_for(vmm, 10)
    finally:
        listener.close()


async def test_vsock_bridge_pumps_bytes(agent: AgentProcess, short_dir: Path) -> None:
    """The byte bridge used for gRPC over vsock, exercised with unix sockets on both sides."""
    from agent.rpc.grpc_server import VsockBridge

    front = short_dir / "front.sock"
    bridge = VsockBridge(str(front), str(agent.socket_path), family=socket.AF_UNIX)
    await bridge.start()
    try:
        async with await TtrpcClient.connect(f"unix://{front}") as client:
            for _ in range(5):
                await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    finally:
        await bridge.close()


def test_grpc_serves_the_same_servicers(agent_factory: Factory) -> None:
    import grpc
    from grpc_health.v1 import health_pb2 as hv1
    from grpc_health.v1 import health_pb2_grpc as hv1_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    workdir = Path(tempfile.mkdtemp(prefix="kagg-", dir="/tmp"))
    gpath = workdir / "grpc.sock"
    agent = agent_factory(args=["--grpc-addr", f"unix://{gpath}"])
    with grpc.insecure_channel(f"unix://{gpath}") as channel:
        check = channel.unary_unary(
            "/grpc.Health/Check",
            request_serializer=health_pb2.CheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        assert check(health_pb2.CheckRequest(), timeout=30).status == 1
        memcg = channel.unary_unary(
            "/grpc.AgentService/MemAgentMemcgSet",
            request_serializer=agent_pb2.MemAgentMemcgConfig.SerializeToString,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as info:
            memcg(agent_pb2.MemAgentMemcgConfig(), timeout=30)
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert info.value.details() == "mem-agent is disabled"
        copy = channel.unary_unary(
            "/grpc.AgentService/CopyFile",
            request_serializer=agent_pb2.CopyFileRequest.SerializeToString,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as info:
            copy(agent_pb2.CopyFileRequest(path="/etc/passwd"), timeout=30)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "only paths below" in info.value.details()
        status = hv1_grpc.HealthStub(channel).Check(
            hv1.HealthCheckRequest(service="grpc.AgentService"), timeout=30
        )
        assert status.status == hv1.HealthCheckResponse.SERVING
        replies = list(
            reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"grpc.AgentService", "grpc.Health", "grpc.health.v1.Health"} <= names
    assert agent.alive()
    agent.stop()
    with contextlib.suppress(FileNotFoundError):
        gpath.unlink()
    workdir.rmdir()


def _without_uvloop(tmp_path: Path) -> str:
    """A PYTHONPATH under which `import uvloop` fails, as on a machine without it."""
    blocker = tmp_path / "no-uvloop" / "uvloop"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("uvloop is not installed here")\n')
    return f"{blocker.parent}:{Path(__file__).resolve().parents[3]}"


async def test_runs_on_uvloop_and_falls_back_without_it(
    agent_factory: Factory, tmp_path: Path
) -> None:
    agent = agent_factory()
    announce = next(r for r in agent.logs() if r.get("msg") == "announce")
    assert announce["loop"].startswith("uvloop")
    agent = agent_factory(env={"PYTHONPATH": _without_uvloop(tmp_path)})
    async with await agent.client() as client:
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)
    announce = next(r for r in agent.logs() if r.get("msg") == "announce")
    assert announce["loop"] == "asyncio.unix_events"
