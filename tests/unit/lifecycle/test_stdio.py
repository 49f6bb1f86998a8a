"""The long-poll read rules of agent.sandbox.stdio, on real pipes and ptys (no root needed)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time

import pytest

from agent.errors import FailedPrecondition, InvalidArgument, Unavailable
from agent.sandbox.stdio import InputStream, OutputStream, ProcessIO


def make_output(drain: float = 0.5) -> tuple[OutputStream, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    return OutputStream(r, name="c1 e1 stdout", drain_after_exit=drain), w


async def read_all(stream: OutputStream, n: int = 32768) -> bytes:
    chunks: list[bytes] = []
    while True:
        data = await stream.read(n)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


async def test_read_returns_available_data_at_once() -> None:
    out, w = make_output()
    os.write(w, b"hello")
    assert await out.read(100) == b"hello"
    os.close(w)
    assert await out.read(100) == b""
    out.close()


async def test_read_blocks_until_data_arrives() -> None:
    out, w = make_output()
    task = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.05)
    assert not task.done()
    os.write(w, b"late")
    assert await asyncio.wait_for(task, 5) == b"late"
    os.close(w)
    out.close()


async def test_fast_exit_loses_nothing() -> None:
    """A process that writes and exits at once: the exit is known before anything was read."""
    out, w = make_output()
    payload = os.urandom(40000)
    os.write(w, payload)
    os.close(w)
    out.mark_exited()
    assert await read_all(out, 1000) == payload
    assert out.at_eof


async def test_exit_while_writer_still_open_drains_then_eof_after_grace() -> None:
    """A grandchild holds the pipe: data is returned, then EOF after the drain period."""
    out, w = make_output(drain=0.3)
    os.write(w, b"abc")
    out.mark_exited()
    assert await out.read(100) == b"abc"
    start = time.monotonic()
    assert await asyncio.wait_for(out.read(100), 5) == b""
    assert time.monotonic() - start >= 0.2
    # EOF is sticky, and the agent's end is released (the grandchild now gets EPIPE).
    assert await out.read(100) == b""
    with pytest.raises(BrokenPipeError):
        os.write(w, b"more")
    os.close(w)


async def test_pending_read_is_woken_by_exit_and_gets_eof_after_grace() -> None:
    out, w = make_output(drain=0.2)
    task = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.05)
    out.mark_exited()
    assert await asyncio.wait_for(task, 5) == b""
    os.close(w)


async def test_data_arriving_during_grace_is_returned() -> None:
    out, w = make_output(drain=2.0)
    out.mark_exited()
    task = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.05)
    os.write(w, b"grandchild")
    assert await asyncio.wait_for(task, 5) == b"grandchild"
    os.close(w)
    assert await out.read(100) == b""


async def test_cancelled_read_consumes_nothing() -> None:
    out, w = make_output()
    task = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    os.write(w, b"kept")
    assert await out.read(100) == b"kept"
    os.close(w)
    out.close()


async def test_close_wakes_pending_read_with_eof() -> None:
    out, w = make_output()
    task = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.02)
    out.close()
    assert await asyncio.wait_for(task, 5) == b""
    os.close(w)


async def test_zero_len_is_invalid() -> None:
    out, w = make_output()
    with pytest.raises(InvalidArgument, match="len must be greater than 0"):
        await out.read(0)
    os.close(w)
    out.close()


async def test_concurrent_readers_split_the_data() -> None:
    out, w = make_output()
    tasks = [asyncio.create_task(out.read(3)) for _ in range(2)]
    await asyncio.sleep(0.02)
    os.write(w, b"abcdef")
    got = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(got) == [b"abc", b"def"]
    os.close(w)
    out.close()


async def test_write_waits_when_pipe_full() -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    stdin = InputStream(w, name="c1 stdin")
    payload = os.urandom(1 << 20)
    task = asyncio.create_task(stdin.write(payload))
    got = bytearray()
    os.set_blocking(r, False)
    while len(got) < len(payload):
        try:
            got += os.read(r, 65536)
        except BlockingIOError:
            await asyncio.sleep(0.001)
    assert await task == len(payload)
    assert bytes(got) == payload
    stdin.close()
    with pytest.raises(FailedPrecondition, match="stdin is closed"):
        await stdin.write(b"x")
    os.close(r)


async def test_write_to_exited_reader_is_epipe() -> None:
    r, w = os.pipe2(os.O_CLOEXEC)
    os.close(r)
    stdin = InputStream(w, name="c1 stdin")
    with pytest.raises(FailedPrecondition, match="EPIPE"):
        await stdin.write(b"x")
    stdin.close()


async def test_pipes_process_io_and_child_ends() -> None:
    io = ProcessIO.pipes(name="c1", pipe_size=1 << 20)
    child = io.child
    f_getpipe_sz = 1032
    assert fcntl.fcntl(child.stdout, f_getpipe_sz) == 1 << 20
    assert fcntl.fcntl(child.stderr, f_getpipe_sz) == 1 << 20
    assert not io.terminal
    assert not child.terminal
    os.write(child.stdout, b"out")
    os.write(child.stderr, b"err")
    await io.stdin.write(b"in")
    assert os.read(child.stdin, 10) == b"in"
    io.close_child_ends()
    with pytest.raises(RuntimeError):
        _ = io.child
    assert await io.stdout.read(10) == b"out"
    assert await io.stderr.read(10) == b"err"
    assert await io.stdout.read(10) == b""
    with pytest.raises(Unavailable, match="no tty"):
        io.resize(10, 10)
    io.close()


async def test_pty_output_input_resize_and_hangup() -> None:
    io = ProcessIO.pty(name="c1")
    assert io.terminal
    assert io.stdout is io.stderr
    slave = io.child.stdin
    io.resize(33, 120)
    import fcntl
    import struct
    import termios

    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(slave, termios.TIOCGWINSZ, b"\0" * 8))
    assert (rows, cols) == (33, 120)
    await io.stdin.write(b"typed\n")
    os.set_blocking(slave, False)
    await asyncio.sleep(0.05)
    assert os.read(slave, 100) == b"typed\n"
    # Keep a dup as "the process", close the agent's copy of the slave, then hang up.
    proc_fd = os.dup(slave)
    io.close_child_ends()
    os.write(proc_fd, b"bye")
    os.close(proc_fd)
    data = await read_all(io.stdout)
    assert b"bye" in data
    # CloseStdin on a tty keeps the master; writes are refused.
    io.close_stdin()
    with pytest.raises(FailedPrecondition):
        await io.stdin.write(b"x")
    io.close()


async def test_process_io_close_releases_every_fd() -> None:
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(20):
        io = ProcessIO.pipes(name="c")
        io.close()
        io2 = ProcessIO.pty(name="c")
        io2.close()
    assert set(os.listdir("/proc/self/fd")) == before


def test_pty_initial_size() -> None:
    import fcntl
    import struct
    import termios

    io = ProcessIO.pty(name="c1", size=(24, 81))
    packed = fcntl.ioctl(io.child.stdout, termios.TIOCGWINSZ, b"\0" * 8)
    assert struct.unpack("HHHH", packed)[:2] == (24, 81)
    io.close()
