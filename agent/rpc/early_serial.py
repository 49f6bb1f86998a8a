"""Phase 0 for a serial listener: the port is open and Health.Check answered before asyncio,
protobuf or even logging are imported.

``agent.rpc.early`` does this for stream listeners (unix, vsock). A virtio-serial port carries one
byte stream for successive host sessions, so here phase 0 is one port, not a listener: PID 1
(``agent.boot.init``) opens the port as soon as the kernel shows it, and serves it with this small
``poll`` loop on its main thread while a worker thread sets the rest of the system up and imports
the agent. The loop only answers a plain ``grpc.Health/Check`` (a constant reply); any other
request ends early service: its bytes stay buffered and the port is no longer read. Then the
asyncio serial listener (``agent.rpc.transport``) adopts the open port (``SerialHandover``): the
replies not written yet go out first, then the input not parsed here is fed to its connection, so
nothing the host sent is lost or answered twice.

Port semantics (see ``agent.rpc.transport``): while no host is connected a virtio-serial port polls
POLLHUP (with POLLIN) and reads EOF; anything written then is dropped. A hang-up ends the session:
its partial input is discarded. The host speaks first, so nothing is lost by polling the port every
few milliseconds while nobody is there.

This module imports only ``os``, ``select``, ``struct`` and ``time``; the caller provides the
thread.
"""

from __future__ import annotations

import os
import select
import time

from agent.rpc.early_wire import take_check

TYPE_CHECKING = False  # not typing's: typing is not imported before the channel is open
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

_READ_SIZE = 65536


class SerialHandover:
    """What serial phase 0 hands to the asyncio serial listener."""

    __slots__ = (
        "address",
        "answered",
        "connected",
        "fd",
        "held_since",
        "inbuf",
        "outbuf",
        "path",
    )

    def __init__(self, address: str, path: str, fd: int | None) -> None:
        self.address = address  # the listen address this port was opened for
        self.path = path
        self.fd = fd  # None: the port failed during phase 0; the listener opens it anew
        self.inbuf = bytearray()  # input of the current host session not parsed here
        self.outbuf = bytearray()  # replies not written yet
        self.connected = False  # a host session is in progress (bytes came since the last hang-up)
        self.answered = 0
        self.held_since: float | None = None  # time.monotonic(): a request is held for asyncio

    def close(self) -> None:
        """Give the port up (the full configuration names another address)."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def open_port(path: str) -> int:
    """Open a serial port as the asyncio listener would (non-blocking, raw mode for a tty)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    if os.isatty(fd):
        import tty  # a virtio-serial port is no tty: only a console line pays for it

        tty.setraw(fd)
    return fd


class EarlySerialServer:
    """Answers Health.Check on an open serial port until ``until`` is set."""

    POLL_MIN = 0.005
    POLL_MAX = 0.05

    def __init__(self, handover: SerialHandover) -> None:
        self.h = handover
        self._early = True  # False once a request needs the real server

    def serve(self, start: Callable[[], threading.Event]) -> SerialHandover:
        """Serve until the event ``start`` returns is set. ``start`` is called after the first
        poll of the port (what the host sent already is answered first): it starts the work
        that sets the event (and may import ``threading``, slow under TCG)."""
        h = self.h
        idle = self.POLL_MIN
        poller = select.poll()
        events_mask = select.POLLIN
        if h.fd is not None:
            poller.register(h.fd, events_mask)
            events = poller.poll(0)
            if events and not events[0][1] & select.POLLHUP:
                self._read()
        until = start()
        while not until.is_set():
            if h.fd is None or not self._early:
                until.wait()  # nothing more to do here: the listener takes over
                break
            want = select.POLLIN | (select.POLLOUT if h.outbuf else 0)
            if want != events_mask:
                poller.modify(h.fd, want)
                events_mask = want
            events = poller.poll(int(self.POLL_MAX * 1000))
            if not events:
                continue
            revents = events[0][1]
            if revents & select.POLLHUP:
                self._hang_up()
                until.wait(idle)  # nobody on the host side: poll again a little later
                idle = min(idle * 2, self.POLL_MAX)
                continue
            idle = self.POLL_MIN
            if revents & select.POLLOUT and h.outbuf:
                self._flush()
            if revents & (select.POLLIN | select.POLLERR):
                self._read()
        return h

    def _hang_up(self) -> None:
        h = self.h
        if h.connected:
            h.connected = False
            h.inbuf.clear()  # the session is over: its partial input and replies go nowhere
            h.outbuf.clear()

    def _read(self) -> None:
        h = self.h
        assert h.fd is not None
        try:
            data = os.read(h.fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO and friends: give the port up; the asyncio listener reopens it.
            self._hang_up()
            h.close()
            return
        if not data:
            self._hang_up()
            return
        h.connected = True
        h.inbuf += data
        self._answer()

    def _answer(self) -> None:
        h = self.h
        while True:
            reply = take_check(h.inbuf)
            if reply is None:
                self._early = False
                h.held_since = time.monotonic()
                return
            if not reply:
                return
            h.answered += 1
            h.outbuf += reply
            self._flush()

    def _flush(self) -> None:
        h = self.h
        if h.fd is None or not h.outbuf:
            return
        try:
            sent = os.write(h.fd, h.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # the host is gone; the hang-up is seen on the next poll
        del h.outbuf[:sent]
