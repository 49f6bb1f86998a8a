"""``kata-agent-ctl`` entry point: global options, then one subcommand from agent/ctl/commands."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import pkgutil
import sys
from collections.abc import Awaitable, Callable

from agent.ctl import commands
from agent.ctl.context import Context, UsageError
from agent.rpc.status import RpcError

DEFAULT_ADDR = "vsock://3:1024"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kata-agent-ctl", description="Talk to a kata agent over ttrpc."
    )
    parser.add_argument(
        "--addr",
        default=os.environ.get("KATA_AGENT_CTL_ADDR", DEFAULT_ADDR),
        help="agent address: unix:///path, unix://@name, vsock://CID:PORT, hvsock://PATH:PORT "
        "(default $KATA_AGENT_CTL_ADDR or %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds for the dial and each call"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        try:
            module = importlib.import_module(f"agent.ctl.commands.{info.name}")
            module.register(sub)
        except Exception as err:  # one broken subcommand must not take the others down
            broken = sub.add_parser(
                info.name.replace("_", "-"), help=f"(unavailable: {type(err).__name__})"
            )
            broken.set_defaults(run=_unavailable(info.name, err))
    return parser


def _unavailable(name: str, err: Exception) -> Callable[..., Awaitable[int]]:
    async def run(ctx: Context, args: argparse.Namespace) -> int:
        raise UsageError(f"subcommand {name} cannot be loaded: {type(err).__name__}: {err}")

    return run


async def _run(args: argparse.Namespace) -> int:
    ctx = Context(addr=args.addr, timeout=args.timeout)
    try:
        result: int = await args.run(ctx, args)
        return result
    finally:
        await ctx.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except UsageError as err:
        print(f"kata-agent-ctl: {err}", file=sys.stderr)
        return 2
    except RpcError as err:
        print(f"kata-agent-ctl: {err}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError, ValueError) as err:
        what = str(err) or type(err).__name__
        print(f"kata-agent-ctl: {args.addr}: {what}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
