"""No output is lost, whatever the order of WaitProcess, ReadStdout/ReadStderr, CloseStdin and the
exit (agent.sandbox.process): racing trials through a real agent, on one connection and two, as
the shim's copy loops and its wait race; and the bounds: the stdio of an exited process nobody
reads is released after the grace period and by RemoveContainer, and no fd is left behind.

Each trial execs ``head -c N /pattern`` (and, in some, ``head -c M /pattern >&2``) in a running
container, where /pattern is 1 MiB of seeded random bytes, so every reply is checked for content
and order, not only for length. A gated trial's process first waits on stdin (``read``), so its
WaitProcess or reads are certainly issued before the exit; the gate is opened by CloseStdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from tests.root.lifecycle.conftest import PRIVATE_MNT, Pod, agent_fds
from tests.support.agent import AgentProcess

TRIALS = 1000
CONCURRENT = 8  # trials in flight at once
PIPE = 65536  # the default pipe: a process writing no more than this exits without a reader
PATTERN = random.Random(15).randbytes(1 << 20)
READ_LENS = (1024, 4096, 32768, 65536, 262144, 1 << 20)
# How the host orders its calls; "wait_first" needs output that fits the pipes (the process
# cannot exit before someone reads the rest).
ORDERS = ("shim", "read_all_then_wait", "read_some_then_wait", "wait_first")


@dataclass(frozen=True)
class Trial:
    eid: str
    out: int  # bytes written to stdout
    err: int  # bytes written to stderr
    read_len: int
    order: str
    gated: bool  # the process waits for CloseStdin before writing
    wait_on_other: bool  # WaitProcess on the second connection

    @property
    def command(self) -> str:
        cmd = f"head -c {self.out} /pattern"
        if self.err:
            cmd += f"; head -c {self.err} /pattern >&2"
        return f"read x; {cmd}" if self.gated else cmd


def _size(rng: random.Random) -> int:
    """1 byte to 1 MiB, log-uniform, with the pipe-size edges."""
    if rng.random() < 0.1:
        return rng.choice((1, PIPE - 1, PIPE, PIPE + 1, 1 << 20))
    return max(1, int(2 ** rng.uniform(0, 20)))


def make_trials(n: int, seed: int = 1515) -> list[Trial]:
    rng = random.Random(seed)
    trials = []
    for i in range(n):
        out = _size(rng)
        err = _size(rng) if rng.random() < 0.3 else 0
        orders = ORDERS if max(out, err) <= PIPE else ORDERS[:-1]
        trials.append(
            Trial(
                eid=f"t{i}",
                out=out,
                err=err,
                read_len=rng.choice(READ_LENS),
                order=orders[i % len(orders)],
                gated=rng.random() < 0.5,
                wait_on_other=rng.random() < 0.5,
            )
        )
    return trials


async def read_to_eof(client: Any, cid: str, eid: str, n: int, *, stderr: bool) -> bytes:
    call = client.agent.ReadStderr if stderr else client.agent.ReadStdout
    got = bytearray()
    while True:
        resp = await call(
            agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=n), timeout=120
        )
        assert len(resp.data) <= n
        if not resp.data:
            return bytes(got)
        got += resp.data


async def read_once(client: Any, cid: str, eid: str, n: int, *, stderr: bool) -> bytes:
    call = client.agent.ReadStderr if stderr else client.agent.ReadStdout
    resp = await call(
        agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=n), timeout=120
    )
    return bytes(resp.data)


async def wait_process(client: Any, cid: str, eid: str) -> int:
    resp = await client.agent.WaitProcess(
        agent_pb2.WaitProcessRequest(container_id=cid, exec_id=eid), timeout=120
    )
    return int(resp.status)


async def close_stdin(client: Any, cid: str, eid: str) -> None:
    await client.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=eid))


async def run_trial(pod: Pod, other: Any, cid: str, t: Trial) -> None:
    a = pod.client
    waiter = other if t.wait_on_other else a
    await pod.exec(cid, t.eid, ["sh", "-c", t.command])

    async def both_outputs(first: tuple[bytes, bytes] = (b"", b"")) -> tuple[bytes, bytes]:
        out, err = await asyncio.gather(
            read_to_eof(a, cid, t.eid, t.read_len, stderr=False),
            read_to_eof(a, cid, t.eid, t.read_len, stderr=True),
        )
        return first[0] + out, first[1] + err

    if t.order == "shim":  # copy loops and the wait at once, the gate opened meanwhile
        reads = asyncio.ensure_future(both_outputs())
        wait = asyncio.ensure_future(wait_process(waiter, cid, t.eid))
        await asyncio.sleep(0)
        await close_stdin(a, cid, t.eid)
        (out, err), status = await asyncio.gather(reads, wait)
    elif t.order == "read_all_then_wait":
        await close_stdin(a, cid, t.eid)
        out, err = await both_outputs()
        status = await wait_process(waiter, cid, t.eid)
    elif t.order == "read_some_then_wait":  # the wait comes while output is left (or parked)
        await close_stdin(a, cid, t.eid)
        first = await read_once(a, cid, t.eid, t.read_len, stderr=False)  # stdout comes first
        wait = asyncio.ensure_future(wait_process(waiter, cid, t.eid))
        await asyncio.sleep(0)
        (out, err), status = await asyncio.gather(both_outputs((first, b"")), wait)
    else:  # wait_first: the wait returns (the exit happened) before any read
        wait = asyncio.ensure_future(wait_process(waiter, cid, t.eid))
        await asyncio.sleep(0)
        if t.gated:
            await close_stdin(a, cid, t.eid)
        status = await wait
        if not t.gated:
            await close_stdin(a, cid, t.eid)  # after the exit
        out, err = await both_outputs()
    assert status == 0, t
    assert len(out) == t.out, (t, len(out))
    assert out == PATTERN[: t.out], t
    assert len(err) == t.err, (t, len(err))
    assert err == PATTERN[: t.err], t


async def expect_not_found(call: Callable[[], Any]) -> None:
    with pytest.raises(RpcError) as info:
        await call()
    assert info.value.code == Code.NOT_FOUND, info.value


@pytest.fixture
async def other(pod: Pod) -> AsyncIterator[Any]:
    """A second connection to the same agent (the shim waits on one, reads on another)."""
    async with await pod.agent.client() as client:
        yield client


async def test_every_byte_reaches_the_host_in_racing_trials(pod: Pod, other: Any) -> None:
    (pod.rootfs / "pattern").write_bytes(PATTERN)
    await pod.create("c1", ["sleep", "100000"])
    before = agent_fds(pod.agent)
    trials = make_trials(TRIALS)
    assert {t.order for t in trials} == set(ORDERS)
    assert min(t.out for t in trials) == 1
    assert max(t.out for t in trials) == 1 << 20
    sem = asyncio.Semaphore(CONCURRENT)

    async def one(t: Trial) -> None:
        async with sem:
            await run_trial(pod, other, "c1", t)

    await asyncio.gather(*(one(t) for t in trials))
    # each process is gone once waited for and read to EOF, and took its fds with it
    assert agent_fds(pod.agent) == before
    for t in trials[:50]:
        await expect_not_found(functools.partial(wait_process, pod.client, "c1", t.eid))
        await expect_not_found(
            functools.partial(read_once, pod.client, "c1", t.eid, 10, stderr=False)
        )
    await pod.remove("c1")


async def test_a_process_can_be_waited_for_and_read_from_different_connections(
    pod: Pod, other: Any
) -> None:
    """The issue's reproducer: WaitProcess returns first, the reads come afterwards, with the
    shim's len and a small one."""
    (pod.rootfs / "pattern").write_bytes(PATTERN)
    await pod.create("c1", ["sleep", "100000"])
    for eid, size, n in (("e1", 5000, 1024), ("e2", 60000, 1024), ("e3", 60000, 32768)):
        await pod.exec("c1", eid, ["head", "-c", str(size), "/pattern"])
        assert await wait_process(other, "c1", eid) == 0
        await expect_not_found(functools.partial(wait_process, pod.client, "c1", eid))
        assert await read_to_eof(pod.client, "c1", eid, n, stderr=False) == PATTERN[:size]
        assert await read_to_eof(pod.client, "c1", eid, n, stderr=True) == b""
        await expect_not_found(functools.partial(read_once, pod.client, "c1", eid, n, stderr=False))
    await pod.remove("c1")


async def test_terminal_output_is_read_after_the_wait(pod: Pod, other: Any) -> None:
    """A tty exec (one pty master for both outputs): waited for first, read afterwards."""
    await pod.create("c1", ["sleep", "100000"])
    await pod.exec("c1", "tty", ["seq", "1", "1000"], terminal=True)
    assert await wait_process(other, "c1", "tty") == 0
    got = await read_to_eof(pod.client, "c1", "tty", 1024, stderr=False)
    assert got == b"".join(f"{i}\r\n".encode() for i in range(1, 1001))
    await expect_not_found(lambda: read_once(pod.client, "c1", "tty", 10, stderr=False))
    await pod.remove("c1")


async def test_exec_id_of_a_waited_process_can_be_reused(pod: Pod) -> None:
    """A waited-for process whose output nobody read gives its exec id up to a new exec."""
    await pod.create("c1", ["sleep", "100000"])
    await pod.exec("c1", "e1", ["echo", "first"])
    assert await pod.wait("c1", "e1") == 0
    await pod.exec("c1", "e1", ["echo", "second"])
    assert await pod.read("c1", "e1") == b"second\n"
    assert await pod.wait("c1", "e1") == 0
    await pod.remove("c1")


# -- the bounds ---------------------------------------------------------------------------------

GRACE = 1.0


@pytest.fixture
def grace_agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    return agent_factory(
        prefix=PRIVATE_MNT, test_servicer=True, env={"KATA_TEST_STDIO_GRACE": str(GRACE)}
    )


@pytest.fixture
async def grace_pod(
    grace_agent: AgentProcess, rootfs: Path, cgroup_parent: str
) -> AsyncIterator[Pod]:
    async with await grace_agent.client() as client:
        await client.agent.CreateSandbox(
            agent_pb2.CreateSandboxRequest(hostname="pod", sandbox_id="sb-grace")
        )
        (rootfs / "pattern").write_bytes(PATTERN)
        p = Pod(grace_agent, client, rootfs, cgroup_parent)
        yield p
        for cid in list(p.created):
            with contextlib.suppress(Exception):
                await p.remove(cid)


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Poll ``check`` (the grace period runs in the agent); fail naming ``what``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


RELEASED = "output of an exited process released: no reader"


def released_logs(agent: AgentProcess) -> Iterator[dict[str, Any]]:
    return (r for r in agent.logs() if r.get("msg") == RELEASED)


async def test_unread_output_is_released_after_the_grace_period(grace_pod: Pod) -> None:
    pod = grace_pod
    await pod.create("c1", ["sleep", "100000"])
    before = agent_fds(pod.agent)
    # waited for, never read: released, and the process is gone
    await pod.exec("c1", "e1", ["head", "-c", "50000", "/pattern"])
    assert await pod.wait("c1", "e1") == 0
    assert agent_fds(pod.agent) > before
    await until(lambda: agent_fds(pod.agent) == before, "e1's stdio was never released")
    await expect_not_found(lambda: read_once(pod.client, "c1", "e1", 10, stderr=False))
    logged = [r for r in released_logs(pod.agent) if r.get("exec_id") == "e1"]
    assert len(logged) == 1
    assert logged[0]["unread_bytes"] == 50000
    # exited, never waited for nor read: the fds go, the exit status stays for WaitProcess
    await pod.exec("c1", "e2", ["sh", "-c", "head -c 3000 /pattern; exit 7"])
    await until(lambda: any(r.get("exec_id") == "e2" for r in released_logs(pod.agent)), "e2")
    assert agent_fds(pod.agent) == before
    assert await pod.wait("c1", "e2") == 7
    await expect_not_found(lambda: read_once(pod.client, "c1", "e2", 10, stderr=False))
    await pod.remove("c1")


async def test_a_slow_reader_is_not_cut_off_by_the_grace_period(grace_pod: Pod) -> None:
    """The period counts from the last read: a reader slower than it per byte, but reading,
    gets everything."""
    pod = grace_pod
    await pod.create("c1", ["sleep", "100000"])
    await pod.exec("c1", "e1", ["head", "-c", str(PIPE), "/pattern"])
    assert await pod.wait("c1", "e1") == 0
    got = b""
    reads = 0
    while True:
        data = await read_once(pod.client, "c1", "e1", 8192, stderr=False)
        if not data:
            break
        got += data
        reads += 1
        await asyncio.sleep(GRACE * 0.3)
    assert got == PATTERN[:PIPE]
    assert reads == PIPE // 8192  # the whole output took more than two grace periods to read
    assert not any(r.get("exec_id") == "e1" for r in released_logs(pod.agent))
    await pod.remove("c1")


async def test_remove_container_releases_unread_output(pod: Pod) -> None:
    (pod.rootfs / "pattern").write_bytes(PATTERN)
    before = agent_fds(pod.agent)
    await pod.create("c1", ["sh", "-c", "head -c 40000 /pattern; sleep 100000"])
    await pod.exec("c1", "e1", ["head", "-c", "50000", "/pattern"])
    assert await pod.wait("c1", "e1") == 0
    await pod.exec("c1", "e2", ["head", "-c", "20000", "/pattern"])  # exits, never waited for
    await pod.remove("c1")
    assert agent_fds(pod.agent) == before
