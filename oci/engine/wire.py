"""The spawner's protocol, shared by its server (``oci.engine.spawner``) and its client
(``oci.engine.client``): how the spawner is started, a process plan and an engine error as JSON
data.

Each request is one SOCK_SEQPACKET message, a JSON object ``{"op", "id", "root", ...}``, whose
SCM_RIGHTS fds are the reply socket and then the process's stdio; the reply is one message
``{"ok": true, ...}`` or ``{"ok": false, "error": <class>, "msg", "step", "errno", "path"}``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from oci.syscalls.api import CapabilitySets

from .errors import (
    ContainerExists,
    ContainerNotFound,
    EngineError,
    HookError,
    InitError,
    InvalidArgument,
    InvalidState,
)
from .process import ProcessPlan

MAX_FDS = 8

_ERRORS: dict[str, type[EngineError]] = {
    c.__name__: c
    for c in (
        ContainerExists,
        ContainerNotFound,
        EngineError,
        HookError,
        InvalidArgument,
        InvalidState,
    )
}


def spawner_argv(fd: int) -> list[str]:
    """argv to start the spawner with its socket on ``fd`` (same interpreter, isolated mode)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        f"import sys; sys.path.insert(0, {root!r}); from oci.engine.spawner import main; main({fd})"
    )
    return [sys.executable, "-I", "-c", code]


def plan_to_wire(plan: ProcessPlan) -> dict[str, Any]:
    """A ``ProcessPlan`` without a seccomp profile as JSON-able data (``plan_from_wire``)."""
    if plan.seccomp is not None:
        raise InvalidArgument("exec: a process plan on the wire carries no seccomp profile")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(plan):
        value = getattr(plan, f.name)
        if f.name == "caps" and value is not None:
            value = {c.name: sorted(getattr(value, c.name)) for c in dataclasses.fields(value)}
        out[f.name] = value
    return out


def plan_from_wire(data: dict[str, Any]) -> ProcessPlan:
    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    fields = {k: tup(v) for k, v in data.items()}
    caps = fields.get("caps")
    if caps is not None:
        fields["caps"] = CapabilitySets(**{k: frozenset(v) for k, v in caps.items()})
    return ProcessPlan(**fields)


def error_to_wire(err: Exception) -> dict[str, Any]:
    """A failed request's reply."""
    if not isinstance(err, EngineError):
        return {"ok": False, "error": "EngineError", "msg": f"{type(err).__name__}: {err}"}
    out: dict[str, Any] = {"ok": False, "error": type(err).__name__, "msg": str(err)}
    if isinstance(err, InitError):
        out.update(step=err.step, errno=err.errno, path=err.path, detail=err.detail)
    return out


def error_from_wire(reply: dict[str, Any], container_id: str) -> EngineError:
    """The engine error a failed reply stands for (the same class and message)."""
    if reply.get("error") == "InitError":
        return InitError(
            reply.get("step") or "init",
            reply.get("detail") or reply.get("msg", ""),
            int(reply.get("errno") or 0),
            reply.get("path"),
        )
    cls = _ERRORS.get(str(reply.get("error")), EngineError)
    err = cls.__new__(cls)
    Exception.__init__(err, reply.get("msg", ""))
    if isinstance(err, ContainerNotFound | ContainerExists):
        err.container_id = container_id
    return err
