"""``kata-agent-ctl ps CID...``: one line per container from StatsContainer (the contract has no
"list containers" method, so the ids are given): processes, memory, CPU time."""

from __future__ import annotations

import argparse
from typing import Any

from agent.ctl.context import Context
from agent.rpc.pb import agent_pb2
from agent.rpc.status import RpcError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ps", help="processes, memory and CPU of containers")
    p.add_argument("container_ids", nargs="+")
    p.set_defaults(run=ps_main)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}MiB"


async def ps_main(ctx: Context, args: argparse.Namespace) -> int:
    client = await ctx.client()
    status = 0
    print(f"{'CONTAINER':<24} {'PIDS':>5} {'MEMORY':>10} {'LIMIT':>12} {'CPU(s)':>9}", file=ctx.out)
    for cid in args.container_ids:
        try:
            resp = await client.agent.StatsContainer(
                agent_pb2.StatsContainerRequest(container_id=cid)
            )
        except RpcError as err:
            print(f"{cid:<24} {err}", file=ctx.out)
            status = 1
            continue
        s = resp.cgroup_stats
        mem = s.memory_stats.usage
        limit = _mib(mem.limit) if 0 < mem.limit < (1 << 60) else "-"
        cpu = s.cpu_stats.cpu_usage.total_usage / 1e9
        print(
            f"{cid:<24} {s.pids_stats.current:>5} {_mib(mem.usage):>10} {limit:>12} {cpu:>9.2f}",
            file=ctx.out,
        )
    return status
