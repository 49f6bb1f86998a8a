"""Domain errors of the agent, named by meaning.

Services raise these; exactly one place, `agent.rpc.status`, turns them into wire status codes
(ttrpc and gRPC alike). OS errors are turned into these at the syscall edge, with a message that
names the object and the step ("mount /dev/vdb on /run/...: EBUSY"). The message is what a user
reads in `rpc error: code = ... desc = <message>`; several texts are relied upon by the Kata shim
(see docs: "Link not found", "ESRCH: No such process", "Invalid container id").
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class; maps to INTERNAL unless a subclass says otherwise."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(AgentError):
    """The request is malformed (bad id, missing sub-message, unparsable value)."""


class NotFound(AgentError):
    """The named object (process, exec id, device, link) does not exist."""


class AlreadyExists(AgentError):
    """An object with that identity exists already."""


class FailedPrecondition(AgentError):
    """The object is in a state that does not allow the operation."""


class Unavailable(AgentError):
    """The operation cannot be served now or on this object (e.g. resize of a non-tty)."""


class DeadlineExceeded(AgentError):
    """A wait on the outside world (uevent, hook, child) timed out."""


class Unimplemented(AgentError):
    """The method or feature is not implemented by this agent."""


class PermissionDenied(AgentError):
    """Refused by policy or confinement (e.g. a path outside the allowed directories)."""


class ResourceExhausted(AgentError):
    """A size or count limit was hit."""


class Internal(AgentError):
    """A failure of the operation itself (mount failed, engine failed, ...)."""
