"""``check``: Health.Check (exit 0 when the agent is SERVING)."""

from __future__ import annotations

import argparse
from typing import Any

from agent.ctl.context import Context, add_parser
from agent.rpc.pb import health_pb2


def register(sub: Any) -> None:
    p = add_parser(sub, "check", help="Health.Check: is the agent serving?")
    p.add_argument("--service", default="", help="service name to ask about (ignored by Kata)")
    p.set_defaults(run=run)


async def run(ctx: Context, args: argparse.Namespace) -> int:
    client = await ctx.client()
    resp = await client.health.Check(
        health_pb2.CheckRequest(service=args.service), timeout=ctx.timeout
    )
    ctx.print_message(resp)
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1
