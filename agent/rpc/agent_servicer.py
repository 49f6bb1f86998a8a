"""grpc.AgentService: the handler mixins of every area, composed."""

from __future__ import annotations

from agent.rpc.handlers import HandlerBase
from agent.rpc.handlers.containers import ContainerHandlers
from agent.rpc.handlers.guest import GuestHandlers
from agent.rpc.handlers.network import NetworkHandlers
from agent.rpc.handlers.policy import PolicyHandlers
from agent.rpc.handlers.storage import StorageHandlers
from agent.services import Services


class AgentServicer(
    ContainerHandlers, GuestHandlers, StorageHandlers, NetworkHandlers, PolicyHandlers, HandlerBase
):
    """Add each area's mixin to the bases (before HandlerBase) when it exists."""

    def __init__(self, services: Services) -> None:
        self.services = services
