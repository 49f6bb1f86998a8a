"""The debug console, as Kata's agent offers it (``agent.debug_console``).

Three places a root shell can be reached:

* ``agent.debug_console`` with ``agent.debug_console_vport=0``: a shell on the serial console
  (``/dev/console``), respawned when it exits;
* ``agent.debug_console_vport=N``: a vsock listener on port N, one pty-backed shell per connection
  (``kata-runtime exec`` uses port 1026);
* a virtio-serial port named ``agent.console.0`` (hosts without vsock, e.g. ``make vm``): one
  pty-backed shell per host connection. The host speaks first (anything the guest writes while no
  host is attached is dropped by virtio-serial), so the shell starts on the first byte received;
  the host hanging up ends the shell and the port is served again.

Shell search order as Kata: ``/run/kata-extensions/devkit/bin/devkit-sh``, ``/bin/bash``,
``/bin/sh``. Shells are started through ``agent.spawn`` (never forked by the agent); ``setsid -c``
makes the pty the shell's controlling terminal.

Window size: a client may send ``ESC ] 7777 ; ROWS ; COLS BEL`` in its byte stream (what
``kata-agent-ctl console`` does on start and on SIGWINCH); the relay strips it and applies it to
the pty with TIOCSWINSZ. Any other byte goes to the shell unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import re
import signal
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

from agent import spawn
from agent.config import DebugConsoleConfig
from agent.devices.virtio_ports import find_virtio_port

log = logging.getLogger(__name__)

SHELLS = ("/run/kata-extensions/devkit/bin/devkit-sh", "/bin/bash", "/bin/sh")
CONSOLE_PORT = "agent.console.0"
SHELL_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM": "vt100",
    "HOME": "/root",
}
WINSIZE_RE = re.compile(rb"\x1b\]7777;(\d{1,5});(\d{1,5})\x07")
_WINSIZE_PREFIX = b"\x1b]7777;"
_READ = 64 * 1024


def winsize_message(rows: int, cols: int) -> bytes:
    """The in-band window size message understood by the relay."""
    return b"\x1b]7777;%d;%d\x07" % (rows, cols)


def find_shell(candidates: tuple[str, ...] = SHELLS) -> str | None:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return None


def split_winsize(buf: bytes) -> tuple[bytes, list[tuple[int, int]], bytes]:
    """(bytes for the shell, window sizes found, an incomplete message kept for the next read)."""
    sizes = [(int(r), int(c)) for r, c in WINSIZE_RE.findall(buf)]
    data = WINSIZE_RE.sub(b"", buf)
    keep = b""
    start = data.rfind(b"\x1b")
    if start != -1:
        tail = data[start:]
        partial = _WINSIZE_PREFIX.startswith(tail[: len(_WINSIZE_PREFIX)])
        if partial and b"\x07" not in tail and len(tail) < 32:
            data, keep = data[:start], tail
    return data, sizes, keep


def set_winsize(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _shell_argv(shell: str) -> list[str]:
    """``setsid -c`` (busybox and util-linux) gives the shell the pty as controlling terminal."""
    for setsid in ("/usr/bin/setsid", "/bin/setsid"):
        if os.access(setsid, os.X_OK):
            return [setsid, "-c", shell, "-i"]
    return [shell, "-i"]


class Console:
    """Owns the console tasks; ``close()`` stops them and kills their shells."""

    def __init__(
        self,
        config: DebugConsoleConfig,
        *,
        find_port: Callable[[str], str | None] | None = None,
        shells: tuple[str, ...] = SHELLS,
        console_path: str = "/dev/console",
    ) -> None:
        self._config = config
        self._find_port = find_port
        self._shells = shells
        self._console_path = console_path
        self._tasks: set[asyncio.Task[None]] = set()
        self._children: set[Any] = set()
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        if not self._config.enabled:
            return
        if self._config.vport > 0:
            try:
                self._listen_vsock(self._config.vport)
            except OSError as err:
                # A debug aid must never keep the agent from serving.
                log.error(
                    "debug console vsock listener failed",
                    extra={"vport": self._config.vport, "error": str(err), "errno": err.errno},
                )
        else:
            self._task(self._serial_console(), "serial console")
        if self._find_port is not None:
            port = self._find_port(CONSOLE_PORT)
            if port is not None:
                self._task(self._virtio_port(port), "virtio-serial console")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for child in list(self._children):
            child.send_signal(signal.SIGKILL)
        if self._sock is not None:
            self._sock.close()

    def _task(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"console: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("debug console task failed", extra={"error": repr(task.exception())})

    def _spawn_shell(self, tty_fd: int) -> Any:
        shell = find_shell(self._shells)
        if shell is None:
            raise FileNotFoundError(errno.ENOENT, "no shell found", " ".join(self._shells))
        child = spawn.spawn(
            _shell_argv(shell), fds={0: tty_fd, 1: tty_fd, 2: tty_fd}, env=SHELL_ENV
        )
        self._children.add(child)
        return child

    # -- the serial console ------------------------------------------------------------------

    async def _serial_console(self) -> None:
        while True:
            try:
                fd = os.open(self._console_path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as err:
                log.error(
                    "debug console unavailable",
                    extra={"path": self._console_path, "error": str(err)},
                )
                return
            try:
                child = self._spawn_shell(fd)
            finally:
                os.close(fd)
            log.info(
                "debug console shell started", extra={"pid": child.pid, "on": self._console_path}
            )
            status = await child.wait()
            self._children.discard(child)
            log.info("debug console shell exited", extra={"status": str(status)})
            await asyncio.sleep(0.5)  # do not spin if the shell cannot start

    # -- vsock ---------------------------------------------------------------------------------

    def _listen_vsock(self, port: int) -> None:
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((socket.VMADDR_CID_ANY, port))
        sock.listen(8)
        sock.setblocking(False)
        self._sock = sock
        log.info("debug console listening", extra={"vport": port})
        self._task(self._accept(sock), f"vsock {port}")

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(sock)
            conn.setblocking(False)
            self._task(self._socket_session(conn), "vsock session")

    async def _socket_session(self, conn: socket.socket) -> None:
        with conn:
            await self._session(conn.fileno(), conn.fileno(), b"")

    # -- virtio-serial -----------------------------------------------------------------------

    async def _virtio_port(self, port: str) -> None:
        loop = asyncio.get_running_loop()
        log.info("debug console on virtio-serial port", extra={"path": str(port)})
        while True:
            try:
                fd = os.open(port, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as err:
                log.error(
                    "debug console port unavailable", extra={"path": str(port), "error": str(err)}
                )
                await asyncio.sleep(1)
                continue
            try:
                first = await _read_first(loop, fd)
                if first:
                    await self._session(fd, fd, first)
            finally:
                os.close(fd)
            # The host hung up: the port reads EOF until it is back; reopen then.
            await asyncio.sleep(0.2)

    # -- one shell on a pty, relayed to (rfd, wfd) ------------------------------------------

    async def _session(self, rfd: int, wfd: int, first: bytes) -> None:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        os.set_blocking(master, False)
        try:
            child = self._spawn_shell(slave)
        except OSError as err:
            os.close(master)
            os.close(slave)
            with contextlib.suppress(OSError):
                os.write(wfd, f"debug console: {err}\r\n".encode())
            return
        os.close(slave)
        log.info("debug console session", extra={"pid": child.pid})
        keep = b""

        def to_shell(data: bytes) -> bytes:
            nonlocal keep
            out, sizes, keep = split_winsize(keep + data)
            for rows, cols in sizes:
                set_winsize(master, rows, cols)
            return out

        try:
            pending = to_shell(first)
            if pending:
                await _write_all(loop, master, pending)
            host = asyncio.ensure_future(_pump(loop, rfd, master, to_shell))
            shell = asyncio.ensure_future(_pump(loop, master, wfd, None))
            exited = asyncio.ensure_future(child.wait())
            await asyncio.wait({host, shell, exited}, return_when=asyncio.FIRST_COMPLETED)
            for fut in (host, shell, exited):
                fut.cancel()
        finally:
            child.send_signal(signal.SIGHUP)
            child.send_signal(signal.SIGKILL)
            self._children.discard(child)
            os.close(master)
            log.info("debug console session ended", extra={"pid": child.pid})


async def _read_first(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """Wait for the host's first bytes (EOF/POLLHUP while no host is attached: poll slowly)."""
    while True:
        try:
            data = os.read(fd, _READ)
        except BlockingIOError:
            data = None
        except OSError as err:
            if err.errno in (errno.EIO, errno.ECONNRESET):
                data = b""
            else:
                raise
        if data:
            return data
        if data is None:
            with contextlib.suppress(TimeoutError):
                await _wait_fd(loop, fd, timeout=0.5)
        else:
            await asyncio.sleep(0.2)


async def _pump(
    loop: asyncio.AbstractEventLoop,
    src: int,
    dst: int,
    transform: Callable[[bytes], bytes] | None,
) -> None:
    """Copy bytes from `src` to `dst` until EOF or an error on either side."""
    while True:
        await _wait_fd(loop, src)
        try:
            data = os.read(src, _READ)
        except BlockingIOError:
            continue
        except OSError:
            return  # EIO: the pty's shell side closed; ECONNRESET: the host went away
        if not data:
            return
        if transform is not None:
            data = transform(data)
        if data:
            await _write_all(loop, dst, data)


async def _write_all(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
            continue
        except BlockingIOError:
            pass
        await _wait_fd(loop, fd, write=True)


async def _wait_fd(
    loop: asyncio.AbstractEventLoop,
    fd: int,
    *,
    write: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 - the reader is removed on expiry
) -> None:
    """Wait until `fd` is readable (or writable)."""
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    if write:
        loop.add_writer(fd, ready)
    else:
        loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def start_debug_console(config: DebugConsoleConfig) -> Callable[[], Any]:
    """Start the console (a no-op unless ``agent.debug_console``); returns its closer."""
    console = Console(config, find_port=find_virtio_port)
    await console.start()
    return console.close
