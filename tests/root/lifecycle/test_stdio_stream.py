"""Process output through a real agent, byte for byte: ReadStdout/ReadStderr answered at once
from the pipe or read ahead (agent.sandbox.stdio, agent.rpc.server's synchronous path) or parked
until output arrives, with the shim's len and with others, stdout and stderr at the same time."""

from __future__ import annotations

import asyncio

from agent.rpc.pb import agent_pb2
from tests.root.lifecycle.conftest import Pod


def seq(first: int, last: int) -> bytes:
    return b"".join(f"{i}\n".encode() for i in range(first, last + 1))


async def test_large_stdout_and_stderr_at_once_are_complete_and_in_order(pod: Pod) -> None:
    status, out, err = await pod.run("c1", ["sh", "-c", "seq 1 300000 & seq 1 200000 >&2; wait"])
    assert status == 0
    assert out == seq(1, 300000)
    assert err == seq(1, 200000)


async def test_reads_of_changing_len_get_every_byte(pod: Pod) -> None:
    """Lengths below, at and above the read-ahead size: what one reply does not take comes first
    in the next, whatever its len."""
    await pod.create("c1", ["sh", "-c", "seq 1 150000; sleep 0.2; seq 150001 160000"])
    err = asyncio.create_task(pod.read("c1", "c1", stderr=True))
    lens = [100, 32768, 1, 65537, 1 << 20, 4096, 65536]
    got = bytearray()
    i = 0
    while True:
        n = lens[i % len(lens)]
        i += 1
        resp = await pod.a.ReadStdout(
            agent_pb2.ReadStreamRequest(container_id="c1", exec_id="c1", len=n), timeout=120
        )
        assert len(resp.data) <= n
        if not resp.data:
            break
        got += resp.data
    assert bytes(got) == seq(1, 160000)
    assert await err == b""
    assert await pod.wait("c1", "c1") == 0
    await pod.remove("c1")


async def test_parked_read_is_answered_when_output_comes(pod: Pod) -> None:
    """Nothing to read yet: the call parks (the async path) and gets the first output, then EOF
    after the process exits."""
    await pod.create("c1", ["sh", "-c", "read line; echo got $line"])
    parked = asyncio.create_task(
        pod.a.ReadStdout(
            agent_pb2.ReadStreamRequest(container_id="c1", exec_id="c1", len=32768), timeout=120
        )
    )
    await asyncio.sleep(0.1)
    assert not parked.done()
    await pod.write("c1", "c1", b"hello\n")
    assert (await asyncio.wait_for(parked, 60)).data == b"got hello\n"
    assert await pod.read("c1", "c1") == b""
    assert await pod.wait("c1", "c1") == 0
    await pod.remove("c1")
