"""agent/console.py and kata-agent-ctl console with real shells on ptys (no VM)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from agent.config import DebugConsoleConfig
from agent.console import Console, split_winsize, winsize_message


def test_window_size_messages_are_taken_out_of_the_stream() -> None:
    data, sizes, keep = split_winsize(b"ls" + winsize_message(40, 120) + b"\r")
    assert (data, sizes, keep) == (b"ls\r", [(40, 120)], b"")
    data, sizes, keep = split_winsize(b"abc\x1b]77")
    assert (data, sizes, keep) == (b"abc", [], b"\x1b]77")
    data, sizes, keep = split_winsize(keep + b"77;5;6\x07x")
    assert (data, sizes, keep) == (b"x", [(5, 6)], b"")
    assert split_winsize(b"\x1b[A") == (b"\x1b[A", [], b"")


async def test_a_session_gives_a_shell_on_a_pty_and_applies_the_window_size() -> None:
    console = Console(DebugConsoleConfig(enabled=True), shells=("/bin/sh",))
    host, guest = socket.socketpair()
    guest.setblocking(False)
    session = asyncio.ensure_future(
        console._session(guest.fileno(), guest.fileno(), winsize_message(33, 101))
    )
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(host, b"stty size; tty; echo done-$((2*21)); exit\n")
    host.setblocking(False)
    out = b""
    async with asyncio.timeout(30):
        while b"done-42" not in out:
            out += await loop.sock_recv(host, 4096)
        await session
    text = out.decode(errors="replace")
    assert "33 101" in text
    assert "/dev/pts/" in text
    host.close()
    guest.close()


async def test_ctl_console_relays_both_ways_until_the_guest_closes() -> None:
    from agent.ctl.console import attach

    ours, theirs = socket.socketpair()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.set_blocking(out_r, False)
    task = asyncio.ensure_future(attach(ours, in_r, out_w))
    loop = asyncio.get_running_loop()
    os.write(in_w, b"typed\n")
    theirs.setblocking(False)
    got = b""
    async with asyncio.timeout(10):
        while b"typed" not in got:
            got += await loop.sock_recv(theirs, 100)
        await loop.sock_sendall(theirs, b"from guest")
        theirs.close()
        assert await task == 0
    assert os.read(out_r, 100) == b"from guest"
    for fd in (in_r, in_w, out_r, out_w):
        os.close(fd)


async def test_a_vsock_port_that_cannot_listen_does_not_stop_the_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        taken = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        taken.bind((socket.VMADDR_CID_ANY, 0xFFFFFFFF))  # any free port
        taken.listen(1)
    except OSError as err:
        pytest.skip(f"no AF_VSOCK here: {err}")
    port = taken.getsockname()[1]
    console = Console(DebugConsoleConfig(enabled=True, vport=port), shells=("/bin/sh",))
    with taken:
        await console.start()  # EADDRINUSE: logged, not raised
        await console.close()
    assert "debug console vsock listener failed" in caplog.text
