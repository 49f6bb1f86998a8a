"""``kata-agent-ctl exec [-t] CID -- CMD...``: run a process in a running container with the
terminal attached (ExecProcess, then the same I/O protocol as ``run``), exit with its status."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from agent.ctl.commands.run import attach, command, terminal_size
from agent.ctl.container_spec import exec_process
from agent.ctl.context import Context
from agent.rpc.pb import agent_pb2


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("exec", help="run a process in a running container")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal (interactive)")
    p.add_argument("--exec-id", default="", help="exec id (default: a random one)")
    p.add_argument("--env", "-e", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--cwd", default="/", help="working directory")
    p.add_argument("container_id")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    p.set_defaults(run=exec_main)


async def exec_main(ctx: Context, args: argparse.Namespace) -> int:
    cmd = command(args)
    client = await ctx.client()
    eid = args.exec_id or str(uuid.uuid4())
    await client.agent.ExecProcess(
        agent_pb2.ExecProcessRequest(
            container_id=args.container_id,
            exec_id=eid,
            process=exec_process(
                cmd,
                terminal=args.tty,
                env=args.env,
                cwd=args.cwd,
                console_size=terminal_size() if args.tty else None,
            ),
        )
    )
    return await attach(client, args.container_id, eid, terminal=args.tty)
