"""The state file: written with json.dumps and read back with the same values; a missing one
is ContainerNotFound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oci.engine import state as st
from oci.engine.errors import ContainerNotFound


def _record(cid: str) -> st.Record:
    return st.Record(
        id=cid,
        pid=123,
        pid_start=456,
        bundle="/b/ü",
        rootfs="/b/rootfs",
        created=st.rfc3339_now(),
        config={
            "ociVersion": "1.2.0",
            "process": {"args": ["sh", "-c", 'echo "\\t\u00e9"'], "env": []},
            "annotations": {"k": "v \u2603"},
            "linux": {"resources": {"cpu": {"shares": 1024, "realtimeRuntime": -1}}},
            "f": 1.5,
            "big": 2**70,
            "nothing": None,
            "yes": True,
        },
        cgroup={"path": "/x", "version": 1, "join": ["/sys/fs/cgroup/pids/x/tasks"]},
        namespaces=["pid", "mount"],
    )


def test_round_trip_equals_json(tmp_path: Path) -> None:
    rec = _record("c1")
    (tmp_path / "c1").mkdir()
    st.save(str(tmp_path), rec)
    back = st.load(str(tmp_path), "c1")
    assert back == rec
    text = (tmp_path / "c1" / st.STATE).read_text()
    assert json.loads(text)["config"]["big"] == 2**70


def test_missing_container(tmp_path: Path) -> None:
    with pytest.raises(ContainerNotFound):
        st.load(str(tmp_path), "nope")
