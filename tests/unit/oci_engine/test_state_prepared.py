"""A state record saved with its config encoded beforehand (create) is the same file."""

from __future__ import annotations

import json
from pathlib import Path

from oci.engine import state as st
from oci.spec import default_spec


def _record(config: dict[str, object]) -> st.Record:
    return st.Record(
        id="c-1",
        pid=4242,
        pid_start=99,
        bundle="/b/undle",
        rootfs="/b/undle/rootfs",
        created=st.rfc3339_now(),
        config=config,
        cgroup={"path": "/c-1", "version": 1, "join": ["/sys/fs/cgroup/pids/c-1/tasks"]},
        namespaces=["pid", "mount"],
    )


def test_prepared_config_gives_the_same_text(tmp_path: Path) -> None:
    config = default_spec().to_dict()
    config["annotations"] = {"k": '\0config\0 \u00e9 "q"'}  # the slot's text inside: no clash
    rec = _record(config)
    text = rec.to_json()
    assert rec.to_json(st.config_json(config)) == text
    (tmp_path / "c-1").mkdir()
    st.save(str(tmp_path), rec, config_json=st.config_json(config))
    assert (tmp_path / "c-1" / st.STATE).read_text() == text
    loaded = st.load(str(tmp_path), "c-1")
    assert loaded.config == config
    assert loaded.pid == 4242
    assert json.loads(text)["cgroup"]["join"] == ["/sys/fs/cgroup/pids/c-1/tasks"]
