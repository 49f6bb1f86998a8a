"""The agent's in-memory model of the sandbox: containers, processes, their stdio and statuses.

State objects own their invariants (style guideline 9): `Sandbox` (registry, sandbox-wide state,
OOM queue), `ContainerEntry` (status machine in `status`, processes by exec id), `ProcessEntry`
(pid, exit, stdio), `stdio` (pipes/ptys and the long-poll read rules). No RPC types here.
"""

from agent.sandbox.container import ContainerEntry
from agent.sandbox.oom import OomEvents
from agent.sandbox.process import ESRCH_TEXT, ProcessEntry
from agent.sandbox.sandbox import (
    GuestHooks,
    Sandbox,
    SandboxState,
    validate_container_id,
    validate_exec_id,
)
from agent.sandbox.status import ContainerStatus
from agent.sandbox.stdio import ChildStdio, InputStream, OutputStream, ProcessIO

__all__ = [
    "ESRCH_TEXT",
    "ChildStdio",
    "ContainerEntry",
    "ContainerStatus",
    "GuestHooks",
    "InputStream",
    "OomEvents",
    "OutputStream",
    "ProcessEntry",
    "ProcessIO",
    "Sandbox",
    "SandboxState",
    "validate_container_id",
    "validate_exec_id",
]
