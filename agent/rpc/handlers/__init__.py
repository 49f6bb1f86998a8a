"""RPC handler mixins, one module per area, composed into `AgentServicer`.

A handler is `async def <Method>(self, req: <Request>) -> <Response>` named exactly as the
contract's method. It converts the request, calls `self.services.<area>`, converts the result.
No business logic here; errors are `agent.errors.AgentError` subclasses raised by the services and
translated by `agent.rpc.status`. A method not defined on the servicer answers UNIMPLEMENTED.
"""

from __future__ import annotations

from agent.services import Services


class HandlerBase:
    services: Services
