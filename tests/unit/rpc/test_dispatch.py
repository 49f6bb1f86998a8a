"""agent.rpc.dispatch: every contract method is registered, whatever the servicer defines."""

from __future__ import annotations

import pytest

from agent.rpc.dispatch import Dispatcher, contract_methods
from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.status import Code, RpcError


class Partial:
    async def GetGuestDetails(
        self, req: agent_pb2.GuestDetailsRequest
    ) -> agent_pb2.GuestDetailsResponse:
        return agent_pb2.GuestDetailsResponse()


def test_contract_has_all_agent_methods() -> None:
    methods = contract_methods()
    assert set(methods) == {"grpc.AgentService", "grpc.Health"}
    assert len(methods["grpc.AgentService"]) == 42
    assert set(methods["grpc.Health"]) == {"Check", "Version"}
    check = methods["grpc.Health"]["Check"]
    assert check.request_type is health_pb2.CheckRequest
    assert check.response_type is health_pb2.HealthCheckResponse
    assert check.path == "/grpc.Health/Check"


def test_every_method_bound_and_missing_ones_unimplemented() -> None:
    d = Dispatcher({"grpc.AgentService": Partial()})
    bound = d.bound_methods()
    assert len(bound) == 44
    assert d.lookup("grpc.AgentService", "GetGuestDetails").handler is not None
    create = d.lookup("grpc.AgentService", "CreateContainer")
    assert create.handler is None
    err = Dispatcher.unimplemented(create.method)
    assert err.code == Code.UNIMPLEMENTED
    assert err.message == "/grpc.AgentService/CreateContainer is not implemented by this agent"
    assert d.lookup("grpc.Health", "Check").handler is None


def test_unknown_service_and_method() -> None:
    d = Dispatcher({})
    with pytest.raises(RpcError) as info:
        d.lookup("grpc.Nope", "Check")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message == "grpc.Nope service does not exist"
    with pytest.raises(RpcError) as info:
        d.lookup("grpc.Health", "Nope")
    assert info.value.code == Code.UNIMPLEMENTED
    assert "Nope" in info.value.message


def test_sync_handler_rejected_at_build_time() -> None:
    class Bad:
        def Check(self, req: object) -> object:
            return req

    with pytest.raises(TypeError, match=r"/grpc.Health/Check: handler must be an async method"):
        Dispatcher({"grpc.Health": Bad()})


def test_servicer_for_unknown_service_rejected() -> None:
    with pytest.raises(ValueError, match=r"grpc\.Other"):
        Dispatcher({"grpc.Other": Partial()})
