"""OutputStream's read-ahead and its synchronous read (`try_read_parts`), on real pipes and ptys.

A read takes up to READ_AHEAD bytes from the pipe whatever ``len`` asks for; the part beyond the
reply is kept for the next read. None of that may change what the client sees: same bytes, same
order, EOF only after everything, nothing consumed by a read that has to wait.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios

import pytest

from agent.errors import InvalidArgument
from agent.sandbox.stdio import READ_AHEAD, OutputStream, ProcessIO


def make_output(drain: float = 0.5) -> tuple[OutputStream, int]:
    r, w = os.pipe2(os.O_CLOEXEC)
    return OutputStream(r, name="c1 e1 stdout", drain_after_exit=drain), w


def in_pipe(fd: int) -> int:
    avail: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return avail


def joined(parts: list[bytes | memoryview] | None) -> bytes:
    assert parts is not None
    return b"".join(parts)


async def test_small_len_reads_ahead_and_serves_the_rest_in_order() -> None:
    out, w = make_output()
    payload = os.urandom(READ_AHEAD)
    os.write(w, payload)
    assert await out.read(32768) == payload[:32768]
    assert in_pipe(w) == 0  # the pipe was emptied by one read: the writer has room again
    assert not out.at_eof
    assert await out.read(32768) == payload[32768:]
    os.close(w)
    assert await out.read(32768) == b""
    assert out.at_eof
    assert await out.read(32768) == b""


async def test_reads_of_every_size_return_the_stream_exactly() -> None:
    out, w = make_output()
    payload = os.urandom(300_000)
    got = bytearray()
    sizes = [1, 7, 4096, 32768, 65535, 65536, 65537, 200_000, 1 << 20]

    async def writer() -> None:
        view = memoryview(payload)
        while view:
            try:
                view = view[os.write(w, view[:50_000]) :]
            except BlockingIOError:
                await asyncio.sleep(0.001)
        os.close(w)

    os.set_blocking(w, False)
    task = asyncio.create_task(writer())
    i = 0
    while True:
        n = sizes[i % len(sizes)]
        i += 1
        data = await asyncio.wait_for(out.read(n), 10)
        assert len(data) <= n
        if not data:
            break
        got += data
    await task
    assert bytes(got) == payload


async def test_eof_waits_for_what_was_read_ahead() -> None:
    """The writer is gone and the pipe empty, but data read ahead is still returned first."""
    out, w = make_output(drain=0.0)
    os.write(w, b"x" * 1000)
    os.close(w)
    out.mark_exited()
    chunks = [await out.read(100) for _ in range(11)]
    assert b"".join(chunks) == b"x" * 1000
    assert chunks[-1] == b""
    assert out.at_eof


async def test_exit_with_data_read_ahead_and_writer_still_open() -> None:
    """A grandchild keeps the pipe: what was read ahead is returned before the drain EOF."""
    out, w = make_output(drain=0.1)
    os.write(w, b"abcdef")
    out.mark_exited()
    assert await out.read(2) == b"ab"
    assert await out.read(2) == b"cd"
    await asyncio.sleep(0.15)  # the drain time is over, but "ef" was never returned
    assert await out.read(2) == b"ef"
    assert await asyncio.wait_for(out.read(2), 5) == b""
    os.close(w)


async def test_close_drops_what_was_read_ahead() -> None:
    out, w = make_output()
    os.write(w, b"abcdef")
    assert await out.read(3) == b"abc"
    out.close()
    assert await out.read(3) == b""
    assert out.at_eof
    os.close(w)


async def test_try_read_answers_at_once_or_consumes_nothing() -> None:
    out, w = make_output()
    assert out.try_read_parts(100) is None  # nothing there yet
    os.write(w, b"hello world")
    assert joined(out.try_read_parts(5)) == b"hello"
    assert joined(out.try_read_parts(100)) == b" world"
    assert out.try_read_parts(100) is None
    os.close(w)
    assert out.try_read_parts(100) == []  # EOF is known: answered at once
    assert out.try_read_parts(100) == []
    with pytest.raises(InvalidArgument, match="len must be greater than 0"):
        out.try_read_parts(0)


async def test_try_read_defers_to_a_pending_long_poll() -> None:
    """A read parked on the fd is served first: the synchronous read steps aside (None)."""
    out, w = make_output()
    parked = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.02)
    os.write(w, b"first")
    assert out.try_read_parts(100) is None
    with pytest.raises(InvalidArgument):
        out.try_read_parts(-1)
    assert await asyncio.wait_for(parked, 5) == b"first"
    os.write(w, b"second")
    assert joined(out.try_read_parts(100)) == b"second"
    os.close(w)
    out.close()


async def test_try_read_after_exit_and_drain_time_is_eof() -> None:
    out, w = make_output(drain=0.05)
    out.mark_exited()
    assert out.try_read_parts(10) is None  # the drain time is not over
    await asyncio.sleep(0.1)
    assert out.try_read_parts(10) == []
    assert out.at_eof
    os.close(w)


async def test_cancelled_read_after_read_ahead_consumes_nothing() -> None:
    out, w = make_output()
    os.write(w, b"abc")
    assert await out.read(1) == b"a"
    assert await out.read(2) == b"bc"
    task = asyncio.create_task(out.read(100))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    os.write(w, b"kept")
    assert await out.read(2) == b"ke"
    assert joined(out.try_read_parts(10)) == b"pt"
    os.close(w)
    out.close()


async def test_large_len_is_sized_by_what_is_there() -> None:
    """A 2 MiB len on a 64 KiB pipe: one reply of what is there, in order."""
    out, w = make_output()
    payload = os.urandom(60_000)
    os.write(w, payload)
    parts = out.try_read_parts(2 << 20)
    assert joined(parts) == payload
    os.close(w)
    assert await out.read(2 << 20) == b""


async def test_pty_reads_ahead_and_hangs_up_after_the_rest() -> None:
    io = ProcessIO.pty(name="c1")
    proc_fd = os.dup(io.child.stdout)
    io.close_child_ends()
    os.write(proc_fd, b"0123456789")
    os.close(proc_fd)
    got = b""
    while True:
        data = await asyncio.wait_for(io.stdout.read(3), 5)
        if not data:
            break
        got += data
    assert got.replace(b"\r", b"") == b"0123456789"
    io.close()


async def test_reads_per_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    """The syscalls behind the replies: one read for two 32 KiB replies from a full pipe, none
    for the second; a read the pipe did not fill is not retried (it would only fail with EAGAIN);
    a large len keeps topping up after FIONREAD-sized reads."""

    calls: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        calls.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", counting_read)
    out, w = make_output()
    os.write(w, b"a" * READ_AHEAD)
    assert len(joined(out.try_read_parts(32768))) == 32768
    assert calls == [READ_AHEAD]
    assert len(joined(out.try_read_parts(32768))) == 32768
    assert calls == [READ_AHEAD]  # served from what was read ahead
    os.write(w, b"b" * 10)
    assert joined(out.try_read_parts(32768)) == b"b" * 10
    assert calls == [READ_AHEAD, READ_AHEAD]  # short: the pipe is empty, no second read
    calls.clear()
    os.write(w, b"c" * 1000)
    assert joined(out.try_read_parts(1 << 20)) == b"c" * 1000
    assert calls == [1000, (1 << 20) - 1000]  # sized by FIONREAD, then a top-up finding nothing
    os.close(w)
    out.close()
