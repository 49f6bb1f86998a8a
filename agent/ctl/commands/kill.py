"""``kata-agent-ctl kill CID [EXEC_ID] [-s SIGNAL] [--all]``: SignalProcess.

``--all`` is Kata's "every process of the container" (empty exec id with SIGKILL)."""

from __future__ import annotations

import argparse
import signal
from typing import Any

from agent.ctl.context import Context
from agent.rpc.pb import agent_pb2


def parse_signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("kill", help="send a signal to a container's process")
    p.add_argument("-s", "--signal", type=parse_signal, default=signal.SIGTERM)
    p.add_argument("--all", action="store_true", help="SIGKILL every process of the container")
    p.add_argument("container_id")
    p.add_argument("exec_id", nargs="?", default="", help="default: the container's init")
    p.set_defaults(run=kill_main)


async def kill_main(ctx: Context, args: argparse.Namespace) -> int:
    client = await ctx.client()
    signum = int(signal.SIGKILL) if args.all else int(args.signal)
    await client.agent.SignalProcess(
        agent_pb2.SignalProcessRequest(
            container_id=args.container_id,
            exec_id="" if args.all else args.exec_id,
            signal=signum,
        )
    )
    return 0
