"""cgroup v2 manager on this host's real cgroup2 hierarchy (/sys/fs/cgroup/unified).

On this hybrid host every controller except hugetlb is bound to v1, so what v2 can show for
real here is the core: create/remove, cgroup.procs, the v2 freezer, cgroup.kill, cpu.stat, the
kernfs change notification used for freeze waits and OOM events, and clear errors for the
interface files that are missing. Each test's cgroups live below a unique directory that the
test itself uses as the hierarchy root, so the host's root `cgroup.subtree_control` is never
written.
"""

from __future__ import annotations

import os
import select
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from oci.cgroups import (
    CgroupBusy,
    CgroupMode,
    CgroupNotFound,
    CgroupUnsupported,
    V2Manager,
    detect_mode,
    manager_for,
)
from oci.cgroups.oom import FileChangeWatcher
from oci.spec import LinuxMemory, LinuxResources
from tests.root.cgroups.support import UNIFIED, Child, cleanup_tree


@pytest.fixture
def v2root() -> Iterator[Path]:
    if not (UNIFIED / "cgroup.controllers").exists():
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    root = UNIFIED / f"ocispec-test-{uuid.uuid4().hex[:10]}"
    root.mkdir()
    yield root
    cleanup_tree(root)
    assert not root.exists()


def make(root: Path, name: str = "c1") -> V2Manager:
    m = manager_for(f"/pod/{name}", container_id=name, root=root)
    assert isinstance(m, V2Manager)
    m.create()
    return m


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_until(cond: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_probe_picks_v2(v2root: Path) -> None:
    assert detect_mode(v2root) is CgroupMode.V2
    assert isinstance(manager_for("", container_id="x", root=v2root), V2Manager)


def test_create_add_pid_destroy(v2root: Path, children: list[Child]) -> None:
    m = make(v2root)
    assert (v2root / "pod" / "c1").is_dir()
    c = Child("import time; time.sleep(100)")
    children.append(c)
    m.add_pid(c.pid)
    assert m.pids() == [c.pid]
    assert "0::/" in Path(f"/proc/{c.pid}/cgroup").read_text()
    with pytest.raises(CgroupBusy, match="still has processes"):
        m.destroy(timeout=0.2)
    c.kill()
    m.destroy()
    assert not m.exists()


def test_freezer_stops_and_resumes(v2root: Path, children: list[Child]) -> None:
    m = make(v2root)
    c = Child("while True: pass")
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert wait_until(lambda: cpu_ticks(c.pid) > 0)
    m.freeze()
    assert m.freezer_state() == "FROZEN"
    before = cpu_ticks(c.pid)
    time.sleep(0.3)
    assert cpu_ticks(c.pid) == before
    m.thaw()
    assert m.freezer_state() == "THAWED"
    assert wait_until(lambda: cpu_ticks(c.pid) > before)


def test_kill_all_uses_cgroup_kill(v2root: Path, children: list[Child]) -> None:
    m = make(v2root)
    code = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.closerange(0, 3); time.sleep(100); os._exit(0)\n"
        "print('forked', flush=True)\n"
        "time.sleep(100)\n"
    )
    c = Child(code)
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert c.proc.stdout is not None
    assert c.proc.stdout.readline().strip() == "forked"
    assert wait_until(lambda: len(m.pids()) == 4)
    m.kill_all()
    assert m.pids() == []
    assert c.proc.wait(timeout=30) == -signal.SIGKILL


def test_kill_all_with_sigterm_freezes_around(v2root: Path, children: list[Child]) -> None:
    m = make(v2root)
    c = Child("import time; time.sleep(100)")
    children.append(c)
    m.add_pid(c.pid)
    m.kill_all(signal.SIGTERM)
    assert c.proc.wait(timeout=30) == -signal.SIGTERM
    assert m.freezer_state() == "THAWED"


def test_cpu_stats_reflect_usage(v2root: Path, children: list[Child]) -> None:
    m = make(v2root)
    code = (
        "import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('done', flush=True)\n"
        "time.sleep(100)\n"
    )
    c = Child(code)
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert c.proc.stdout is not None
    assert c.proc.stdout.readline().strip() == "done"
    cpu = m.stats().cpu_stats.cpu_usage
    assert cpu.total_usage >= 250_000_000
    assert cpu.usage_in_usermode > 0
    assert cpu.percpu_usage == ()


def test_events_file_change_is_pollable(v2root: Path, children: list[Child]) -> None:
    m = make(v2root)
    w = FileChangeWatcher(m.dir / "cgroup.events")
    try:
        assert "populated 0" in (w.read_text() or "")
        c = Child("import time; time.sleep(100)")
        children.append(c)
        m.add_pid(c.pid)
        ready, _, _ = select.select([w.fileno()], [], [], 30)
        assert ready
        assert "populated 1" in (w.read_text() or "")
        # read cleared the pending change
        assert select.select([w.fileno()], [], [], 0)[0] == []
        c.kill()
        assert select.select([w.fileno()], [], [], 30)[0]
        assert "populated 0" in (w.read_text() or "")
    finally:
        w.close()


def test_missing_controller_files_are_named(v2root: Path) -> None:
    m = make(v2root)
    if (m.dir / "memory.max").exists():
        pytest.skip("memory controller available on v2 here")
    with pytest.raises(CgroupUnsupported, match=r"memory\.max does not exist"):
        m.apply(LinuxResources(memory=LinuxMemory(limit=1 << 24)))
    with pytest.raises(CgroupUnsupported, match=r"memory\.events does not exist"):
        m.oom_watcher()
    with pytest.raises(CgroupNotFound, match=r"unified\.memory\.high: .* does not exist"):
        m.apply(LinuxResources(unified={"memory.high": "1"}))


def test_add_pid_to_missing_cgroup(v2root: Path) -> None:
    m = manager_for("/nope", container_id="x", root=v2root)
    with pytest.raises(CgroupNotFound, match=r"nope/cgroup\.procs: ENOENT"):
        m.add_pid(os.getpid())


def test_failed_create_rolls_back(tmp_path: Path) -> None:
    # a root that is not a cgroup2 mount: mkdir works, reading cgroup.controllers fails
    m = V2Manager(PurePosixPath("/x/y"), root=tmp_path)
    with pytest.raises(CgroupNotFound, match=r"cgroup\.controllers: ENOENT"):
        m.create()
    assert list(tmp_path.iterdir()) == []


def test_v2_oom_watcher_mechanics_on_a_real_kernfs_file(
    v2root: Path, tmp_path: Path, children: list[Child]
) -> None:
    """memory.events is not available on this host's v2 hierarchy; the watcher is pointed at a
    real kernfs events file instead (cgroup.events through a symlink): its fd must become
    readable on change, read() must not block, and removal of the cgroup must set `gone`."""
    from oci.cgroups.oom import V2OomWatcher

    m = make(v2root)
    (tmp_path / "memory.events").symlink_to(m.dir / "cgroup.events")
    w = V2OomWatcher(tmp_path)
    try:
        assert w.read() == 0
        c = Child("import time; time.sleep(100)")
        children.append(c)
        m.add_pid(c.pid)
        assert select.select([w.fileno()], [], [], 30)[0]
        assert w.read() == 0  # a change, but no oom_kill counter increase
        assert not w.gone
        c.kill()
        m.destroy()
        assert select.select([w.fileno()], [], [], 30)[0]
        assert w.read() == 0
        assert w.gone
    finally:
        w.close()
