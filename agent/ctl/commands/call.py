"""``call METHOD --json '{...}'``: any method of the contract, request as protobuf JSON.

METHOD is ``CreateContainer`` (grpc.AgentService), ``Health.Check`` / ``grpc.Health/Check``, or a
full path ``/grpc.AgentService/CreateContainer``. ``--json -`` reads the request from stdin.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from google.protobuf import json_format

from agent.ctl.context import Context, UsageError, add_parser
from agent.rpc.dispatch import contract_methods


def register(sub: Any) -> None:
    p = add_parser(sub, "call", help="call any contract method with a JSON request")
    p.add_argument("method", help="e.g. GetGuestDetails, Health.Check, /grpc.Health/Version")
    p.add_argument("--json", default="{}", help="the request as protobuf JSON ('-' = stdin)")
    p.add_argument("--list", action="store_true", help="list the methods instead of calling")
    p.set_defaults(run=run)


def resolve(name: str, services: dict[str, Any]) -> tuple[str, str]:
    text = name.strip("/")
    for sep in ("/", "."):
        service, found, method = text.rpartition(sep)
        if found and service:
            full = service if service.startswith("grpc.") else f"grpc.{service}"
            if full in services and method in services[full]:
                return full, method
    matches = [(s, text) for s, methods in services.items() if text in methods]
    if len(matches) == 1:
        return matches[0]
    raise UsageError(f"unknown method {name!r}; `kata-agent-ctl call --list x` lists them")


async def run(ctx: Context, args: argparse.Namespace) -> int:
    services = contract_methods()
    if args.list:
        for methods in services.values():
            for method in methods.values():
                ctx.out.write(
                    f"{method.path} {method.request_type.DESCRIPTOR.full_name} -> "
                    f"{method.response_type.DESCRIPTOR.full_name}\n"
                )
        return 0
    service, name = resolve(args.method, services)
    method = services[service][name]
    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        request = json_format.Parse(text, method.request_type())
    except json_format.ParseError as err:
        raise UsageError(
            f"--json is not a valid {method.request_type.DESCRIPTOR.full_name}: {err}"
        ) from None
    client = await ctx.client()
    ctx.print_message(await client.call(service, name, request, timeout=ctx.timeout))
    return 0
