"""The container lifecycle: which verb is legal in which ``oci.spec.Status``, written down once
and enforced by ``require`` (youki's ``can_start``/``can_kill``, runc's ``transition``).

The status is never stored: the engine derives it from the state record, the exec fifo and the
cgroup (``Engine.status``). The moves the verbs make::

    (create)  creating ─▶ created ──start──▶ running ──pause──▶ paused
                            │                  ▲                  │
                            │                  └─────resume───────┘
                            └─pause─▶ paused
    created, running, paused ──(the init exits: kill, or the program ends)──▶ stopped
    stopped, created ──delete──▶ (gone)          any ──delete --force──▶ (gone)

``exec`` and ``update`` change no status; ``kill`` only sends a signal.
"""

from __future__ import annotations

from oci.spec import Status

from .errors import InvalidState

_CREATED, _RUNNING, _PAUSED, _STOPPED = (
    Status.CREATED,
    Status.RUNNING,
    Status.PAUSED,
    Status.STOPPED,
)

# verb → (the statuses it is legal in, the refusal; {status} and {id} are filled in)
ALLOWED: dict[str, tuple[frozenset[Status], str]] = {
    "start": (frozenset({_CREATED}), "cannot start a container that is {status}"),
    "exec": (frozenset({_CREATED, _RUNNING}), "cannot exec in a {status} container"),
    "kill": (frozenset({_CREATED, _RUNNING, _PAUSED}), "container not running"),
    "pause": (frozenset({_CREATED, _RUNNING}), "container not running (status: {status})"),
    "resume": (frozenset({_PAUSED}), "container not paused (status: {status})"),
    "update": (frozenset({_CREATED, _RUNNING, _PAUSED}), "container not running"),
    "delete": (
        frozenset({_CREATED, _STOPPED}),
        "cannot delete container {id} that is not stopped: {status}",
    ),
}

# Refusals worded for the status rather than for the verb.
_SPECIAL = {("start", _STOPPED): "cannot start a container that has stopped"}


def allowed(verb: str, status: Status) -> bool:
    return status in ALLOWED[verb][0]


def require(verb: str, status: Status, container_id: str) -> None:
    """Raise InvalidState unless ``verb`` is legal in ``status``."""
    legal, refusal = ALLOWED[verb]
    if status not in legal:
        text = _SPECIAL.get((verb, status), refusal)
        raise InvalidState(text.format(status=status.value, id=container_id))
