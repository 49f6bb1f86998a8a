"""``kata-agent-ctl console --addr ADDR``: attach this terminal to the agent's debug console.

ADDR is where the guest's console is reachable:

* ``unix:///path`` -- a unix socket, e.g. the virtio-serial port QEMU exposes (``make vm``:
  ``build/vm/console.sock``), or ``unix://@name`` (abstract);
* ``vsock://CID:PORT`` -- the agent's ``agent.debug_console_vport`` (Kata uses 1026);
* ``hvsock://PATH:PORT`` -- Cloud Hypervisor / Firecracker hybrid vsock (``CONNECT PORT``).

The terminal is put in raw mode (restored on exit); the window size is sent at start and on every
SIGWINCH as the in-band message ``agent.console`` understands. ``Ctrl-]`` detaches (the guest's
shell is then ended by the agent); the session also ends when the guest closes it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import struct
import sys
import termios
import tty
from typing import Any

from agent.console import winsize_message

DETACH = b"\x1d"  # Ctrl-]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "console",
        help="attach the terminal to the agent's debug console (Ctrl-] detaches)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--addr",
        dest="console_addr",
        default=None,
        help="console address (default: the global --addr)",
    )
    p.set_defaults(run=run)


def dial(address: str, timeout: float = 10.0) -> socket.socket:
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError(f"invalid console address {address!r}: expected scheme://...")
    if scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = "\0" + rest[1:] if rest.startswith("@") else rest
    elif scheme == "vsock":
        cid, _, port = rest.partition(":")
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect((int(cid), int(port)))
        return sock
    elif scheme == "hvsock":
        path, _, port = rest.rpartition(":")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"CONNECT {int(port)}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                break
            reply += chunk
        if not reply.startswith(b"OK"):
            sock.close()
            raise ConnectionRefusedError(
                f"hvsock CONNECT {port}: {reply.decode(errors='replace')!r}"
            )
        return sock
    else:
        raise ValueError(f"unknown console address scheme {scheme!r} (unix, vsock or hvsock)")
    sock.settimeout(timeout)
    sock.connect(target)
    return sock


def terminal_size(fd: int) -> tuple[int, int]:
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 24, 80
    return rows or 24, cols or 80


async def run(ctx: Any, args: argparse.Namespace) -> int:
    address = args.console_addr or ctx.addr
    sock = await asyncio.to_thread(dial, address, ctx.timeout)
    return await attach(sock, sys.stdin.fileno(), sys.stdout.fileno())


async def attach(sock: socket.socket, in_fd: int, out_fd: int) -> int:
    """Relay between the terminal and the console socket until either side ends."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    is_tty = os.isatty(in_fd)
    saved = termios.tcgetattr(in_fd) if is_tty else None
    done: asyncio.Future[int] = loop.create_future()
    sends: set[asyncio.Task[None]] = set()

    def finish(code: int) -> None:
        if not done.done():
            done.set_result(code)

    async def send(data: bytes) -> None:
        try:
            await loop.sock_sendall(sock, data)
        except OSError:
            finish(1)

    def queue(data: bytes) -> None:
        task = loop.create_task(send(data))
        sends.add(task)
        task.add_done_callback(sends.discard)

    def on_input() -> None:
        try:
            data = os.read(in_fd, 4096)
        except BlockingIOError:
            return
        if not data:
            finish(0)
            return
        if is_tty and DETACH in data:
            data = data[: data.index(DETACH)]
            if data:
                queue(data)
            finish(0)
            return
        queue(data)

    async def pump_output() -> None:
        while True:
            try:
                data = await loop.sock_recv(sock, 65536)
            except OSError:
                data = b""
            if not data:
                finish(0)
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(out_fd, view) :]
                except BlockingIOError:
                    await asyncio.sleep(0.01)

    def on_winch() -> None:
        queue(winsize_message(*terminal_size(in_fd)))

    try:
        if is_tty:
            tty.setraw(in_fd)
            await send(winsize_message(*terminal_size(in_fd)))
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGWINCH, on_winch)
        loop.add_reader(in_fd, on_input)
        output = loop.create_task(pump_output())
        code = await done
        output.cancel()
        return code
    finally:
        loop.remove_reader(in_fd)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGWINCH)
        if saved is not None:
            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        sock.close()
        if is_tty:
            os.write(out_fd, b"\r\n")
