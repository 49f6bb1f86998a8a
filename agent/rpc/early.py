"""Phase 0's server for stream listeners: Health.Check answered before asyncio and protobuf are
even imported.

``agent.boot.phase0`` binds the listening socket first and, while a worker thread configures the
agent and imports phase 1, serves it with this
small ``selectors`` loop on the main thread, which only knows how to answer a plain
``grpc.Health/Check`` request (its reply is a constant). Anything else ends early service of that
connection: the bytes stay buffered, and once the imports are done every accepted connection is
handed to the asyncio server (``Handover``) with its unparsed input and any reply not yet written,
so no request is lost or answered twice.

Only stream listeners (``unix://``, ``vsock://``) take part; for a serial port see
``agent.rpc.early_serial``. This module imports only the standard library's light parts.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import stat
import threading
import time
from dataclasses import dataclass, field

from agent.rpc.early_wire import take_check

VMADDR_CID_ANY = 0xFFFFFFFF


@dataclass
class EarlyConnection:
    sock: socket.socket
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    early: bool = True  # still parsed here; False once a request needs the real server
    answered: int = 0
    held_since: float | None = None  # time.monotonic() when that request stopped early service


@dataclass
class Handover:
    """What phase 0 hands to the asyncio server."""

    address: str  # the listen address the listener was bound for
    listener: socket.socket
    connections: list[EarlyConnection]
    answered: int

    @property
    def held_since(self) -> float | None:
        """When phase 0 first held a request for the asyncio server (time.monotonic())."""
        held = [c.held_since for c in self.connections if c.held_since is not None]
        return min(held, default=None)

    def close(self) -> None:
        """Give the listener (and its socket file) and the connections up: the configuration
        names another address, or the agent does not start."""
        for conn in self.connections:
            conn.sock.close()
        name = self.listener.getsockname()
        self.listener.close()
        if isinstance(name, str) and name.startswith("/"):
            with contextlib.suppress(OSError):
                os.unlink(name)


def bind(address: str) -> socket.socket | None:
    """A listening socket for ``address``, or None when phase 0 does not apply (serial)."""
    scheme, _, rest = address.partition("://")
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = "\0" + rest[1:] if rest.startswith("@") else rest
        try:
            if not target.startswith("\0"):
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISSOCK(os.stat(target).st_mode):
                        os.unlink(target)  # a stale socket of an earlier run
            sock.bind(target)
        except OSError:
            sock.close()
            raise
    elif scheme == "vsock":
        cid_s, _, port_s = rest.partition(":")
        cid = int(cid_s)
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            sock.bind((VMADDR_CID_ANY if cid == -1 else cid, int(port_s)))
        except OSError:
            sock.close()
            raise
    else:
        return None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class EarlyServer:
    """Serves Health.Check on ``listener`` until ``until`` is set (see the module docstring)."""

    def __init__(self, listener: socket.socket, address: str) -> None:
        self.listener = listener
        self.address = address
        self.connections: list[EarlyConnection] = []
        self.answered = 0

    def serve(self, until: threading.Event, *, poll: float = 0.002) -> Handover:
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        try:
            while not until.is_set():
                for key, _ in sel.select(timeout=poll):
                    if key.data is None:
                        self._accept(sel)
                    else:
                        self._read(sel, key.data)
        finally:
            sel.close()
        return Handover(
            self.address,
            self.listener,
            [c for c in self.connections if c.sock.fileno() >= 0],
            self.answered,
        )

    def _accept(self, sel: selectors.BaseSelector) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and friends: the asyncio server will accept it later
            conn.setblocking(False)
            entry = EarlyConnection(conn)
            self.connections.append(entry)
            sel.register(conn, selectors.EVENT_READ, entry)

    def _read(self, sel: selectors.BaseSelector, conn: EarlyConnection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            sel.unregister(conn.sock)
            conn.sock.close()
            return
        conn.inbuf += data
        if not conn.early:
            return
        self._answer(conn)
        if not conn.early:
            sel.unregister(conn.sock)  # keep buffering nothing more: the kernel buffers for us

    def _answer(self, conn: EarlyConnection) -> None:
        while True:
            reply = take_check(conn.inbuf)
            if reply is None:
                conn.early = False
                conn.held_since = time.monotonic()
                return
            if not reply:
                return
            conn.answered += 1
            self.answered += 1
            self._send(conn, reply)

    @staticmethod
    def _send(conn: EarlyConnection, frame: bytes) -> None:
        if conn.outbuf:
            conn.outbuf += frame
            return
        try:
            sent = conn.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return  # the peer is gone; the asyncio side will see it too
        if sent < len(frame):
            conn.outbuf += frame[sent:]
