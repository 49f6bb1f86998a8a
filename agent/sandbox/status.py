"""The container status machine, written down once.

::

    CREATED ──start──▶ RUNNING ──pause──▶ PAUSED
       │                 │  ▲──resume──────┘ │
       │                 ▼                   │
       └──(init exits)─▶ STOPPED ◀───────────┘

* ``CREATED``: the init exists and waits for StartContainer.
* ``RUNNING``: the workload runs.
* ``PAUSED``: the container's cgroup is frozen. As in Kata, a CREATED container may be paused too
  (it then resumes to RUNNING only if it was started; we keep the status it came from).
* ``STOPPED``: the init exited (or was killed); only RemoveContainer is left to do.

An illegal move raises `FailedPrecondition` naming the container and both statuses.
"""

from __future__ import annotations

import enum

from agent.errors import FailedPrecondition


class ContainerStatus(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


_TRANSITIONS: dict[ContainerStatus, frozenset[ContainerStatus]] = {
    ContainerStatus.CREATED: frozenset(
        {ContainerStatus.RUNNING, ContainerStatus.PAUSED, ContainerStatus.STOPPED}
    ),
    ContainerStatus.RUNNING: frozenset({ContainerStatus.PAUSED, ContainerStatus.STOPPED}),
    ContainerStatus.PAUSED: frozenset(
        {ContainerStatus.RUNNING, ContainerStatus.CREATED, ContainerStatus.STOPPED}
    ),
    ContainerStatus.STOPPED: frozenset(),
}


def can_move(src: ContainerStatus, dst: ContainerStatus) -> bool:
    return dst in _TRANSITIONS[src]


def check_move(container_id: str, src: ContainerStatus, dst: ContainerStatus) -> None:
    """Raise `FailedPrecondition` unless ``src -> dst`` is a legal move."""
    if not can_move(src, dst):
        raise FailedPrecondition(
            f"container {container_id}: cannot move from {src.value} to {dst.value}"
        )
