"""``python -I -m agent.policy.check < policy.rego``: compile a policy in a process of its own.

rego-cpp can crash the process it runs in on some invalid policies (seen: a function defined with
two arities crashes ``build``), and a crash of the agent, PID 1 of the guest, ends the VM. So a
policy text from outside (SetPolicy, ``kata-agent-ctl policy eval``) is compiled here first,
exactly as the agent will (every request type's entrypoint, the plan analysis, the constant
answers); only a text that compiled here is compiled in the agent. ``make image`` checks the
image's default policy file the same way.

Exit status 0: the policy compiles. 1: it does not; stdout has the engine's message. Killed by a
signal: the engine crashed on it.
"""

from __future__ import annotations

import sys

TIMEOUT = 120.0  # seconds; a policy of the maximum size takes a few here


def main() -> int:
    from agent.errors import InvalidArgument, Unimplemented
    from agent.policy.engine import CompiledPolicy, check_size
    from agent.policy.point import INITIAL_DATA, request_types

    text = sys.stdin.read()
    try:
        check_size(text)
        CompiledPolicy(text, INITIAL_DATA, request_types())
    except (InvalidArgument, Unimplemented) as err:
        print(err.message)
        return 1
    return 0


def command() -> list[str]:
    return [sys.executable, "-I", "-m", "agent.policy.check"]


def verdict(returncode: int, stdout: bytes) -> str | None:
    """None when the policy compiled; else why not, for an INVALID_ARGUMENT message."""
    if returncode == 0:
        return None
    if returncode < 0:
        return f"invalid policy: the policy engine crashed compiling it (signal {-returncode})"
    return stdout.decode(errors="replace").strip() or f"the check exited with {returncode}"


if __name__ == "__main__":
    sys.exit(main())
