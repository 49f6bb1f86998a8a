"""Agent policy: a Rego decision before each AgentService request, as Kata's policy-enabled agent.

``serialize``: requests as the Rust agent shows them to its policy (the policy input);
``engine``: a compiled policy and its data, evaluated with regopy (rego-cpp), the optional extra
``kata-agent-py[policy]``; ``point``: the decisions, SetPolicy and the policy state;
``guard``: the decision in the RPC dispatch path. Without a policy file and a SetPolicy there is
no engine in the agent at all (regopy is never imported) and no request is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.policy.point import PolicyPoint
    from agent.rpc.dispatch import Dispatcher


async def start(dispatcher: Dispatcher, policy_file: Path) -> PolicyPoint:
    """The agent's policy point, with the default policy file loaded if there is one; once there
    is a policy (now or after a SetPolicy) the dispatcher's AgentService methods decide first."""
    from agent.policy.guard import guarded
    from agent.policy.point import PolicyPoint
    from agent.rpc.dispatch import AGENT_SERVICE

    def activate() -> None:
        dispatcher.guard(AGENT_SERVICE, lambda bound: guarded(point, bound))

    point = PolicyPoint(on_active=activate)
    await point.load_default(policy_file)
    return point
