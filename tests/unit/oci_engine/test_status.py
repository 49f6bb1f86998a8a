"""The lifecycle table (oci.engine.status) and the status the engine derives from a state record,
the exec fifo and the cgroup's freezer file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oci.engine import state as st
from oci.engine import status
from oci.engine.errors import InvalidState
from oci.engine.facade import Engine
from oci.spec import Status

C, R, P, S = Status.CREATED, Status.RUNNING, Status.PAUSED, Status.STOPPED

# verb → (statuses it is legal in, the refusal in each other status), as runc words them
TABLE = {
    "start": ({C}, {R: "cannot start a container that is running",
                    P: "cannot start a container that is paused",
                    S: "cannot start a container that has stopped"}),
    "exec": ({C, R}, {P: "cannot exec in a paused container",
                      S: "cannot exec in a stopped container"}),
    "kill": ({C, R, P}, {S: "container not running"}),
    "pause": ({C, R}, {P: "container not running (status: paused)",
                       S: "container not running (status: stopped)"}),
    "resume": ({P}, {C: "container not paused (status: created)",
                     R: "container not paused (status: running)",
                     S: "container not paused (status: stopped)"}),
    "update": ({C, R, P}, {S: "container not running"}),
    "delete": ({C, S}, {R: "cannot delete container c1 that is not stopped: running",
                        P: "cannot delete container c1 that is not stopped: paused"}),
}  # fmt: skip


@pytest.mark.parametrize("verb", sorted(TABLE))
def test_every_verb_is_legal_exactly_where_written(verb: str) -> None:
    legal, refusals = TABLE[verb]
    assert set(status.ALLOWED) == set(TABLE)
    for current in (C, R, P, S):
        assert status.allowed(verb, current) is (current in legal)
        if current in legal:
            status.require(verb, current, "c1")
        else:
            with pytest.raises(InvalidState) as err:
                status.require(verb, current, "c1")
            assert str(err.value) == refusals[current]


def _record(root: Path, freezer: str) -> st.Record:
    me = os.getpid()
    rec = st.Record(
        id="c1",
        pid=me,
        pid_start=st.proc_start_time(me) or 0,
        bundle="/b",
        rootfs="/b/rootfs",
        created=st.rfc3339_now(),
        config={},
        cgroup={"freezer": freezer},
    )
    (root / "c1").mkdir(parents=True, exist_ok=True)
    return rec


def test_status_is_derived(tmp_path: Path) -> None:
    root = tmp_path / "root"
    freezer = tmp_path / "freezer.state"
    freezer.write_text("THAWED\n")
    eng = Engine(str(root))
    rec = _record(root, str(freezer))
    assert eng.status(rec) is R
    freezer.write_text("FROZEN\n")
    assert eng.status(rec) is P
    os.mkfifo(st.fifo_path(str(root), "c1"))
    assert eng.status(rec) is C  # the fifo is there until start, whatever the cgroup says
    gone = _record(root, str(freezer))
    object.__setattr__(gone, "pid_start", rec.pid_start + 1)  # the pid was reused
    assert eng.status(gone) is S
