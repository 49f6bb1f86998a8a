"""``policy set FILE`` and ``policy eval FILE METHOD --json '{...}'``: tools for policy authors.

``set`` sends FILE to the agent with SetPolicy. ``eval`` needs no agent: it compiles FILE with the
agent's own code (``agent.policy``) and decides one request exactly as the agent would, with the
same policy input (``--show-input`` prints it). The request is given in that policy-input form, as
Kata's policy test cases and the agent's debug log show requests (missing keys take their
defaults, unknown keys are reported and skipped), or as protobuf JSON with ``--proto-json``.
``--state`` gives the policy state (``data.pstate``) a request is decided against.

Exit status of ``eval``: 0 allowed, 1 denied, 2 bad input (policy, method or request).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.ctl.context import Context, UsageError, add_parser


def register(sub: Any) -> None:
    p = add_parser(sub, "policy", help="set an agent policy, or evaluate one without an agent")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)

    s = actions.add_parser("set", help="replace the agent's policy (SetPolicy)")
    s.add_argument("file", type=Path, help="the Rego policy")
    s.set_defaults(run=run_set)

    e = actions.add_parser("eval", help="decide one request with a policy, without an agent")
    e.add_argument("file", type=Path, help="the Rego policy")
    e.add_argument("method", help="e.g. CreateContainer, ExecProcess, ReadStdout")
    e.add_argument("--json", default="{}", help="the request ('-' = stdin)")
    e.add_argument(
        "--proto-json", action="store_true", help="the request is protobuf JSON (as for `call`)"
    )
    e.add_argument("--state", default="{}", help="the policy state, data.pstate (JSON)")
    e.add_argument("--show-input", action="store_true", help="also print the policy input")
    e.set_defaults(run=run_eval)


def _read_policy(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: {err}") from None


async def run_set(ctx: Context, args: argparse.Namespace) -> int:
    from agent.rpc.pb import agent_pb2

    client = await ctx.client()
    await client.agent.SetPolicy(
        agent_pb2.SetPolicyRequest(policy=_read_policy(args.file)), timeout=ctx.timeout
    )
    print(f"policy set: {args.file}", file=ctx.out)
    return 0


def _method(name: str) -> Any:
    from agent.ctl.commands.call import resolve
    from agent.rpc.dispatch import AGENT_SERVICE, service_methods

    methods = service_methods(AGENT_SERVICE)
    by_type = {m.request_type.DESCRIPTOR.name: m for m in methods.values()}
    if name in by_type:
        return by_type[name]
    _, method = resolve(name, {AGENT_SERVICE: methods})
    return methods[method]


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as err:
        raise UsageError(f"{what} is not valid JSON: {err}") from None


def _compiles_apart(text: str) -> None:
    """As the agent does: a text the engine crashes on must not crash this tool either."""
    import subprocess

    from agent.errors import InvalidArgument
    from agent.policy import check

    done = subprocess.run(
        check.command(),
        input=text.encode(),
        capture_output=True,
        timeout=check.TIMEOUT,
        check=False,
    )
    reason = check.verdict(done.returncode, done.stdout)
    if reason is not None:
        raise InvalidArgument(reason)


async def run_eval(ctx: Context, args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from agent.errors import InvalidArgument, Unimplemented
    from agent.policy.engine import CompiledPolicy, check_size
    from agent.policy.point import PolicyPoint
    from agent.policy.serialize import request_from_input, request_input

    method = _method(args.method)
    name = method.request_type.DESCRIPTOR.name
    text = sys.stdin.read() if args.json == "-" else args.json
    ignored: list[str] = []
    try:
        if args.proto_json:
            request = json_format.Parse(text, method.request_type())
        else:
            obj = _load_json(text, "--json")
            request = request_from_input(method.request_type, obj, ignored=ignored)
    except (json_format.ParseError, InvalidArgument) as err:
        raise UsageError(f"--json is not a valid {name}: {err}") from None
    state = _load_json(args.state, "--state")
    policy_text = _read_policy(args.file)
    point = PolicyPoint()
    try:
        check_size(policy_text)
        _compiles_apart(policy_text)
        point.install(
            CompiledPolicy(policy_text, {"pstate": state}, point.entrypoints()),
            source=str(args.file),
        )
        decision = point.decide(name, request)
    except (InvalidArgument, Unimplemented) as err:
        raise UsageError(f"{args.file}: {err}") from None
    answer = decision.answer
    result: dict[str, Any] = {
        "request": name,
        "allowed": decision.allowed,
        "defined": answer.defined,
        "ops": list(answer.ops),
        "prints": answer.prints,
    }
    if answer.error:
        result["error"] = answer.error
    if not decision.allowed:
        result["message"] = decision.message
    if ignored:
        result["ignored_keys"] = ignored
    if args.show_input:
        result["input"] = request_input(request)
    ctx.print_json(result)
    return 0 if decision.allowed else 1
