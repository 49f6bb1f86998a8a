"""Pipes and ptys between the agent and a container process, and the long-poll read semantics.

The host reads a process's output with ``ReadStdout``/``ReadStderr`` long-polls; an **empty reply
means EOF**. The shim's copy loops and its ``WaitProcess`` run at the same time, on one connection
or several, so the output must stay readable after the exit and the wait (`agent.sandbox.process`).
The rules (reference doc §1.4, §9.2), all implemented by `OutputStream.read`:

* A read returns, as soon as anything is there, what is readable at that moment, at most ``n``
  bytes (Kata does one ``read(2)``; we top up with non-blocking reads, never waiting).
* EOF (``b""``) is returned only once the pipe is drained: either every writer closed it (a pty
  master reports that as ``EIO``), or the process has exited, nothing is readable, and
  ``drain_after_exit`` (500 ms, Kata's value) has passed since the exit — that is the case of a
  grandchild that inherited the pipe and keeps it open. Data already in the pipe is never dropped:
  a process that writes and exits within a millisecond still gets all of it read.
* Once EOF was returned, every later read returns EOF at once.
* A read that is cancelled (the client disconnected) consumes nothing.
* What a read took from the fd beyond its reply (read-ahead, below) is returned, in order, before
  anything else, before EOF too; it is dropped only by `OutputStream.close` (as what is still in
  the pipe is).
* Nothing here closes a stream because the process exited or was waited for: the streams live
  until their readers have seen EOF, or the process entry releases them (its grace period,
  RemoveContainer; see `agent.sandbox.process`).

For a terminal there is one pty master: stdin writes go to it, and stdout and stderr are the same
`OutputStream`. The slave end is given to the process and closed here right after the spawn, so the
master sees the hang-up when the process (and everything that inherited the slave) is gone.

Throughput (bench/lifecycle.py): a reply is the list of pieces read (`OutputStream.read_parts`),
written by the RPC layer after the frame header without joining them (`agent.rpc.encoded`). A
read asks the fd for at least ``READ_AHEAD`` (64 KiB, the default pipe) whatever ``len`` is; what
the reply does not take (fewer than 64 KiB, a slice of the same bytes object) is kept and returned
first by the next read. With the shim's ``len`` of 32 KiB and a writer faster than the reader,
every other ReadStdout is answered without a syscall, and the writer is woken once per 64 KiB
instead of per 32 KiB. A read up to ``DIRECT_READ_MAX`` is one ``os.read`` (its buffer is
allocated and shrunk by Python); a larger ``len`` is first sized by ``FIONREAD`` so no 2 MiB
buffer is allocated for a 64 KiB pipe's worth. `OutputStream.try_read_parts` is the same read
when it can answer at once, so the RPC server answers it without a task (agent.rpc.server).
What this saves per MiB is in docs/performance.md (bench/lifecycle.py phase 3).

The pipe size stays the kernel's default (64 KiB) unless ``agent.container_pipe_size`` says
otherwise, as in Kata: a larger default would be charged, per pipe and whether used or not, to the
root user's ``fs.pipe-user-pages-soft`` (16384 pages); with 1 MiB stdout and stderr pipes that
limit is reached after 32 processes, and from then on every pipe a container process without
CAP_SYS_RESOURCE creates is cut to two pages. With the default pipe, a large ``len`` still gets
replies of hundreds of KiB because the top-up reads catch what the writer adds meanwhile.

Everything here runs on the event loop thread; fds are non-blocking and waited for with
``loop.add_reader``/``add_writer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
import termios
import time
from dataclasses import dataclass
from typing import TypeAlias

from agent.errors import FailedPrecondition, Internal, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

Part: TypeAlias = bytes | memoryview  # a piece of a reply: what os.read returned, or a slice

DRAIN_AFTER_EXIT = 0.5
MAX_READ = 2 * 1024 * 1024  # stays well under the 4 MiB ttrpc frame limit
READ_AHEAD = 64 * 1024  # a read asks the fd for at least this much (see the module docstring)
DIRECT_READ_MAX = 128 * 1024  # larger reads are sized by FIONREAD first
F_SETPIPE_SZ = 1031
_INT = struct.Struct("i")
_INT_ZERO = _INT.pack(0)


class _FdWatch:
    """One pending wait for an fd to become readable or writable. `stop` unregisters the fd from
    the loop synchronously and wakes the waiter, so the fd can be closed right after it (a
    registration must never outlive its fd: the number could be reused at once)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._writable = False
        self._waiter: asyncio.Future[None] | None = None

    async def wait(self, fd: int, *, writable: bool, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._loop, self._fd, self._writable, self._waiter = loop, fd, writable, waiter
        if writable:
            loop.add_writer(fd, self._ready)
        else:
            loop.add_reader(fd, self._ready)
        try:
            if deadline is None:
                await waiter
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await waiter
        finally:
            self._unregister()

    def _ready(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        self._ready()
        self._unregister()

    def _unregister(self) -> None:
        loop, fd = self._loop, self._fd
        self._loop = self._fd = self._waiter = None
        if loop is None or fd is None or loop.is_closed():
            return
        if self._writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


class OutputStream:
    """The agent's read end of a process's stdout or stderr (a pipe, or the pty master)."""

    def __init__(
        self,
        fd: int,
        *,
        name: str,
        owns_fd: bool = True,
        drain_after_exit: float = DRAIN_AFTER_EXIT,
    ) -> None:
        os.set_blocking(fd, False)
        self.name = name
        self._fd: int | None = fd
        self._owns_fd = owns_fd
        self._drain_after_exit = drain_after_exit
        self._eof = False
        self._exited_at: float | None = None
        self._lock = asyncio.Lock()
        self._readers = 0  # long-poll reads pending (waiting for the lock or the fd)
        self.reads = 0  # reads asked of this stream so far: tells an exited process's grace
        # period whether a reader came (agent.sandbox.process)
        # What the last read took from the fd beyond its reply (fewer than READ_AHEAD bytes):
        # the next read returns it first.
        self._ahead: memoryview | None = None
        self._watch = _FdWatch()

    @property
    def at_eof(self) -> bool:
        """EOF was returned (or the stream closed); nothing read ahead is left to return."""
        return self._eof and self._ahead is None

    @property
    def reading(self) -> bool:
        """A long-poll read is pending."""
        return self._readers > 0

    def unread(self) -> int:
        """Bytes still to be returned (read ahead, and in the pipe): what closing would drop."""
        ahead = len(self._ahead) if self._ahead is not None else 0
        fd = self._fd
        if fd is None:
            return ahead
        try:
            pending: int = _INT.unpack(fcntl.ioctl(fd, termios.FIONREAD, _INT_ZERO))[0]
        except OSError:
            return ahead
        return ahead + pending

    def mark_exited(self, when: float | None = None) -> None:
        """The process has exited: from now on an empty pipe waits at most ``drain_after_exit``."""
        if self._exited_at is None:
            self._exited_at = time.monotonic() if when is None else when
        self._wake()

    def close(self) -> None:
        """Release the fd; a pending or later read returns EOF (what was read ahead is dropped,
        as what is still in the pipe is)."""
        self._eof = True
        self._ahead = None
        fd, self._fd = self._fd, None
        self._watch.stop()
        if fd is not None and self._owns_fd:
            os.close(fd)

    def _wake(self) -> None:
        self._watch.stop()

    def _read_now(self, n: int) -> bytes | None:
        """One non-blocking read: data, ``b""`` at EOF, ``None`` when nothing is there yet."""
        fd = self._fd
        if fd is None:
            return b""
        try:
            if n > DIRECT_READ_MAX:
                # Read exactly what is there (FIONREAD; 0 also at EOF, which the read then
                # reports): os.read(fd, n) would allocate n bytes (up to 2 MiB) for a 64 KiB
                # pipe's worth. Smaller buffers are cheap to allocate and shrink: one syscall.
                avail = _INT.unpack(fcntl.ioctl(fd, termios.FIONREAD, _INT_ZERO))[0]
                if avail > 0:
                    n = min(n, avail)
            return os.read(fd, n)
        except BlockingIOError:
            return None
        except OSError as err:
            if err.errno == errno.EIO:  # pty master: every slave fd is closed
                return b""
            code = errno.errorcode.get(err.errno or 0, "?")
            raise Internal(f"read {self.name}: {code}: {err.strerror}") from err

    async def read(self, n: int) -> bytes:
        """Long-poll read of at most ``n`` bytes; ``b""`` means EOF (see the module docstring)."""
        return b"".join(await self.read_parts(n))

    def try_read_parts(self, n: int) -> list[Part] | None:
        """`read_parts` if it can answer without waiting (data is there, or EOF is known), else
        ``None`` and nothing is consumed. Also ``None`` while a long-poll read is pending: that
        one is served first."""
        self.reads += 1
        if self._readers:
            _check_len(self.name, n)
            return None
        return self._try_read(n)

    async def read_parts(self, n: int) -> list[Part]:
        """`read`, as the pieces read (no joining copy: the RPC layer writes them as they are);
        an empty list means EOF."""
        self.reads += 1
        self._readers += 1
        try:
            async with self._lock:
                while True:
                    parts = self._try_read(n)
                    if parts is not None:
                        return parts
                    deadline: float | None = None
                    if self._exited_at is not None:
                        remaining = self._exited_at + self._drain_after_exit - time.monotonic()
                        deadline = asyncio.get_running_loop().time() + remaining
                    assert self._fd is not None
                    await self._watch.wait(self._fd, writable=False, deadline=deadline)
        finally:
            self._readers -= 1

    def _try_read(self, n: int) -> list[Part] | None:
        """The parts of one read of at most ``n`` bytes, ``[]`` at EOF, ``None`` when the caller
        has to wait for the fd (nothing is buffered or readable, EOF not known yet).

        What the previous read took beyond its reply comes first (no syscall at all if it is
        enough). The fd is read for at least ``READ_AHEAD`` bytes and topped up while it keeps
        filling the reads: fewer, fuller replies when the process writes faster than the client
        reads. A read the fd did not fill means it is empty, so no further read is tried then
        (it would fail with EAGAIN), except after a FIONREAD-sized one: that is where a large
        ``len`` catches what the writer adds meanwhile."""
        n = min(_check_len(self.name, n), MAX_READ)
        parts: list[Part] = []
        got = 0
        ahead = self._ahead
        if ahead is not None:
            self._ahead = None
            if len(ahead) >= n:
                return self._keep_rest(parts, got, ahead, n)
            parts.append(ahead)
            got = len(ahead)
        elif self._eof:
            return []
        while got < n:
            want = max(n - got, READ_AHEAD)
            try:
                data = self._read_now(want)
            except Internal:
                if parts:
                    break  # what was read ahead goes out first; the error comes with the next read
                raise
            if not data:
                if parts:
                    break  # nothing more now (None), or EOF (b""): reported by the next read
                if data is None:
                    exited = self._exited_at
                    if exited is None or exited + self._drain_after_exit - time.monotonic() > 0:
                        return None  # wait for the fd
                    # exited, drained, and the drain time is over (module docstring)
                self._finish()
                return []
            size = len(data)
            if got + size >= n:
                return self._keep_rest(parts, got, data, n)
            parts.append(data)
            got += size
            if size < want <= DIRECT_READ_MAX:
                break  # the fd is empty (see above)
        return parts

    def _keep_rest(self, parts: list[Part], got: int, data: Part, n: int) -> list[Part]:
        """``parts`` (``got`` bytes) and ``data`` up to ``n`` bytes in all; the rest of ``data``
        (a slice, not a copy) is kept for the next read."""
        take = n - got
        if len(data) == take:
            parts.append(data)
            return parts
        view = memoryview(data)
        self._ahead = view[take:]
        parts.append(view[:take])
        return parts

    def _finish(self) -> None:
        """EOF reached: the fd is of no further use (the pty master stays open for stdin)."""
        if self._owns_fd:
            self.close()
        else:
            self._eof = True
            self._fd = None


class InputStream:
    """The agent's write end of a process's stdin (a pipe, or the pty master)."""

    def __init__(self, fd: int, *, name: str, owns_fd: bool = True) -> None:
        os.set_blocking(fd, False)
        self.name = name
        self._fd: int | None = fd
        self._owns_fd = owns_fd
        self._lock = asyncio.Lock()
        self._watch = _FdWatch()

    @property
    def closed(self) -> bool:
        return self._fd is None

    async def write(self, data: bytes) -> int:
        """Write all of ``data``; waits while the pipe is full."""
        async with self._lock:
            view = memoryview(data)
            while view:
                fd = self._fd
                if fd is None:
                    raise FailedPrecondition(f"write {self.name}: stdin is closed")
                try:
                    written = os.write(fd, view)
                except BlockingIOError:
                    await self._watch.wait(fd, writable=True, deadline=None)
                    continue
                except OSError as err:
                    name = errno.errorcode.get(err.errno or 0, "error")
                    raise FailedPrecondition(
                        f"write {self.name}: {name}: {err.strerror} (has the process exited?)"
                    ) from err
                view = view[written:]
            return len(data)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        self._watch.stop()
        if fd is not None and self._owns_fd:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class ChildStdio:
    """The child's ends: what the spawner puts on fds 0, 1 and 2 of the process."""

    stdin: int
    stdout: int
    stderr: int
    terminal: bool


class ProcessIO:
    """A process's stdio as the agent holds it: pipes, or a pty master."""

    def __init__(
        self,
        *,
        stdin: InputStream,
        stdout: OutputStream,
        stderr: OutputStream,
        child: ChildStdio,
        tty_fd: int | None,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._child: ChildStdio | None = child
        self._tty_fd = tty_fd

    @classmethod
    def pipes(cls, *, name: str, pipe_size: int = 0) -> ProcessIO:
        """Three pipes; ``pipe_size`` > 0 enlarges stdout/stderr (``agent.container_pipe_size``)."""
        fds: list[int] = []
        try:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            fds += [in_r, in_w]
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            fds += [out_r, out_w]
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            fds += [err_r, err_w]
            if pipe_size > 0:
                for fd in (out_r, err_r):
                    _set_pipe_size(fd, pipe_size)
            return cls(
                stdin=InputStream(in_w, name=f"{name} stdin"),
                stdout=OutputStream(out_r, name=f"{name} stdout"),
                stderr=OutputStream(err_r, name=f"{name} stderr"),
                child=ChildStdio(in_r, out_w, err_w, terminal=False),
                tty_fd=None,
            )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    @classmethod
    def pty(cls, *, name: str, size: tuple[int, int] | None = None) -> ProcessIO:
        """A pty pair: the master stays here, the slave becomes the process's fds 0-2. ``size``
        (rows, columns; the spec's ``process.consoleSize``) is set before the process starts, so
        it never sees a 0x0 terminal while the first TtyWinResize is still on its way."""
        master, slave = os.openpty()
        try:
            if size is not None and size[0] > 0 and size[1] > 0:
                _set_winsize(master, *size)
            out = OutputStream(master, name=f"{name} tty", owns_fd=False)
            return cls(
                stdin=InputStream(master, name=f"{name} tty", owns_fd=False),
                stdout=out,
                stderr=out,
                child=ChildStdio(slave, slave, slave, terminal=True),
                tty_fd=master,
            )
        except BaseException:
            os.close(master)
            os.close(slave)
            raise

    @property
    def terminal(self) -> bool:
        return self._tty_fd is not None or (self._child is not None and self._child.terminal)

    @property
    def child(self) -> ChildStdio:
        if self._child is None:
            raise RuntimeError("the child's stdio ends were already handed over and closed")
        return self._child

    def close_child_ends(self) -> None:
        """After the spawn: the agent must not keep the child's ends, or EOF would never come."""
        child, self._child = self._child, None
        if child is None:
            return
        for fd in sorted({child.stdin, child.stdout, child.stderr}):
            os.close(fd)

    def _outputs(self) -> tuple[OutputStream, ...]:
        if self.stderr is self.stdout:
            return (self.stdout,)
        return (self.stdout, self.stderr)

    def mark_exited(self, when: float | None = None) -> None:
        for out in self._outputs():
            out.mark_exited(when)

    @property
    def drained(self) -> bool:
        """Every output returned EOF to a reader (or was closed): nothing is left to deliver."""
        return all(out.at_eof for out in self._outputs())

    @property
    def reading(self) -> bool:
        """A long-poll read of an output is pending."""
        return any(out.reading for out in self._outputs())

    @property
    def reads(self) -> int:
        """Reads asked of the outputs so far."""
        return sum(out.reads for out in self._outputs())

    def unread(self) -> int:
        """Output bytes not yet returned to a reader (see `OutputStream.unread`)."""
        return sum(out.unread() for out in self._outputs())

    def close_stdin(self) -> None:
        """CloseStdin: the process sees EOF on a pipe. For a tty the master stays open (closing it
        would hang up the terminal and lose output); further writes are refused."""
        self.stdin.close()

    def resize(self, rows: int, columns: int) -> None:
        if self._tty_fd is None:
            raise Unavailable("no tty")
        try:
            _set_winsize(self._tty_fd, rows, columns)
        except OSError as err:
            raise Unavailable(f"resize tty: {os.strerror(err.errno or 0)}") from err

    def close(self) -> None:
        """Release every fd this object still holds; pending reads return EOF."""
        self.close_child_ends()
        self.stdin.close()
        for out in self._outputs():
            out.close()
        fd, self._tty_fd = self._tty_fd, None
        if fd is not None:
            os.close(fd)


def _check_len(name: str, n: int) -> int:
    if n <= 0:
        raise InvalidArgument(f"read {name}: len must be greater than 0, got {n}")
    return n


def _set_winsize(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _set_pipe_size(fd: int, size: int) -> None:
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError as err:
        log.warning(
            "cannot set pipe size (agent.container_pipe_size)",
            extra={"size": size, "error": os.strerror(err.errno or 0)},
        )
