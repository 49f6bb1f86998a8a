"""Domain errors -> wire status codes: the one place that knows the mapping.

Services raise ``agent.errors.AgentError`` subclasses; the ttrpc server and the gRPC adapter call
``to_status`` on whatever a handler raised. ``RpcError`` is for the RPC layer's own failures (bad
frames, unknown methods, deadlines) and for clients: it carries the code and the message as the
peer sent them, and ``str()`` reads like Go's ``rpc error: code = NotFound desc = ...``.
"""

from __future__ import annotations

import enum
import logging

from agent import errors

log = logging.getLogger(__name__)


class Code(enum.IntEnum):
    """google.rpc.Code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def go_name(self) -> str:
        """The name Go's grpc codes print (``NotFound``, ``DeadlineExceeded``)."""
        return "".join(p.capitalize() for p in self.name.split("_")).replace("Ok", "OK")


ERROR_CODES: dict[type[errors.AgentError], Code] = {
    errors.InvalidArgument: Code.INVALID_ARGUMENT,
    errors.NotFound: Code.NOT_FOUND,
    errors.AlreadyExists: Code.ALREADY_EXISTS,
    errors.FailedPrecondition: Code.FAILED_PRECONDITION,
    errors.Unavailable: Code.UNAVAILABLE,
    errors.DeadlineExceeded: Code.DEADLINE_EXCEEDED,
    errors.Unimplemented: Code.UNIMPLEMENTED,
    errors.PermissionDenied: Code.PERMISSION_DENIED,
    errors.ResourceExhausted: Code.RESOURCE_EXHAUSTED,
    errors.Internal: Code.INTERNAL,
}


class RpcError(Exception):
    """A call failed with a status (raised by the RPC layer and by the client)."""

    def __init__(self, code: int, message: str) -> None:
        try:
            self.code: Code | int = Code(code)
        except ValueError:
            self.code = code
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        name = self.code.go_name if isinstance(self.code, Code) else f"Code({self.code})"
        return f"rpc error: code = {name} desc = {self.message}"


def code_for(error: errors.AgentError) -> Code:
    for cls in type(error).__mro__:
        code = ERROR_CODES.get(cls)
        if code is not None:
            return code
    return Code.INTERNAL


def to_status(exc: BaseException, path: str) -> tuple[Code, str]:
    """(code, message) for an exception raised while serving ``path`` (``/svc/Method``).
    Unexpected exceptions are logged once here, with the traceback."""
    if isinstance(exc, RpcError):
        return Code(exc.code) if isinstance(exc.code, Code) else Code.UNKNOWN, exc.message
    if isinstance(exc, errors.AgentError):
        return code_for(exc), exc.message
    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED, f"{path}: timed out"
    log.error(
        "unexpected error in handler",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"path": path},
    )
    return Code.INTERNAL, f"{path}: internal error: {type(exc).__name__}: {exc}"
