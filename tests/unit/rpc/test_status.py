"""agent.rpc.status: domain errors -> wire codes, in one table."""

from __future__ import annotations

import pytest

from agent import errors
from agent.rpc.status import Code, RpcError, code_for, to_status


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument, Code.INVALID_ARGUMENT),
        (errors.NotFound, Code.NOT_FOUND),
        (errors.AlreadyExists, Code.ALREADY_EXISTS),
        (errors.FailedPrecondition, Code.FAILED_PRECONDITION),
        (errors.Unavailable, Code.UNAVAILABLE),
        (errors.DeadlineExceeded, Code.DEADLINE_EXCEEDED),
        (errors.Unimplemented, Code.UNIMPLEMENTED),
        (errors.PermissionDenied, Code.PERMISSION_DENIED),
        (errors.ResourceExhausted, Code.RESOURCE_EXHAUSTED),
        (errors.Internal, Code.INTERNAL),
        (errors.AgentError, Code.INTERNAL),
    ],
)
def test_every_domain_error_has_its_code(error: type[errors.AgentError], code: Code) -> None:
    assert code_for(error("x")) == code
    assert to_status(error("Invalid container id"), "/p") == (code, "Invalid container id")


def test_subclass_of_a_domain_error_inherits_its_code() -> None:
    class SpawnFailed(errors.Internal):
        pass

    class NoExec(errors.NotFound):
        pass

    assert code_for(SpawnFailed("x")) == Code.INTERNAL
    assert code_for(NoExec("x")) == Code.NOT_FOUND


def test_unexpected_exception_is_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    code, message = to_status(ZeroDivisionError("division by zero"), "/grpc.AgentService/X")
    assert code == Code.INTERNAL
    assert message == "/grpc.AgentService/X: internal error: ZeroDivisionError: division by zero"
    assert any(r.exc_info for r in caplog.records)


def test_rpc_error_reads_like_go() -> None:
    err = RpcError(5, "Invalid container id")
    assert str(err) == "rpc error: code = NotFound desc = Invalid container id"
    assert str(RpcError(4, "t")) == "rpc error: code = DeadlineExceeded desc = t"
    assert str(RpcError(99, "t")) == "rpc error: code = Code(99) desc = t"
