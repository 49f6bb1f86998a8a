"""The policy decision in the RPC dispatch path: every implemented AgentService method, bound in
``agent.rpc.dispatch``, is wrapped so the policy decides first (``agent.policy.point``).

Installed only once the agent has a policy (``Dispatcher.guard``): without one, the methods are
bound as they are and a call pays nothing. Both paths of a call are covered: the async handler
(ttrpc tasks and gRPC) and its synchronous variant, the ttrpc server's answer-at-once path for
ReadStdout/ReadStderr, which decides at once too or defers to the async handler. Left as they
are: SetPolicy, which decides about itself (``PolicyPoint.set_policy``), and the mem-agent
settings, which the Rust agent does not ask its policy about either.
"""

from __future__ import annotations

from typing import Any

from agent.policy.point import PolicyPoint
from agent.rpc.dispatch import Bound, NowHandler

UNGUARDED = frozenset({"SetPolicy", "MemAgentMemcgSet", "MemAgentCompactSet"})


def guarded(point: PolicyPoint, bound: Bound) -> Bound:
    method = bound.method
    handler = bound.handler
    if handler is None or method.name in UNGUARDED:
        return bound
    name = method.request_type.DESCRIPTOR.name

    async def checked(req: Any) -> Any:
        admission = await point.admit(name, req)
        if admission is None:
            return await handler(req)
        try:
            resp = await handler(req)
        except BaseException:
            admission.release()
            raise
        await admission.commit()
        return resp

    now = bound.now
    checked_now: NowHandler | None = None
    if now is not None:

        def checked_now(req: Any) -> Any:
            if not point.admit_now(name, req):
                return None  # decided on the async path (it holds the state lock)
            return now(req)

    checked.__name__ = checked.__qualname__ = method.name
    return Bound(method, checked, checked_now)
