"""The OCI State document (runtime-spec `runtime.md` "State"), as given to hooks on stdin and
printed by `state`.

`Status` holds the four runtime-spec statuses plus runc's `paused` (what `runc state` prints for
a frozen container); callers that emit a strictly conformant document map paused to running.
"""

# spec_field() is this package's dataclass field specifier (a dataclasses.field wrapper).

from __future__ import annotations

import enum
import json
from collections.abc import Mapping

from ._codec import JSON, SpecError, SpecObject, decode, encode, model, spec_field
from .runtime import SPEC_VERSION


class Status(enum.StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"


@model
class State(SpecObject):
    """The OCI state document."""

    oci_version: str = spec_field(SPEC_VERSION, required=True)
    id: str = spec_field("", required=True)
    status: Status = spec_field(Status.CREATING, required=True)
    pid: int | None = spec_field(None)
    bundle: str = spec_field("", required=True)
    annotations: Mapping[str, str] = spec_field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(encode(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> State:
        try:
            raw: JSON = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError.at("", f"state: invalid JSON: {e}") from None
        value, _ = decode(cls, raw)
        return value
