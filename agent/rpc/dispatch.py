"""The method table: every method of the compiled service descriptors, bound to servicers.

The table is built from ``agent_pb2``/``health_pb2`` descriptors, not from the servicer, so every
contract method is registered. A method the servicer does not define answers UNIMPLEMENTED with a
message naming it. The same table serves ttrpc (``agent.rpc.server``) and gRPC
(``agent.rpc.grpc_server``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import message as pb_message
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from agent.rpc.status import Code, RpcError

Handler = Callable[[Any], Awaitable[pb_message.Message]]

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    request_type: type[pb_message.Message]
    response_type: type[pb_message.Message]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class Bound:
    method: Method
    handler: Handler | None  # None: declared by the contract, not implemented by the servicer


def _service_methods(service: ServiceDescriptor) -> list[Method]:
    return [
        Method(
            service.full_name,
            m.name,
            message_factory.GetMessageClass(m.input_type),
            message_factory.GetMessageClass(m.output_type),
        )
        for m in service.methods
    ]


def contract_files() -> tuple[FileDescriptor, ...]:
    from agent.rpc.pb import agent_pb2, health_pb2

    return (agent_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR)


def contract_methods() -> dict[str, dict[str, Method]]:
    """service full name -> method name -> Method, for every service of the contract."""
    table: dict[str, dict[str, Method]] = {}
    for file in contract_files():
        for service in file.services_by_name.values():
            table[service.full_name] = {m.name: m for m in _service_methods(service)}
    return table


class Dispatcher:
    """Resolves (service, method) to a bound handler; built once at start-up."""

    def __init__(self, servicers: Mapping[str, object]) -> None:
        self.methods = contract_methods()
        unknown = set(servicers) - set(self.methods)
        if unknown:
            raise ValueError(f"servicers for services not in the contract: {sorted(unknown)}")
        self._table: dict[str, dict[str, Bound]] = {}
        for service, methods in self.methods.items():
            servicer = servicers.get(service)
            bound: dict[str, Bound] = {}
            for name, method in methods.items():
                handler = getattr(servicer, name, None) if servicer is not None else None
                if handler is not None and not inspect.iscoroutinefunction(handler):
                    raise TypeError(f"{method.path}: handler must be an async method")
                bound[name] = Bound(method, handler)
            self._table[service] = bound

    def lookup(self, service: str, method: str) -> Bound:
        """The bound method, or RpcError with the status the agent answers (ttrpc-rust codes:
        unknown service INVALID_ARGUMENT, unknown method UNIMPLEMENTED)."""
        methods = self._table.get(service)
        if methods is None:
            raise RpcError(Code.INVALID_ARGUMENT, f"{service} service does not exist")
        bound = methods.get(method)
        if bound is None:
            raise RpcError(Code.UNIMPLEMENTED, f"{method} method does not exist in {service}")
        return bound

    def bound_methods(self) -> list[Bound]:
        return [b for methods in self._table.values() for b in methods.values()]

    @staticmethod
    def unimplemented(method: Method) -> RpcError:
        return RpcError(Code.UNIMPLEMENTED, f"{method.path} is not implemented by this agent")
