"""Agent policy: a Rego decision before each AgentService request, as Kata's policy-enabled agent.

``serialize``: requests as the Rust agent shows them to its policy (the policy input);
``engine``: a compiled policy and its data, evaluated with regopy (rego-cpp), the optional extra
``kata-agent-py[policy]``; ``point``: the decisions, SetPolicy and the policy state;
``guard``: the decision in the RPC dispatch path. Without a policy file and a SetPolicy nothing
of this is imported (idle RSS) and no request is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.rpc.dispatch import Dispatcher
    from agent.services import Services


async def start(services: Services, dispatcher: Dispatcher, policy_file: Path) -> None:
    """Make ``services.policy`` (the policy point), loading the default policy file now if there
    is one, else on the first SetPolicy; once there is a policy the dispatcher's AgentService
    methods decide first."""
    import asyncio

    def build() -> None:
        from agent.policy.guard import guarded
        from agent.policy.point import PolicyPoint
        from agent.rpc.dispatch import AGENT_SERVICE

        def activate() -> None:
            dispatcher.guard(AGENT_SERVICE, lambda bound: guarded(point, bound))

        services.policy = point = PolicyPoint(on_active=activate)

    services.lazy(("policy",), ("agent.policy.point", "agent.policy.guard"), build)
    if await asyncio.to_thread(policy_file.exists):
        await services.policy.load_default(policy_file)
