"""The method table: every method of the compiled service descriptors, bound to servicers.

The table is built from ``agent_pb2``/``health_pb2`` descriptors, not from the servicer, so every
contract method is registered. A method the servicer does not define answers UNIMPLEMENTED with a
message naming it. The same table serves ttrpc (``agent.rpc.server``) and gRPC
(``agent.rpc.grpc_server``).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message as pb_message
from google.protobuf import message_factory
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

from agent.rpc.encoded import PreEncoded
from agent.rpc.status import Code, RpcError

# A handler returns its response message, or its serialized form (agent.rpc.encoded).
Handler = Callable[[Any], Awaitable["pb_message.Message | PreEncoded[Any]"]]
# The optional synchronous variant of a handler, ``try_<Method>``: the response when it can answer
# at once, ``None`` (having changed nothing) when the call has to wait, i.e. take the async
# handler. The ttrpc server then answers without a task (agent.rpc.server). It must not await, set
# context variables or need a current task.
NowHandler = Callable[[Any], "pb_message.Message | PreEncoded[Any] | None"]
NOW_PREFIX = "try_"

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"
HYPERVISOR_SERVICE = "hypervisor.Hypervisor"  # Kata's remote hypervisor (kata-agent-hv, hv/)


@dataclass(frozen=True, slots=True)
class Method:
    service: str
    name: str
    request_type: type[pb_message.Message]
    response_type: type[pb_message.Message]
    path: str = field(init=False)  # "/service/Method", built once (every call uses it)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", f"/{self.service}/{self.name}")


@dataclass(frozen=True, slots=True)
class Bound:
    method: Method
    handler: Handler | None  # None: declared by the contract, not implemented by the servicer
    now: NowHandler | None = None  # the handler's synchronous variant, if it has one


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


# service full name -> the generated module that defines it: the agent's contract
SERVICE_MODULES = {
    AGENT_SERVICE: "agent.rpc.pb.agent_pb2",
    HEALTH_SERVICE: "agent.rpc.pb.health_pb2",
}
# The project's other ttrpc services (not served by the agent).
OTHER_SERVICE_MODULES = {
    HYPERVISOR_SERVICE: "agent.rpc.pb.hypervisor_pb2",
}


def contract_files() -> tuple[FileDescriptor, ...]:
    # agent_pb2 is the AgentService area's: not imported before that service is asked for.
    from agent.rpc.pb import agent_pb2, health_pb2

    return (agent_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR)


def service_methods(service: str) -> dict[str, Method]:
    """The methods of one known service (imports only that service's generated module)."""
    module = importlib.import_module(SERVICE_MODULES.get(service) or OTHER_SERVICE_MODULES[service])
    descriptor = module.DESCRIPTOR.services_by_name[service.rpartition(".")[2]]
    return {m.name: m for m in _service_methods(descriptor)}


def contract_methods() -> dict[str, dict[str, Method]]:
    """service full name -> method name -> Method, for every service of the contract."""
    return {service: service_methods(service) for service in SERVICE_MODULES}


class Dispatcher:
    """Resolves (service, method) to a bound handler.

    ``deferred`` services are known to exist but their servicer arrives later (``add``): the agent
    answers Health.Check while the AgentService stack is still being imported. Calls to a deferred
    service wait (``wait_ready``) under the call's own deadline. ``services`` are the services
    served (by default the agent's contract; kata-agent-hv serves ``HYPERVISOR_SERVICE``).
    """

    def __init__(
        self,
        servicers: Mapping[str, object],
        *,
        deferred: Iterable[str] = (),
        services: Iterable[str] = tuple(SERVICE_MODULES),
    ) -> None:
        services = tuple(services)
        unknown = set(services) - SERVICE_MODULES.keys() - OTHER_SERVICE_MODULES.keys()
        if unknown:
            raise ValueError(f"no generated module defines the services {sorted(unknown)}")
        unknown = (set(servicers) | set(deferred)) - set(services)
        if unknown:
            raise ValueError(f"servicers for services not served: {sorted(unknown)}")
        self._table: dict[str, dict[str, Bound]] = {}
        self._now: dict[str, dict[str, Bound]] = {}  # the bound methods with a ``now`` variant
        self._servicers: dict[str, object | None] = {}
        self._guards: dict[str, Callable[[Bound], Bound]] = {}
        self._deferred = set(deferred) - set(servicers)
        self._ready: asyncio.Event | None = None
        for service in services:
            if service not in self._deferred:
                self._bind(service, servicers.get(service))

    def _bind(self, service: str, servicer: object | None) -> None:
        self._servicers[service] = servicer
        guard = self._guards.get(service)
        bound: dict[str, Bound] = {}
        for name, method in service_methods(service).items():
            handler = getattr(servicer, name, None) if servicer is not None else None
            if handler is not None and not inspect.iscoroutinefunction(handler):
                raise TypeError(f"{method.path}: handler must be an async method")
            now = getattr(servicer, NOW_PREFIX + name, None) if handler is not None else None
            if now is not None and inspect.iscoroutinefunction(now):
                raise TypeError(f"{method.path}: {NOW_PREFIX}{name} must not be async")
            bound[name] = Bound(method, handler, now)
            if guard is not None and handler is not None:
                bound[name] = guard(bound[name])
        self._table[service] = bound
        self._now[service] = {name: b for name, b in bound.items() if b.now is not None}

    def add(self, service: str, servicer: object) -> None:
        """Bind a deferred service; waiting calls proceed."""
        if service not in self._deferred:
            raise ValueError(f"{service} is not waiting for a servicer")
        self._bind(service, servicer)
        self._deferred.discard(service)
        if not self._deferred and self._ready is not None:
            self._ready.set()

    def guard(self, service: str, guard: Callable[[Bound], Bound]) -> None:
        """Bind every implemented method of ``service`` through ``guard`` from now on (the agent
        policy, ``agent.policy.guard``; a deferred service is guarded when it is added)."""
        self._guards[service] = guard
        if service in self._servicers:
            self._bind(service, self._servicers[service])

    @property
    def ready(self) -> bool:
        return not self._deferred

    async def wait_ready(self) -> None:
        if self._deferred:
            if self._ready is None:
                self._ready = asyncio.Event()
            await self._ready.wait()

    def is_deferred(self, service: str) -> bool:
        return service in self._deferred

    def lookup(self, service: str, method: str) -> Bound:
        """The bound method, or RpcError with the status the agent answers (ttrpc-rust codes:
        unknown service INVALID_ARGUMENT, unknown method UNIMPLEMENTED). A deferred service must
        be awaited first (``is_deferred`` / ``wait_ready``)."""
        methods = self._table.get(service)
        if methods is None:
            raise RpcError(Code.INVALID_ARGUMENT, f"{service} service does not exist")
        bound = methods.get(method)
        if bound is None:
            raise RpcError(Code.UNIMPLEMENTED, f"{method} method does not exist in {service}")
        return bound

    def now_bound(self, service: str, method: str) -> Bound | None:
        """The bound method if it has a synchronous variant (``Bound.now``), else None (also for
        unknown and deferred services: the async path answers those)."""
        methods = self._now.get(service)
        return methods.get(method) if methods else None

    def bound_methods(self) -> list[Bound]:
        return [b for methods in self._table.values() for b in methods.values()]

    @staticmethod
    def unimplemented(method: Method) -> RpcError:
        return RpcError(Code.UNIMPLEMENTED, f"{method.path} is not implemented by this agent")
