"""The storage request as the agent sees it: a frozen, protobuf-free copy of `grpc.Storage`."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FsGroupPolicy(enum.Enum):
    """`types.FSGroupChangePolicy`: when to re-own a volume to the pod's fsGroup."""

    ALWAYS = "Always"
    ON_ROOT_MISMATCH = "OnRootMismatch"


@dataclass(frozen=True, slots=True)
class FsGroup:
    group_id: int
    policy: FsGroupPolicy = FsGroupPolicy.ALWAYS


@dataclass(frozen=True, slots=True, kw_only=True)
class Storage:
    """One `grpc.Storage`: `driver` picks the handler, `mount_point` is the ref-count key."""

    driver: str
    mount_point: str
    source: str = ""
    fstype: str = ""
    options: tuple[str, ...] = ()
    driver_options: tuple[str, ...] = ()
    fs_group: FsGroup | None = None
    shared: bool = False

    def describe(self) -> str:
        return f"storage {self.driver} {self.source!r} at {self.mount_point!r}"
