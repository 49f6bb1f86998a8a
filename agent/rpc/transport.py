"""Listening endpoints: the only module that knows the transports.

Addresses (``agent.server_addr``):

* ``vsock://CID:PORT`` -- AF_VSOCK stream listener (``-1`` = any CID; default ``vsock://-1:1024``);
* ``unix:///path`` -- a unix socket file (a stale socket file at that path is replaced);
* ``unix://@name`` -- an abstract unix socket;
* ``serial:///dev/virtio-ports/NAME`` -- one ttrpc connection at a time over a virtio-serial
  port, for hosts without vhost-vsock. While no host is connected the port reads EOF and polls
  POLLHUP; the host connects and speaks first. The port stays open across host sessions (closing
  it could drop what a reconnecting host already sent); after a hang-up the session's calls are
  cancelled and the port is polled until a host is back, and since the guest may not notice a
  quick reconnect at all, stream id 1 arriving again also starts a new session
  (``agent.rpc.server.Connection``). A tty (a pty in tests, an hvc console) is put into raw mode.
  For tests the path may also be a listening unix socket, connected to anew for every session.

Unix sockets use the loop's own transports (uvloop's are fast). vsock connections and serial
ports use ``FdTransport``, a small add_reader/add_writer transport that works for any pollable fd
on both the default loop and uvloop (uvloop's own transports only know TCP, unix and pipes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import select
import socket
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.rpc.early_serial import SerialHandover

log = logging.getLogger(__name__)

ProtocolFactoryMaker = Callable[..., Callable[[], Any]]  # (peer, *, shared_stream=False)
VMADDR_CID_ANY = 0xFFFFFFFF
_READ_SIZE = 256 * 1024
_WRITE_HIGH_WATER = 1 << 20
_WRITE_LOW_WATER = 256 * 1024


class Listener(Protocol):
    async def close(self) -> None: ...


def parse_address(address: str) -> tuple[str, Any]:
    """(scheme, target): ("unix", "/path" | "\\0name"), ("vsock", (cid, port)), ("serial", path)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError(f"invalid address {address!r}: expected scheme://...")
    if scheme == "unix":
        if rest.startswith("@"):
            return "unix", "\0" + rest[1:]
        if not rest.startswith("/"):
            raise ValueError(f"invalid address {address!r}: unix path must be absolute")
        return "unix", rest
    if scheme == "vsock":
        cid_s, _, port_s = rest.partition(":")
        cid = int(cid_s)
        return "vsock", (VMADDR_CID_ANY if cid == -1 else cid, int(port_s))
    if scheme == "serial":
        return "serial", rest
    raise ValueError(f"invalid address {address!r}: unknown scheme {scheme!r}")


async def listen(
    address: str,
    factory_maker: ProtocolFactoryMaker,
    *,
    sock: socket.socket | None = None,
    serial: SerialHandover | None = None,
) -> Listener:
    """Serve ``address``; ``sock`` is a listening socket bound already (start-up phase 0),
    ``serial`` a serial port opened and served by PID 1's phase 0 (``agent.rpc.early_serial``)."""
    scheme, target = parse_address(address)
    loop = asyncio.get_running_loop()
    if scheme == "unix":
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                if not target.startswith("\0"):
                    _remove_stale_socket(target)
                sock.bind(target)
                sock.listen(128)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
        server = await loop.create_unix_server(factory_maker(address), sock=sock)
        return _AsyncioServer(server, target if not target.startswith("\0") else None)
    if scheme == "vsock":
        if sock is None:
            sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
            try:
                sock.bind(target)
                sock.listen(128)
                sock.setblocking(False)
            except OSError:
                sock.close()
                raise
        return _AcceptLoop(sock, factory_maker, address)
    if sock is not None:
        raise ValueError(f"{address}: a serial port cannot take a pre-bound socket")
    port = _SerialPort(target, factory_maker(address, shared_stream=True), adopted=serial)
    port.start()
    return port


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode):
        os.unlink(path)


class _AsyncioServer:
    def __init__(self, server: asyncio.AbstractServer, path: str | None) -> None:
        self._server = server
        self._path = path

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)
        if self._path:
            with contextlib.suppress(OSError):
                os.unlink(self._path)


class _AcceptLoop:
    """Accepts on any stream socket family with ``sock_accept`` and serves with FdTransport."""

    def __init__(self, sock: socket.socket, factory_maker: ProtocolFactoryMaker, name: str):
        self._sock = sock
        self._factory_maker = factory_maker
        self._name = name
        self._transports: set[FdTransport] = set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed", extra={"error": str(err)})
                    await asyncio.sleep(0.1)
                    continue
                raise
            conn.setblocking(False)
            protocol = self._factory_maker(f"{self._name} peer {peer}")()
            transport = FdTransport(conn.detach(), protocol, is_socket=True)
            self._transports.add(transport)
            transport.on_close(self._transports.discard)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()
        for transport in list(self._transports):
            transport.abort()


class FdTransport(asyncio.Transport):
    """A bidirectional transport over one non-blocking fd (socket or character device)."""

    def __init__(self, fd: int, protocol: Any, *, is_socket: bool, close_fd: bool = True) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self._fd = fd
        self._close_fd = close_fd  # False: the fd outlives the transport (a serial port)
        self.received = 0  # bytes read so far
        self.ended_by_eof = False  # the peer hung up (read returned 0 or EIO), not an error
        self._protocol = protocol
        self._is_socket = is_socket
        self._buffer = bytearray()
        self._closing = False
        self._closed = False
        self._paused_protocol = False
        self._reading = True
        self._close_callbacks: list[Callable[[FdTransport], None]] = []
        os.set_blocking(fd, False)
        protocol.connection_made(self)
        if not self._closing:  # the protocol may refuse the connection right away
            self._loop.add_reader(fd, self._on_readable)

    def on_close(self, callback: Callable[[FdTransport], None]) -> None:
        self._close_callbacks.append(callback)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "fd":
            return self._fd
        return default

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._loop.add_reader(self._fd, self._on_readable)
            self._reading = True

    def get_write_buffer_size(self) -> int:
        return len(self._buffer)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            # EIO: the other end of a pty line hung up; ECONNRESET etc.: peer gone.
            self._force_close(None if err.errno == errno.EIO else err)
            return
        if not data:
            self.ended_by_eof = True
            self._force_close(None)
            return
        self.received += len(data)
        try:
            self._protocol.data_received(data)
        except Exception as err:
            log.exception("protocol failed on received data")
            self._force_close(err)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if not self._buffer:
            try:
                n = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as err:
                self._force_close(err)
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
            self._loop.add_writer(self._fd, self._on_writable)
        self._buffer += data
        if len(self._buffer) > _WRITE_HIGH_WATER and not self._paused_protocol:
            self._paused_protocol = True
            self._protocol.pause_writing()

    def _on_writable(self) -> None:
        try:
            n = os.write(self._fd, self._buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._force_close(err)
            return
        del self._buffer[:n]
        if self._paused_protocol and len(self._buffer) <= _WRITE_LOW_WATER:
            self._paused_protocol = False
            self._protocol.resume_writing()
        if not self._buffer:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._force_close(None)

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False
        if not self._buffer:
            self._force_close(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._buffer.clear()
        if self._close_fd:
            os.close(self._fd)
        self._fd = -1
        try:
            self._protocol.connection_lost(exc)
        finally:
            for callback in self._close_callbacks:
                callback(self)


class _SerialPort:
    """One ttrpc connection at a time over a serial port (see the module docstring).

    A virtio-serial port reads EOF and polls POLLHUP while no host is connected. The port stays
    open across host sessions: closing it while a host connects could discard what that host has
    sent already (the guest driver drops unread input on close). After a hang-up the session's
    calls are cancelled (a new protocol per session) and the port is polled until a host is back.
    It is closed and reopened only after an error (EIO from a pty whose master went away, ...),
    and a unix socket standing in for the port (tests) is reconnected for every session.
    """

    POLL_MIN = 0.005
    POLL_MAX = 0.05

    def __init__(
        self, path: str, factory: Callable[[], Any], *, adopted: SerialHandover | None = None
    ) -> None:
        self.path = path
        self._factory = factory
        self._task: asyncio.Task[None] | None = None
        self._transport: FdTransport | None = None
        self._fd: int | None = adopted.fd if adopted is not None else None
        self._adopted = adopted  # phase 0's open port, its session and buffered bytes
        self.sessions = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = 0.02
        idle = self.POLL_MIN
        is_socket = False
        while True:
            if self._fd is None:
                try:
                    self._fd, is_socket = self._open()
                except OSError as err:
                    # Not there yet (port discovery is asynchronous) or busy: retry.
                    log.debug("serial port not ready", extra={"path": self.path, "error": str(err)})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.5)
                    continue
                backoff = 0.02
                log.info("serial port opened", extra={"path": self.path})
            fd = self._fd
            adopted, self._adopted = self._adopted, None
            resume = adopted is not None and adopted.connected  # a session phase 0 began
            if not resume and not is_socket and _hung_up(fd):
                await asyncio.sleep(idle)  # nobody on the host side yet
                idle = min(idle * 2, self.POLL_MAX)
                continue
            protocol = self._factory()
            closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            transport = FdTransport(fd, protocol, is_socket=is_socket, close_fd=is_socket)
            self._transport = transport
            if resume and adopted is not None:
                # Phase 0's replies first, then the input it left unparsed (same session).
                if adopted.outbuf:
                    transport.write(bytes(adopted.outbuf))
                if adopted.inbuf:
                    transport.received += len(adopted.inbuf)
                    protocol.data_received(bytes(adopted.inbuf))
            if is_socket:
                self._fd = None  # the transport owns (and closes) a socket
            transport.on_close(functools.partial(_resolve, closed))
            await closed
            self._transport = None
            if transport.received:
                self.sessions += 1
                log.info("serial connection hung up", extra={"path": self.path})
                idle = self.POLL_MIN
            else:
                # EOF before any byte: the port reports "readable" while nobody is connected
                await asyncio.sleep(idle)
                idle = min(idle * 2, self.POLL_MAX)
            if not is_socket and not transport.ended_by_eof:
                os.close(fd)  # an error: reopen the port
                self._fd = None

    def _open(self) -> tuple[int, bool]:
        st = os.stat(self.path)
        if stat.S_ISSOCK(st.st_mode):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
            return sock.detach(), True
        fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
        if os.isatty(fd):
            import tty  # a virtio-serial port is no tty: only a console line pays for it

            tty.setraw(fd)
        return fd, False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._transport is not None:
            self._transport.abort()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def _resolve(future: asyncio.Future[None], _transport: object) -> None:
    if not future.done():
        future.set_result(None)


def _hung_up(fd: int) -> bool:
    """True while nobody is connected on the host side (POLLHUP without pending input)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(0)
    if not events:
        return False
    revents = events[0][1]
    # virtio-serial reports POLLIN with POLLHUP while no host is connected (read() returns EOF),
    # so POLLIN must not count as "connected": that made the listener reopen the port in a loop.
    return bool(revents & select.POLLHUP)
