"""The state file: written with json.dumps, read back through _json's C scanner (state.load
must not import json for start/kill/delete); the same values, the same errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from oci.engine import state as st
from oci.engine.errors import ContainerNotFound

REPO = Path(__file__).resolve().parents[3]


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
    for name in st.Record.FIELDS:
        assert getattr(back, name) == getattr(rec, name)
    text = (tmp_path / "c1" / st.STATE).read_text()
    assert st._json_loads(text) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    ['  {"a": [1, 2.5e3, -0.0, "x\\u00e9\\n"]}\n', "[]", '"s"', "17", "null"],
)
def test_loads_matches_json(text: str) -> None:
    assert st._json_loads(text) == json.loads(text)


def test_loads_constants() -> None:
    v = st._json_loads('{"a": NaN, "b": Infinity, "c": -Infinity}')
    assert math.isnan(v["a"])
    assert v["b"] == math.inf
    assert v["c"] == -math.inf


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} trailing', '{"a": tru}', '{"a": "\\x"}'])
def test_bad_text_raises_json_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        st._json_loads(text)
    assert str(got.value) == str(want.value)


def test_missing_container(tmp_path: Path) -> None:
    with pytest.raises(ContainerNotFound):
        st.load(str(tmp_path), "nope")


def test_load_imports_no_json(tmp_path: Path) -> None:
    """What makes start/kill/delete cheap: loading a record imports neither json nor re."""
    (tmp_path / "c1").mkdir()
    st.save(str(tmp_path), _record("c1"))
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
        "from oci.engine import state as st\n"
        f"rec = st.load({str(tmp_path)!r}, 'c1')\n"
        "assert rec.pid == 123, rec.pid\n"
        "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
