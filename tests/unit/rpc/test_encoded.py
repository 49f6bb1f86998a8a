"""agent.rpc.encoded: hand-encoded responses are byte-identical to protobuf's own encoding, and
the ttrpc server sends them as the same frame it would send for the message."""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

from agent.rpc import encoded
from agent.rpc.client import TtrpcClient
from agent.rpc.dispatch import Dispatcher
from agent.rpc.pb import agent_pb2
from agent.rpc.server import TtrpcServer, encode_ok
from agent.rpc.status import Code, RpcError

SIZES = [0, 1, 2, 127, 128, 129, 300, 16383, 16384, 16385, 32768, 65536, 2097151, 2097152, 4 << 20]


@pytest.mark.parametrize("n", [1, 127, 128, 16383, 16384, 2097151, 2097152, 0xFFFFFFFF])
def test_varint_matches_protobuf(n: int) -> None:
    tag = agent_pb2.ReadStreamRequest.DESCRIPTOR.fields_by_name["len"].number << 3  # uint32
    expected = agent_pb2.ReadStreamRequest(len=n).SerializeToString()
    assert expected == encoded.varint(tag) + encoded.varint(n)


@pytest.mark.parametrize("size", SIZES)
def test_bytes_field_is_byte_identical(size: int) -> None:
    data = os.urandom(size)
    pre = encoded.bytes_field(agent_pb2.ReadStreamResponse, 1, data)
    assert pre.SerializeToString() == agent_pb2.ReadStreamResponse(data=data).SerializeToString()
    assert pre.size == len(pre.SerializeToString())
    assert pre.decode().data == data
    # the payload object itself is a part: it is never copied
    if size:
        assert pre.parts[-1] is data


def test_frame_is_byte_identical_to_serialized_message() -> None:
    """What the server writes for PreEncoded parts equals encode_ok of the serialized message."""
    for size in SIZES:
        data = os.urandom(size)
        pre = encoded.bytes_field(agent_pb2.ReadStreamResponse, 1, data)
        serialized = agent_pb2.ReadStreamResponse(data=data).SerializeToString()
        prefix = b"\x0a\x00" + (b"\x12" + encoded.varint(pre.size) if pre.size else b"")
        assert prefix + b"".join(pre.parts) == encode_ok(serialized)


class _Servicer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def ReadStdout(
        self, req: agent_pb2.ReadStreamRequest
    ) -> encoded.PreEncoded[agent_pb2.ReadStreamResponse]:
        return encoded.bytes_field(agent_pb2.ReadStreamResponse, 1, self.data[: req.len])

    async def ReadStderr(
        self, req: agent_pb2.ReadStreamRequest
    ) -> encoded.PreEncoded[agent_pb2.WaitProcessResponse]:
        return encoded.PreEncoded(agent_pb2.WaitProcessResponse, ())  # wrong type on purpose


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_server_sends_pre_encoded_responses(loop_name: str) -> None:
    data = os.urandom(3 << 20)

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            server = TtrpcServer(Dispatcher({"grpc.AgentService": _Servicer(data)}))
            address = f"unix://{d}/s.sock"
            await server.listen(address)
            client = await TtrpcClient.connect(address)
            try:
                for n in (1, 100, 65536, 65537, 1 << 20, 3 << 20, 0):
                    req = agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=n)
                    # several at once: frames must never interleave
                    replies = await asyncio.gather(
                        *(client.agent.ReadStdout(req) for _ in range(4))
                    )
                    assert all(r.data == data[:n] for r in replies)
                with pytest.raises(RpcError) as err:
                    await client.agent.ReadStderr(agent_pb2.ReadStreamRequest(len=1))
                assert err.value.code == Code.INTERNAL
                assert "WaitProcessResponse" in str(err.value)
            finally:
                await client.close()
                await server.close()

    factory = None
    if loop_name == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def test_bytes_field_of_several_pieces() -> None:
    pieces = [os.urandom(70000), b"", os.urandom(5), os.urandom(100)]
    pre = encoded.bytes_field(agent_pb2.ReadStreamResponse, 1, *pieces)
    joined = b"".join(pieces)
    assert pre.SerializeToString() == agent_pb2.ReadStreamResponse(data=joined).SerializeToString()
    assert pre.size == len(pre.SerializeToString())
    assert [p for p in pre.parts[1:]] == [p for p in pieces if p]
    assert encoded.bytes_field(agent_pb2.ReadStreamResponse, 1).parts == ()
