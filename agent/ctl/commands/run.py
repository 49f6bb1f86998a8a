"""``kata-agent-ctl run --rootfs DIR [-t] [--id ID] -- CMD...``: run one container in the agent's
sandbox with the terminal attached, and exit with the container's status.

Steps: CreateSandbox (reused if the agent already has one), CreateContainer with a default spec
(`agent.ctl.container_spec`), StartContainer, then the shim's I/O protocol: ReadStdout/ReadStderr
long-polls until EOF, WriteStdin from our stdin (CloseStdin at its end), TtyWinResize on SIGWINCH
with ``-t`` (our terminal in raw mode meanwhile), WaitProcess, RemoveContainer. The sandbox is kept
(DestroySandbox ends the agent, and powers a guest off) unless ``--destroy-sandbox`` is given.

The I/O plumbing (`attach`) is shared with ``kata-agent-ctl exec``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import signal
import stat
import struct
import sys
import termios
import tty
import uuid
from collections.abc import Iterator
from typing import Any

from agent.ctl.container_spec import container_spec
from agent.ctl.context import Context, UsageError
from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError

READ_LEN = 32768


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run", help="run a container in the agent's sandbox with the terminal attached"
    )
    p.add_argument("--rootfs", required=True, help="the container's root directory (agent's view)")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (interactive)")
    p.add_argument("--id", default="", help="container id (default: a random one)")
    p.add_argument("--env", "-e", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--cwd", default="/", help="working directory in the container")
    p.add_argument("--hostname", default="kata", help="sandbox hostname (new sandbox only)")
    p.add_argument("--memory", type=int, default=0, help="memory limit in bytes")
    p.add_argument(
        "--destroy-sandbox", action="store_true", help="DestroySandbox at the end (ends the agent)"
    )
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(run=run_main)


def command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("a command is required after --")
    return cmd


async def run_main(ctx: Context, args: argparse.Namespace) -> int:
    cmd = command(args)
    client = await ctx.client()
    cid = args.id or f"ctl-{uuid.uuid4().hex[:12]}"
    try:
        await client.agent.CreateSandbox(
            agent_pb2.CreateSandboxRequest(hostname=args.hostname, sandbox_id=cid)
        )
    except RpcError as err:
        if err.code != Code.ALREADY_EXISTS:
            raise
    spec = container_spec(
        args.rootfs,
        cmd,
        terminal=args.tty,
        env=args.env,
        cwd=args.cwd,
        memory_limit=args.memory,
        console_size=terminal_size() if args.tty else None,
    )
    await client.agent.CreateContainer(
        agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec)
    )
    try:
        await client.agent.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
        status = await attach(client, cid, cid, terminal=args.tty)
    finally:
        with contextlib.suppress(RpcError):
            await client.agent.RemoveContainer(
                agent_pb2.RemoveContainerRequest(container_id=cid, timeout=0)
            )
        if args.destroy_sandbox:  # asked for explicitly: also a sandbox an earlier run made
            with contextlib.suppress(RpcError):
                await client.agent.DestroySandbox(agent_pb2.DestroySandboxRequest())
    return status


# -- the shim's I/O protocol ----------------------------------------------------------------------


async def attach(client: Any, cid: str, eid: str, *, terminal: bool) -> int:
    """Copy I/O until the process's outputs reach EOF, then WaitProcess; returns its status."""
    loop = asyncio.get_running_loop()
    out = sys.stdout.buffer
    err = sys.stderr.buffer

    async def pump(method: str, sink: Any) -> None:
        call = getattr(client.agent, method)
        while True:
            resp = await call(
                agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=READ_LEN)
            )
            if not resp.data:
                return
            sink.write(resp.data)
            sink.flush()

    with _raw_terminal(terminal), _winch(client, cid, eid, terminal):
        stdin_task = loop.create_task(_copy_stdin(client, cid, eid))
        try:
            pumps = [pump("ReadStdout", out)]
            if not terminal:
                pumps.append(pump("ReadStderr", err))
            await asyncio.gather(*pumps)
        finally:
            stdin_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RpcError):
                await stdin_task
    resp = await client.agent.WaitProcess(
        agent_pb2.WaitProcessRequest(container_id=cid, exec_id=eid)
    )
    return int(resp.status)


async def _copy_stdin(client: Any, cid: str, eid: str) -> None:
    """Our stdin → WriteStdin (≤ 32 KiB per call), then CloseStdin at EOF."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    # epoll takes pipes, sockets and terminals; it refuses regular files and devices such as
    # /dev/null (EPERM), which are read in a worker thread instead (a read may block).
    pollable = fd >= 0 and _pollable(fd)
    while True:
        if fd < 0:
            data = b""
        elif pollable:
            data = await _read_when_ready(fd)
        else:
            data = await asyncio.to_thread(os.read, fd, READ_LEN)
        if not data:
            break
        await client.agent.WriteStdin(
            agent_pb2.WriteStreamRequest(container_id=cid, exec_id=eid, data=data)
        )
    await client.agent.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=eid))


def _pollable(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)


async def _read_when_ready(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_ready() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        return os.read(fd, READ_LEN)
    except BlockingIOError:
        return await _read_when_ready(fd)
    except OSError:
        return b""


def terminal_size() -> tuple[int, int] | None:
    try:
        packed = fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
    except (OSError, ValueError):
        return None
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return rows, cols


@contextlib.contextmanager
def _raw_terminal(terminal: bool) -> Iterator[None]:
    if not terminal or not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _winch(client: Any, cid: str, eid: str, terminal: bool) -> Iterator[None]:
    if not terminal:
        yield
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def resize() -> None:
        size = terminal_size()
        if size is None:
            return
        with contextlib.suppress(RpcError):
            await client.agent.TtyWinResize(
                agent_pb2.TtyWinResizeRequest(
                    container_id=cid, exec_id=eid, row=size[0], column=size[1]
                )
            )

    def schedule() -> None:
        task = loop.create_task(resize())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    schedule()
    loop.add_signal_handler(signal.SIGWINCH, schedule)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        for task in tasks:
            task.cancel()
