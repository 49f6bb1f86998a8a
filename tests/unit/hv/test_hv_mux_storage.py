"""hv.mux adds the shared directory's storage to CreateSandbox (the Go runtime sends none to a
remote hypervisor), in front of an in-process ttrpc server that records what reaches it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from agent.rpc.client import TtrpcClient
from agent.rpc.dispatch import AGENT_SERVICE, Dispatcher
from agent.rpc.pb import agent_pb2
from agent.rpc.server import TtrpcServer, encode_error, encode_ok
from agent.rpc.status import Code, RpcError
from hv.mux import AgentMux, reply_code
from hv.shared import GUEST_SHARED, shared_storage


class Recorder:
    def __init__(self) -> None:
        self.requests: list[agent_pb2.CreateSandboxRequest] = []

    async def CreateSandbox(self, req: agent_pb2.CreateSandboxRequest) -> empty_pb2.Empty:
        self.requests.append(req)
        return empty_pb2.Empty()


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[tuple[Path, Recorder]]:
    recorder = Recorder()
    server = TtrpcServer(Dispatcher({AGENT_SERVICE: recorder}))
    path = tmp_path / "agent.sock"
    await server.listen(f"unix://{path}")
    try:
        yield path, recorder
    finally:
        await server.close()


async def _mux(channel: Path, storage: Any) -> AgentMux:
    mux = AgentMux(channel, channel.parent / "mux.sock", shared_storage=storage)
    await mux.connect()
    await mux.listen()
    return mux


@pytest.mark.parametrize("mode", ["virtio-fs", "9p"])
async def test_create_sandbox_without_the_share_gets_it_first(
    agent: tuple[Path, Recorder], mode: str
) -> None:
    path, recorder = agent
    mux = await _mux(path, shared_storage(mode))
    other = agent_pb2.Storage(driver="ephemeral", source="shm", mount_point="/dev/shm")
    try:
        async with await TtrpcClient.connect(f"unix://{mux.listen_path}") as client:
            await client.agent.CreateSandbox(
                agent_pb2.CreateSandboxRequest(sandbox_id="s", hostname="h", storages=[other])
            )
    finally:
        await mux.close()
    (req,) = recorder.requests
    assert list(req.storages) == [shared_storage(mode), other]
    assert req.storages[0].mount_point == GUEST_SHARED
    assert (req.sandbox_id, req.hostname) == ("s", "h")


@pytest.mark.parametrize("mount_point", [GUEST_SHARED, GUEST_SHARED.rstrip("/")])
async def test_create_sandbox_that_mounts_the_share_is_left_alone(
    agent: tuple[Path, Recorder], mount_point: str
) -> None:
    path, recorder = agent
    mux = await _mux(path, shared_storage("virtio-fs"))
    mine = agent_pb2.Storage(driver="virtio-fs", source="other", mount_point=mount_point)
    try:
        async with await TtrpcClient.connect(f"unix://{mux.listen_path}") as client:
            await client.agent.CreateSandbox(agent_pb2.CreateSandboxRequest(storages=[mine]))
    finally:
        await mux.close()
    assert list(recorder.requests[0].storages) == [mine]


async def test_without_a_share_nothing_is_added(agent: tuple[Path, Recorder]) -> None:
    path, recorder = agent
    mux = await _mux(path, None)
    try:
        async with await TtrpcClient.connect(f"unix://{mux.listen_path}") as client:
            await client.agent.CreateSandbox(agent_pb2.CreateSandboxRequest())
    finally:
        await mux.close()
    assert list(recorder.requests[0].storages) == []


async def test_an_undecodable_create_sandbox_reaches_the_agent_unchanged(
    agent: tuple[Path, Recorder],
) -> None:
    path, recorder = agent
    mux = await _mux(path, shared_storage("virtio-fs"))
    try:
        async with await TtrpcClient.connect(f"unix://{mux.listen_path}") as client:
            code, message, _ = await client.call_raw(AGENT_SERVICE, "CreateSandbox", b"\xff\x01")
    finally:
        await mux.close()
    assert code == Code.INVALID_ARGUMENT
    assert "cannot decode grpc.CreateSandboxRequest" in message
    assert recorder.requests == []


def test_reply_code_reads_only_the_status() -> None:
    assert reply_code(encode_ok(b"x" * 100)) == Code.OK
    assert reply_code(b"") == Code.OK
    assert reply_code(encode_error(Code.NOT_FOUND, "gone")) == Code.NOT_FOUND
    payload_first = b"\x12\x01x" + encode_error(Code.INTERNAL, "e")  # status after the payload
    assert reply_code(payload_first) == Code.INTERNAL
    assert reply_code(b"\x0a\x05\x08") == Code.UNKNOWN  # truncated


async def test_mux_own_call_maps_the_agent_status(agent: tuple[Path, Recorder]) -> None:
    path, _ = agent
    mux = await _mux(path, None)
    try:
        with pytest.raises(RpcError) as err:
            await mux.call(
                AGENT_SERVICE,
                "DestroySandbox",
                agent_pb2.DestroySandboxRequest(),
                empty_pb2.Empty,
                timeout=5,
            )
    finally:
        await mux.close()
    assert err.value.code == Code.UNIMPLEMENTED
