"""`oci.cgroups.probe_layout` and a manager built from a layout probed once (the spawner)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from oci.cgroups import CgroupMode, V1Manager, V2Manager, manager_for, probe_layout
from oci.engine.facade import Engine


def _v1_root(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir()
        (root / name / "cgroup.procs").touch()


def test_probe_layout_nothing_mounted_is_none(tmp_path: Path) -> None:
    assert probe_layout(tmp_path) is None
    assert probe_layout(tmp_path / "missing") is None


def test_probe_layout_v1_and_v2(tmp_path: Path) -> None:
    _v1_root(tmp_path, "memory", "pids")
    root = tmp_path.resolve()
    assert probe_layout(tmp_path) == (
        CgroupMode.V1,
        {"memory": root / "memory", "pids": root / "pids"},
    )
    (tmp_path / "cgroup.controllers").touch()
    assert probe_layout(tmp_path) == (CgroupMode.V2, {})


def test_manager_for_uses_the_layout_not_a_new_probe(tmp_path: Path) -> None:
    _v1_root(tmp_path, "memory", "pids")
    layout = probe_layout(tmp_path)
    _v1_root(tmp_path, "cpuset")  # mounted after the probe: not seen through the layout
    m = manager_for("/k/c", container_id="c", root=tmp_path, layout=layout)
    assert isinstance(m, V1Manager)
    root = tmp_path.resolve()
    assert m._unique_dirs() == [root / "memory/k/c", root / "pids/k/c"]
    assert m.path == PurePosixPath("/k/c")
    # without a layout the hierarchy is probed again
    fresh = manager_for("/k/c", container_id="c", root=tmp_path)
    assert isinstance(fresh, V1Manager)
    assert root / "cpuset/k/c" in fresh._unique_dirs()
    v2 = manager_for("", container_id="c", root=tmp_path, layout=(CgroupMode.V2, {}))
    assert isinstance(v2, V2Manager)
    assert v2.path == PurePosixPath("/c")
    # an explicit mode wins over the layout
    forced = manager_for("", container_id="c", root=tmp_path, mode=CgroupMode.V1, layout=layout)
    assert isinstance(forced, V1Manager)


def test_engine_builds_its_managers_from_the_given_layout(tmp_path: Path) -> None:
    layout = (CgroupMode.V1, {"memory": tmp_path / "memory"})
    eng = Engine(str(tmp_path / "state"), cgroup_layout=layout)
    m = eng._cgroup("c1", None)
    assert isinstance(m, V1Manager)
    assert m._unique_dirs() == [tmp_path / "memory" / "c1"]
    assert isinstance(
        Engine(str(tmp_path), cgroup_layout=(CgroupMode.V2, {}))._cgroup("c", None), V2Manager
    )
