"""``guest-details``: GetGuestDetails (memory block size, hotplug probe, agent details)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.ctl.context import Context, add_parser
from agent.rpc.pb import agent_pb2


def register(sub: Any) -> None:
    p = add_parser(sub, "guest-details", help="GetGuestDetails")
    p.set_defaults(run=run)


async def run(ctx: Context, args: argparse.Namespace) -> int:
    client = await ctx.client()
    resp = await client.agent.GetGuestDetails(
        agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True),
        timeout=ctx.timeout,
    )
    ctx.print_message(resp)
    return 0
