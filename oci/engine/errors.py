"""Engine errors, by meaning. The agent maps them to its own domain errors (oci never imports
agent); kata-oci prints them the way runc does."""

from __future__ import annotations

import os


class EngineError(Exception):
    """Base class; ``str(err)`` is a message a person can act on."""


class ContainerNotFound(EngineError):
    def __init__(self, container_id: str) -> None:
        super().__init__("container does not exist")
        self.container_id = container_id


class ContainerExists(EngineError):
    def __init__(self, container_id: str) -> None:
        super().__init__("container with given ID already exists")
        self.container_id = container_id


class InvalidArgument(EngineError):
    """Bad input: an invalid bundle/spec, an unknown capability or syscall name, ..."""


class InvalidState(EngineError):
    """The operation is not allowed in the container's current status."""


class InitError(EngineError):
    """Container set-up failed inside the init process (or in its parent on its behalf).

    ``step`` names the set-up step, ``path`` the object (may be None) and ``errno`` the error
    number (0 when the failure was not a system call)."""

    def __init__(self, step: str, message: str, errno: int = 0, path: str | None = None) -> None:
        self.step = step
        self.errno = errno
        self.path = path
        self.detail = message
        text = f"{step}: {message}"
        if path and path not in message:
            text = f"{step} {path}: {message}"
        if errno and os.strerror(errno) not in text:
            text += f": {os.strerror(errno)}"
        super().__init__(text)


class HookError(EngineError):
    """An OCI hook failed or timed out (``errno``: why it could not be started, else 0)."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
