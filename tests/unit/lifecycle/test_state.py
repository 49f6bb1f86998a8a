"""Sandbox, ContainerEntry, ProcessEntry, the status machine, the OOM queue, signal rules."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from agent.sandbox import (
    ContainerEntry,
    ContainerStatus,
    OomEvents,
    ProcessEntry,
    ProcessIO,
    Sandbox,
    validate_container_id,
)
from agent.sandbox.signals import effective_signal, handles_signal, is_kill_all
from agent.sandbox.status import can_move, check_move
from tests.unit.lifecycle.fakes import FakeRuntime

S = ContainerStatus


@pytest.mark.parametrize(
    ("src", "dst", "ok"),
    [
        (S.CREATED, S.RUNNING, True),
        (S.CREATED, S.PAUSED, True),
        (S.CREATED, S.STOPPED, True),
        (S.RUNNING, S.PAUSED, True),
        (S.RUNNING, S.STOPPED, True),
        (S.RUNNING, S.CREATED, False),
        (S.RUNNING, S.RUNNING, False),
        (S.PAUSED, S.RUNNING, True),
        (S.PAUSED, S.STOPPED, True),
        (S.PAUSED, S.PAUSED, False),
        (S.STOPPED, S.RUNNING, False),
        (S.STOPPED, S.PAUSED, False),
        (S.STOPPED, S.CREATED, False),
    ],
)
def test_transitions(src: ContainerStatus, dst: ContainerStatus, ok: bool) -> None:
    assert can_move(src, dst) is ok
    if not ok:
        with pytest.raises(FailedPrecondition, match=f"c1: cannot move from {src} to {dst}"):
            check_move("c1", src, dst)


@pytest.mark.parametrize("cid", ["ab", "a1", "pod-1_x.y", "0" * 64])
def test_valid_ids(cid: str) -> None:
    validate_container_id(cid)


@pytest.mark.parametrize("cid", ["", "a", "-ab", ".ab", "a/b", "a b", "../x", "é1", "a" * 2000])
def test_invalid_ids(cid: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_container_id(cid)


def entry(cid: str = "c1") -> ContainerEntry:
    return ContainerEntry(
        container_id=cid, bundle=Path("/nonexistent") / cid, runtime=FakeRuntime()
    )


def proc(cid: str, eid: str, *, init: bool = False, grace: float = 60.0) -> ProcessEntry:
    return ProcessEntry(
        container_id=cid,
        exec_id=eid,
        pid=4242,
        io=ProcessIO.pipes(name=eid),
        is_init=init,
        stdio_grace=grace,
    )


def exited_with_output(p: ProcessEntry, out: bytes, status: int = 0) -> None:
    """The "process" writes ``out`` to stdout and exits."""
    os.write(p.io.child.stdout, out)
    p.io.close_child_ends()
    p.set_exited(status)


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not check():  # noqa: ASYNC110 - the grace period runs on loop timers
            await asyncio.sleep(0.01)


def test_sandbox_lifecycle_and_registry() -> None:
    sb = Sandbox()
    with pytest.raises(FailedPrecondition, match="CreateSandbox must be called first"):
        sb.reserve("c1")
    sb.mark_ready("sb1", "host")
    with pytest.raises(AlreadyExists):
        sb.begin_create()
    sb.reserve("c1")
    with pytest.raises(AlreadyExists, match="container c1 already exists"):
        sb.reserve("c1")
    sb.add_container(entry("c1"))
    with pytest.raises(AlreadyExists):
        sb.reserve("c1")
    with pytest.raises(NotFound, match="container nope not found"):
        sb.get_container("nope")
    sb.reserve("c2")
    sb.release("c2")
    sb.reserve("c2")
    sb.release("c2")
    assert [c.id for c in sb.containers()] == ["c1"]
    sb.remove_container("c1")
    assert len(sb) == 0
    sb.mark_destroyed()
    with pytest.raises(FailedPrecondition, match="destroyed"):
        sb.reserve("c3")


def test_container_processes_and_status() -> None:
    c = entry()
    init = proc("c1", "c1", init=True)
    c.add_process(init)
    assert c.init_pid == 4242
    assert c.get_process("") is init
    assert c.get_process("c1") is init
    with pytest.raises(NotFound, match="container c1: process e9 not found"):
        c.get_process("e9")
    ex = proc("c1", "e1")
    c.add_process(ex)
    with pytest.raises(AlreadyExists, match="exec id e1 already exists"):
        c.add_process(proc("c1", "e1"))
    assert c.has_process("e1")
    with pytest.raises(FailedPrecondition, match="cannot move from created to created"):
        c.move_to(S.CREATED)
    c.move_to(S.RUNNING)
    c.move_to(S.PAUSED)
    assert c.resume_status() is S.RUNNING
    c.move_to(c.resume_status())
    c.mark_stopped()
    c.mark_stopped()
    assert c.status is S.STOPPED
    with pytest.raises(FailedPrecondition, match="cannot move from stopped to running"):
        c.move_to(S.RUNNING)
    init.close()
    ex.close()


def test_pause_before_start_resumes_to_created() -> None:
    c = entry()
    c.move_to(S.PAUSED)
    assert c.resume_status() is S.CREATED


async def test_process_exit_wakes_waiters_and_readers() -> None:
    p = proc("c1", "e1")
    seen: list[int | None] = []
    p.add_exit_callback(lambda e: seen.append(e.exit_status))
    waiters = [asyncio.create_task(p.wait()) for _ in range(3)]
    reader = asyncio.create_task(p.io.stdout.read(10))
    await asyncio.sleep(0.01)
    assert p.live_pid() == 4242
    p.io.close_child_ends()  # the "process" closes its ends when it exits
    p.set_exited(137)
    p.set_exited(0)  # second report is ignored
    assert await asyncio.gather(*waiters) == [137, 137, 137]
    assert await asyncio.wait_for(reader, 5) == b""
    assert seen == [137]
    with pytest.raises(NotFound, match="ESRCH: No such process"):
        p.live_pid()
    late: list[int | None] = []
    p.add_exit_callback(lambda e: late.append(e.exit_status))
    assert late == [137]
    p.close()


async def test_waited_process_stays_until_its_output_is_read() -> None:
    c = entry()
    p = proc("c1", "e1")
    c.add_process(p)
    exited_with_output(p, b"abc")
    assert await p.wait() == 0
    p.mark_waited()
    assert c.get_process("e1") is p  # output left: still there for the readers
    assert not c.has_process("e1")  # but no longer a live exec id
    assert await p.io.stdout.read(2) == b"ab"
    p.settle()
    assert c.get_process("e1") is p
    assert await p.io.stdout.read(10) == b"c"
    assert await p.io.stdout.read(10) == b""
    p.settle()
    assert c.get_process("e1") is p  # stderr has not returned EOF yet
    assert await p.io.stderr.read(10) == b""
    p.settle()
    with pytest.raises(NotFound, match="process e1 not found"):
        c.get_process("e1")


async def test_output_read_before_the_wait_retires_at_the_wait() -> None:
    c = entry()
    p = proc("c1", "e1")
    c.add_process(p)
    exited_with_output(p, b"x")
    assert await p.io.stdout.read(10) == b"x"
    assert await p.io.stdout.read(10) == b""
    assert await p.io.stderr.read(10) == b""
    p.settle()
    assert c.get_process("e1") is p  # not waited for yet: the status is still to be collected
    p.mark_waited()
    with pytest.raises(NotFound):
        c.get_process("e1")


async def test_waited_exec_id_is_given_up_to_a_new_exec() -> None:
    c = entry()
    old = proc("c1", "e1")
    c.add_process(old)
    exited_with_output(old, b"never read")
    old.mark_waited()
    new = proc("c1", "e1")
    c.add_process(new)
    assert c.get_process("e1") is new
    assert old.io.drained  # released
    old.settle()  # a late settle of the old entry must not drop the new one
    assert c.get_process("e1") is new
    new.close()


async def test_unread_output_is_released_after_the_grace_period() -> None:
    c = entry()
    waited = proc("c1", "e1", grace=0.05)
    unwaited = proc("c1", "e2", grace=0.05)
    c.add_process(waited)
    c.add_process(unwaited)
    exited_with_output(waited, b"lost")
    exited_with_output(unwaited, b"lost too", status=3)
    waited.mark_waited()
    await until(lambda: not c.has_process("e1") and unwaited.io.drained)
    with pytest.raises(NotFound):
        c.get_process("e1")
    # not waited for: the status stays, the output is gone
    assert c.get_process("e2") is unwaited
    assert await unwaited.io.stdout.read(10) == b""
    assert await unwaited.wait() == 3
    unwaited.mark_waited()
    with pytest.raises(NotFound):
        c.get_process("e2")


async def test_grace_period_counts_from_the_last_read() -> None:
    c = entry()
    p = proc("c1", "e1", grace=0.2)
    c.add_process(p)
    data = bytes(range(256)) * 60
    exited_with_output(p, data)
    p.mark_waited()
    got = b""
    for _ in range(len(data) // 1024):
        got += await p.io.stdout.read(1024)
        await asyncio.sleep(0.02)  # slower than the grace period in all, but reading
    assert got == data
    assert await p.io.stdout.read(10) == b""
    assert c.get_process("e1") is p
    p.close()


async def test_oom_queue_each_event_to_one_caller() -> None:
    q = OomEvents(capacity=3)
    getters = [asyncio.create_task(q.get()) for _ in range(2)]
    await asyncio.sleep(0)
    q.put("a")
    q.put("b")
    q.put("c")
    assert sorted(await asyncio.gather(*getters)) == ["a", "b"]
    assert await q.get() == "c"
    for cid in "defg":
        q.put(cid)
    assert len(q) == 3  # capacity: "g" dropped
    assert [await q.get() for _ in range(3)] == ["d", "e", "f"]


async def test_oom_queue_cancelled_getter_does_not_eat_events() -> None:
    q = OomEvents()
    g = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    g.cancel()
    with pytest.raises(asyncio.CancelledError):
        await g
    q.put("x")
    assert await q.get() == "x"


async def test_oom_queue_close_fails_pending_and_later_gets() -> None:
    q = OomEvents()
    g = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(Internal, match="sandbox destroyed"):
        await g
    with pytest.raises(Internal):
        await q.get()
    q.put("ignored")
    assert len(q) == 0


STATUS_HANDLES_TERM = (
    "Name:\tx\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000004000\n"
)
STATUS_IGNORES_TERM = (
    "SigBlk:\t0000000000000000\nSigIgn:\t0000000000004000\nSigCgt:\t0000000000000000\n"
)
STATUS_BLOCKS_TERM = (
    "SigBlk:\t0000000000004000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000000\n"
)
STATUS_NOTHING = "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000010002\n"


def test_sigterm_upgrade_rules() -> None:
    assert handles_signal(STATUS_HANDLES_TERM, 15)
    assert handles_signal(STATUS_IGNORES_TERM, 15)
    assert handles_signal(STATUS_BLOCKS_TERM, 15)
    assert not handles_signal(STATUS_NOTHING, 15)
    assert effective_signal(15, is_init=True, status_text=STATUS_NOTHING) == 9
    assert effective_signal(15, is_init=True, status_text=STATUS_HANDLES_TERM) == 15
    assert effective_signal(15, is_init=False, status_text=STATUS_NOTHING) == 15
    assert effective_signal(15, is_init=True, status_text=None) == 15
    assert effective_signal(2, is_init=True, status_text=STATUS_NOTHING) == 2
    assert is_kill_all("", 9)
    assert not is_kill_all("", 15)
    assert not is_kill_all("e1", 9)


def test_handles_signal_on_real_proc_status() -> None:
    text = Path(f"/proc/{os.getpid()}/status").read_text()
    # pytest's process: SIGINT is caught by Python's default handler.
    assert handles_signal(text, 2)


NET_DEV = (
    "Inter-|   Receive    |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
    "    lo:    3193      29    0    0    0     0          0         0     3193      29"
    "    0    0    0     0       0          0\n"
    "  eth0: 1000 10 1 2 0 0 0 0 2000 20 3 4 0 0 0 0\n"
    "broken line\n"
)


def test_parse_net_dev() -> None:
    from agent.sandbox.netdev import InterfaceStats, parse_net_dev

    assert parse_net_dev(NET_DEV) == [InterfaceStats("eth0", 1000, 10, 1, 2, 2000, 20, 3, 4)]
