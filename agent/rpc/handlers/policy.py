"""grpc.AgentService SetPolicy: replace the agent policy (``services.policy``, agent.policy)."""

from __future__ import annotations

from google.protobuf import empty_pb2

from agent.rpc.handlers import HandlerBase
from agent.rpc.pb import agent_pb2


class PolicyHandlers(HandlerBase):
    async def SetPolicy(self, req: agent_pb2.SetPolicyRequest) -> empty_pb2.Empty:
        await self.services.policy.set_policy(req.policy)
        return empty_pb2.Empty()
