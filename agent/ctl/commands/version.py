"""``version``: Health.Version."""

from __future__ import annotations

import argparse
from typing import Any

from agent.ctl.context import Context, add_parser
from agent.rpc.pb import health_pb2


def register(sub: Any) -> None:
    p = add_parser(sub, "version", help="Health.Version: agent and API versions")
    p.set_defaults(run=run)


async def run(ctx: Context, args: argparse.Namespace) -> int:
    client = await ctx.client()
    ctx.print_message(await client.health.Version(health_pb2.CheckRequest(), timeout=ctx.timeout))
    return 0
